"""`duewatch report` as a command: what it writes, and how it fails (SPEC §6, §7.4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.cli import main
from streams.dev import broker as devkafka
from tests.support.builders import payment_dict, record, schedule_dict


def small_book(path: Path) -> Path:
    records = [
        record(
            "loan.schedules",
            schedule_dict(
                "L1", [("2026-01-15", 100_000), ("2026-02-15", 100_000)], effective_at="2025-12-15T10:00"
            ),
        ),  # fmt: skip
        record(
            "loan.schedules", schedule_dict("L2", [("2026-01-20", 100_000)], effective_at="2025-12-20T10:00")
        ),
        record("loan.repayments", payment_dict("p1", 100_000, "2026-01-25T10:00", "L2")),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_report_is_one_self_contained_file_the_same_at_every_run(tmp_path: Path, capsys) -> None:
    book = small_book(tmp_path / "book.jsonl")
    for name in ("a.html", "b.html"):
        assert main(["report", "--input", str(book), "--until", "2026-03-10T00:00:00+08:00",
                     "--out", str(tmp_path / name)]) == 0  # fmt: skip
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert page == (tmp_path / "b.html").read_text(encoding="utf-8")
    assert 'data-charts="chart-book chart-rolls chart-cures chart-vintages chart-dpd chart-amounts"' in page
    assert "<script src=" not in page and "<link" not in page  # plotly.js is inline, nothing is fetched
    assert "L1" in page  # the one open exposure: L1 never paid
    assert "2 loans" in capsys.readouterr().err


def test_until_goes_with_input_only(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "report",
                "--from-topic",
                "--until",
                "2026-03-10T00:00:00+08:00",
                "--out",
                str(tmp_path / "r.html"),
            ]
        )
        == 2
    )
    assert "--until goes with --input" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "r.html")]) == 2


def test_an_unreachable_broker_fails_with_one_line(tmp_path: Path) -> None:
    (port,) = devkafka.free_ports(1)
    duewatch = Path(sys.executable).with_name("duewatch")
    run = subprocess.run(
        [str(duewatch), "report", "--from-topic", "--out", str(tmp_path / "r.html"), "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"},
    )  # fmt: skip
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "cannot read from Kafka" in lines[0] and "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    ), run.stderr
    assert not (tmp_path / "r.html").exists()
