"""The failover benchmark's plan and its BENCHMARKS.md lines (the run: `make bench`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from streams.dev import chaos
from streams.dev.bench import failover


def result(
    takeovers: list[float], restarts: list[float], outcome: chaos.Outcome | None = None
) -> chaos.Result:
    cfg = failover.config(18)
    happened = [chaos.Happened(chaos.KILL, "w1", 110.0, back=18.0, partitions={0, 1, 2}, restarted=128.0),
                chaos.Happened(chaos.KILL, "w2", 160.0, back=2.0, partitions={3, 4, 5}, restarted=162.0)]  # fmt: skip
    rows = [(10.0, "SIGKILL w1", "taken over"), (60.0, "SIGKILL w2", "restart")]
    figures = chaos.Figures([], rows, takeovers, restarts, [], started=100.0)
    return chaos.Result(cfg, 1, outcome or chaos.Outcome(), figures, happened, 3, Counter(), 200.0,
                        {"late_records": 5}, 5000, Path("/tmp/x"))  # fmt: skip


def test_one_takeover_kill_then_one_restart_kill() -> None:
    cfg = failover.config(1)
    first, second = failover.actions(cfg)
    assert first.kind == second.kind == chaos.KILL
    assert first.back > cfg.session_timeout, "the other worker takes over before the victim returns"
    assert second.back < 5, "started again at once: the same static member, no rebalance"
    assert second.at > first.at + first.back + 10, "the victim is back and settled before the second kill"
    assert second.at + 20 < cfg.play, "the clock still runs while the restart is measured"
    assert cfg.workers == 2


def test_each_figure_judged_against_fifteen_seconds() -> None:
    text = failover.report(result([12.4], [16.0]))
    [takeover] = [line for line in text.splitlines() if line.startswith("| takeover")]
    [restart] = [line for line in text.splitlines() if line.startswith("| restart")]
    assert "12.4 s" in takeover and takeover.endswith("| PASS |")
    assert "16.0 s" in restart and restart.endswith("| **MISS** |")
    assert "from the SIGKILL: 18.0 s" in restart
    assert "equal to replay's" in text


def test_a_figure_not_seen_is_a_miss_and_a_failed_check_says_so() -> None:
    outcome = chaos.Outcome(equal={"overdue.events": (100, 1, 0)})
    text = failover.report(result([], [3.0], outcome))
    [takeover] = [line for line in text.splitlines() if line.startswith("| takeover")]
    assert "not seen" in takeover and takeover.endswith("| **MISS** |")
    assert "**FAILED**" in text
