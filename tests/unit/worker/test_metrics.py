"""streams/worker/metrics.py exposes exactly the metrics the alert rules and dashboard are checked against."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from streams.worker.metrics import BookGauges, Metrics
from tests.deploy.metric_names import HISTOGRAMS, METRIC_LABELS, METRIC_NAMES


def _exposed(metrics: Metrics) -> dict[str, tuple[str, frozenset[str]]]:
    out = {}
    for collector in vars(metrics).values():
        name = collector._name + ("_total" if isinstance(collector, Counter) else "")
        kind = "histogram" if isinstance(collector, Histogram) else "other"
        out[name] = (kind, frozenset(collector._labelnames))
    return out


def test_code_and_deploy_files_name_the_same_metrics_and_labels() -> None:
    exposed = _exposed(Metrics(CollectorRegistry()))
    assert set(exposed) == METRIC_NAMES
    assert {n for n, (kind, _) in exposed.items() if kind == "histogram"} == HISTOGRAMS
    assert {n: labels for n, (_, labels) in exposed.items()} == METRIC_LABELS


def test_book_gauges_follow_deltas_and_reset() -> None:
    registry = CollectorRegistry()
    gauges = BookGauges(Metrics(registry))
    gauges.add(("M1", "CNY"), 500, False, +1)
    gauges.add(("M2", "CNY"), 700, True, +1)
    gauges.add(("M1", "CNY"), 500, False, -1)
    gauges.flush()
    value = registry.get_sample_value
    assert value("duewatch_open_delinquencies", {"bucket": "M1"}) == 0
    assert value("duewatch_overdue_amount_minor_units", {"bucket": "M2", "currency": "CNY"}) == 700
    assert value("duewatch_held_repayments") == 1
    gauges.reset([(("M3", "USD"), 9, False)], loans=4)
    assert value("duewatch_open_delinquencies", {"bucket": "M2"}) == 0
    assert value("duewatch_overdue_amount_minor_units", {"bucket": "M3", "currency": "USD"}) == 9
    assert value("duewatch_loans_tracked") == 4


def test_detection_lag_is_live_within_the_horizon_and_history_beyond() -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from streams.worker.effects import Effects
    from streams.worker.metrics import LIVE_HORIZON, Tally

    registry = CollectorRegistry()
    tally = Tally(Metrics(registry))
    now = datetime.now(UTC)

    def event(ago: float, retracts: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(type="OVERDUE_OPENED", as_of=now - timedelta(seconds=ago), retracts=retracts)

    live = [event(61), event(0.5), event(LIVE_HORIZON - 60)]
    history = [event(LIVE_HORIZON + 60), event(200 * 86_400)]  # a backfill of last year's book
    tally(Effects(events=[*live, *history, event(90, retracts="e1")]))  # type: ignore[list-item]

    def count(timing: str) -> float | None:
        return registry.get_sample_value("duewatch_detection_lag_seconds_count", {"timing": timing})

    assert (count("live"), count("history")) == (3, 2)  # a retraction is not a detection
    assert (
        registry.get_sample_value("duewatch_detection_lag_seconds_bucket", {"timing": "live", "le": "62.0"})
        == 2
    )
