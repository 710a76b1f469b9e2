"""What-if benchmark (issue 21): `duewatch whatif` on the demo's 10,000-loan book, timed end to end.

``python -m streams.dev.bench whatif`` (``make bench`` runs it too). The demo's book (10,000
loans, 90 days from 2026-03-01, seed 7, with its history) is written as replay input, and
the command a risk analyst would type runs as a subprocess: the baseline under the demo's
policy, the scenario with a collection cap of 1 a day and three days' grace on every loan,
with ``--json`` and ``--html``. The wall time covers everything the analyst waits for:
start-up, reading the file, both replays with the routers, the figures and charts, writing.
Target: both runs in under 60 s on this machine. The risk report of the same book
(``duewatch report --input``, the detector alone) is timed beside it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..book import generate
from ..demo import demo_policy
from ..procs import duewatch_command
from ..simulate import write_replay_input

SECTION = "What-if and risk report (replay, no Kafka): streams.dev.bench.whatif"
TARGET_S = 60.0
LOANS, DAYS, SEED, START = 10_000, 90, 7, date(2026, 3, 1)


@dataclass
class Timed:
    wall: float
    cpu: float  # user + system seconds of the command and its children


@dataclass
class WhatIfResult:
    records: int
    whatif: Timed
    report: Timed
    changed: int
    opened: tuple[int, int]
    dropped: tuple[int, int]
    html_bytes: int
    load: float  # 1-minute load average just before the commands ran


def _run(args: list[str]) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} … failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu)


def run() -> WhatIfResult:
    """Write the book and the policies, time `whatif` and `report`; read back what whatif found."""
    with tempfile.TemporaryDirectory(prefix="duewatch-bench-whatif-") as tmp:
        work = Path(tmp)
        book = work / "book.jsonl"
        records = write_replay_input(generate(LOANS, START, DAYS, SEED), book)
        baseline = demo_policy(work)
        tight = work / "tight.toml"
        text = baseline.read_text(encoding="utf-8")
        tight.write_text(
            re.sub(r"(?m)^collection_cap_per_day = \d+$", "collection_cap_per_day = 1", text), "utf-8"
        )
        load = os.getloadavg()[0]
        whatif = _run([*duewatch_command("whatif"), "--input", str(book), "--baseline-policy", str(baseline),
                       "--policy", str(tight), "--set", "grace_days=3", "--json", str(work / "w.json"),
                       "--html", str(work / "w.html")])  # fmt: skip
        report = _run([*duewatch_command("report"), "--input", str(book), "--out", str(work / "report.html")])
        doc = json.loads((work / "w.json").read_text(encoding="utf-8"))
        return WhatIfResult(
            records=records,
            whatif=whatif,
            report=report,
            changed=doc["changed_loans"]["count"],
            opened=(doc["baseline"]["episodes"]["opened"], doc["scenario"]["episodes"]["opened"]),
            dropped=(
                doc["baseline"]["notifications"]["COLLECTION"]["DROPPED"],
                doc["scenario"]["notifications"]["COLLECTION"]["DROPPED"],
            ),  # fmt: skip
            html_bytes=(work / "w.html").stat().st_size,
            load=load,
        )


def report(r: WhatIfResult) -> str:
    """The BENCHMARKS.md section body."""
    verdict = "PASS" if r.whatif.wall < TARGET_S else "**MISS**"
    return f"""
Book: the demo's {LOANS:,} loans ({START} + {DAYS} days, seed {SEED}, with the history before it):
**{r.records:,} input records**, written as replay input (`duewatch simulate --out`).

| measure | result | target | |
|---|---|---|---|
| `duewatch whatif` (baseline and scenario, routers included, `--json` and `--html`) | {r.whatif.wall:.1f} s ({r.whatif.cpu:.1f} CPU s) | < {TARGET_S:.0f} s | {verdict} |
| `duewatch report --input` (detector, figures, HTML) | {r.report.wall:.1f} s ({r.report.cpu:.1f} CPU s) |  |  |

How it was measured:

- Each command runs as a subprocess, as typed: start-up, reading the file, the replays, the
  figures, writing the outputs; wall time from start to exit, CPU of the process and its children.
  Load average before they started: {r.load:.1f} (other processes on the machine take CPU from the
  second replay process: CPU seconds well above the wall time mean the two ran side by side).
- Baseline: the demo's policy (`deploy/policy.sample.toml` plus its two partners). Scenario: the
  same with `collection_cap_per_day = 1`, and `--set grace_days=3`. The two replays run in two
  processes at once when the machine has two cores or more (books of 20,000 records or more).
- What it found: {r.changed:,} loans whose outcome changed; episodes opened {r.opened[0]:,} → {r.opened[1]:,};
  COLLECTION messages dropped by the cap {r.dropped[0]:,} → {r.dropped[1]:,}. The side-by-side page is
  {r.html_bytes / 1e6:.1f} MB (plotly.js inline).
"""


def main(write_section) -> int:
    """Run, print, and write the BENCHMARKS.md section."""
    result = run()
    body = report(result)
    print(body)
    write_section(SECTION, body)
    return 0
