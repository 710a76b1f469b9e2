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
    assert value("duewatch_overdue_amount", {"bucket": "M2", "currency": "CNY"}) == 700
    assert value("duewatch_held_repayments") == 1
    gauges.reset([(("M3", "USD"), 9, False)], loans=4)
    assert value("duewatch_open_delinquencies", {"bucket": "M2"}) == 0
    assert value("duewatch_overdue_amount", {"bucket": "M3", "currency": "USD"}) == 9
    assert value("duewatch_loans_tracked") == 4
