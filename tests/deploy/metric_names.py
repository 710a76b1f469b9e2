"""The metrics a duewatch worker exposes at GET /metrics — the one list the deploy files are checked against.

This mirrors streams/worker/metrics.py. The Prometheus alert rules (deploy/prometheus/alerts.yml) and
the Grafana dashboard (deploy/grafana/dashboards/duewatch.json) may only use these names (plus
Prometheus' own ``up``), so renaming a metric in the code without updating the deploy files, or
the other way round, fails a test: tests/deploy/test_prometheus_rules.py compares the deploy files
with this list, and a test on the Python side compares streams/worker/metrics.py with it.

Names are the exposition names: counters with their ``_total`` suffix, histograms by their base
name (``<name>_bucket``, ``<name>_sum`` and ``<name>_count`` are implied by HISTOGRAMS).
"""

from __future__ import annotations

#: Every duewatch metric, by exposition name. Mirrors streams/worker/metrics.py.
METRIC_NAMES: frozenset[str] = frozenset(
    {
        "duewatch_records_consumed_total",
        "duewatch_input_misrouted_total",
        "duewatch_invalid_records_total",
        "duewatch_dlq_records_total",
        "duewatch_overdue_events_total",
        "duewatch_routed_records_total",
        "duewatch_loans_tracked",
        "duewatch_open_delinquencies",
        "duewatch_overdue_amount_minor_units",
        "duewatch_tick_lag_seconds",
        "duewatch_last_tick_timestamp_seconds",
        "duewatch_detection_lag_seconds",
        "duewatch_tick_handling_seconds",
        "duewatch_consumer_lag",
        "duewatch_held_repayments",
        "duewatch_loans_set_aside_total",
        "duewatch_loans_released_total",
        "duewatch_loans_aside",
        "duewatch_ready",
        "duewatch_recovery_in_progress",
    }
)

#: The histograms among METRIC_NAMES.
HISTOGRAMS: frozenset[str] = frozenset({"duewatch_detection_lag_seconds", "duewatch_tick_handling_seconds"})

#: The labels of each metric (histogram buckets also carry ``le``).
METRIC_LABELS: dict[str, frozenset[str]] = {
    "duewatch_records_consumed_total": frozenset({"topic"}),
    "duewatch_input_misrouted_total": frozenset({"topic"}),
    "duewatch_invalid_records_total": frozenset({"reason"}),
    "duewatch_dlq_records_total": frozenset({"source_topic"}),
    "duewatch_overdue_events_total": frozenset({"type"}),
    "duewatch_routed_records_total": frozenset({"sink"}),
    "duewatch_loans_tracked": frozenset(),
    "duewatch_open_delinquencies": frozenset({"bucket"}),
    "duewatch_overdue_amount_minor_units": frozenset({"bucket", "currency"}),
    "duewatch_tick_lag_seconds": frozenset(),
    "duewatch_last_tick_timestamp_seconds": frozenset(),
    "duewatch_detection_lag_seconds": frozenset({"timing"}),
    "duewatch_tick_handling_seconds": frozenset(),
    "duewatch_consumer_lag": frozenset({"topic", "partition"}),
    "duewatch_held_repayments": frozenset(),
    "duewatch_loans_set_aside_total": frozenset(),
    "duewatch_loans_released_total": frozenset(),
    "duewatch_loans_aside": frozenset(),
    "duewatch_ready": frozenset(),
    "duewatch_recovery_in_progress": frozenset(),
}

#: Label values that are a closed set (logical topic names, without DUEWATCH_TOPIC_PREFIX).
LABEL_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("duewatch_records_consumed_total", "topic"): frozenset(
        {"loan.schedules", "loan.repayments", "clock.ticks", "bureau.disputes", "overdue.events"}
    ),
    ("duewatch_input_misrouted_total", "topic"): frozenset(
        {"loan.schedules", "loan.repayments", "bureau.disputes", "duewatch.control"}
    ),
    ("duewatch_overdue_events_total", "type"): frozenset(
        {"OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF", "DUE_SOON", "OVERDUE_RETRACTED"}
    ),
    ("duewatch_routed_records_total", "sink"): frozenset(
        {"notify.requests", "bureau.records", "partner.shares", "collections.tasks"}
    ),
    ("duewatch_detection_lag_seconds", "timing"): frozenset({"live", "history"}),
    ("duewatch_open_delinquencies", "bucket"): frozenset({f"M{i}" for i in range(1, 8)}),
    ("duewatch_overdue_amount_minor_units", "bucket"): frozenset({f"M{i}" for i in range(1, 8)}),
}

#: Metrics that come from Prometheus itself, not from the worker.
PROMETHEUS_METRICS: frozenset[str] = frozenset({"up"})

#: Labels every scraped series carries: the scrape job's target labels (compose: job,
#: instance; Kubernetes, per deploy/k8s/prometheus-scrape.yaml: also namespace and pod).
TARGET_LABELS: frozenset[str] = frozenset({"job", "instance", "namespace", "pod"})


def series_names() -> frozenset[str]:
    """Every series name a query may use: METRIC_NAMES, histogram series, and ``up``."""
    names = set(METRIC_NAMES) | PROMETHEUS_METRICS
    for h in HISTOGRAMS:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return frozenset(names)


def base_name(series: str) -> str:
    """``duewatch_detection_lag_seconds_bucket`` -> ``duewatch_detection_lag_seconds``."""
    for h in HISTOGRAMS:
        if series in (f"{h}_bucket", f"{h}_sum", f"{h}_count"):
            return h
    return series
