"""Prometheus metrics of a duewatch worker.

Labels are small closed sets only — topic names, reason codes, event types, sinks, buckets,
currencies, partitions — never a loan or borrower id (cardinality and privacy). The names
are mirrored in tests/deploy/metric_names.py, which the alert rules and the dashboard are
checked against.
"""

from __future__ import annotations

from collections import Counter as Counts
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ..contracts import topics
from .effects import Effects
from .tables import ASIDE

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 61, 62, 65, 70, 90, 120, 300)

#: A transition emitted more than this many seconds after its as_of is history arriving — a book
#: backfilled through the stream, an upstream system that sends late, a worker catching up after a
#: long stop — not the pipeline's delay: its lag is observed with ``timing="history"``, and the
#: detection-lag alert judges ``timing="live"`` only. A live transition waits the settle delay (60 s)
#: and a tick (1 s); an hour leaves room for any delay the alert is there to catch, and the longer
#: ones are caught by the tick-lag, not-ready and worker-down alerts before they get that long.
LIVE_HORIZON = 3600.0


class Metrics:
    """Every duewatch metric, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.records_consumed = Counter(
            "duewatch_records_consumed", "Input records consumed, by topic.", ["topic"], registry=r
        )
        self.input_misrouted = Counter(
            "duewatch_input_misrouted",
            "Input records that arrived on a partition other than their key's by murmur2 and were forwarded "
            "through the re-key topic (SPEC §1), by topic.",
            ["topic"],
            registry=r,
        )
        self.invalid_records = Counter(
            "duewatch_invalid_records",
            "Records refused by decoding or validation, by reason.",
            ["reason"],
            registry=r,
        )
        self.dlq_records = Counter(
            "duewatch_dlq_records", "Records sent to the DLQ, by source topic.", ["source_topic"], registry=r
        )
        self.overdue_events = Counter(
            "duewatch_overdue_events", "OverdueEvents emitted, by type.", ["type"], registry=r
        )
        self.routed_records = Counter(
            "duewatch_routed_records", "Routed records sent, by sink topic.", ["sink"], registry=r
        )
        self.loans_tracked = Gauge(
            "duewatch_loans_tracked", "Loans in this worker's active partitions.", registry=r
        )
        self.open_delinquencies = Gauge(
            "duewatch_open_delinquencies", "Open delinquency episodes, by bucket.", ["bucket"], registry=r
        )
        self.overdue_amount = Gauge(
            "duewatch_overdue_amount_minor_units",
            "Overdue amount of open episodes in the currency's minor units (cents, fen), by bucket and currency.",
            ["bucket", "currency"], registry=r,
        )  # fmt: skip
        self.tick_lag = Gauge(
            "duewatch_tick_lag_seconds", "Wall clock minus the newest tick's as_of.", registry=r
        )
        self.last_tick = Gauge(
            "duewatch_last_tick_timestamp_seconds", "Unix time of the newest tick's as_of.", registry=r
        )
        self.detection_lag = Histogram(
            "duewatch_detection_lag_seconds",
            "Emission wall time minus the transition's as_of: timing=live when that is at most an hour, "
            "history when more (a backfill, a late upstream, a catch-up: not a live delay).",
            ["timing"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.tick_handling = Histogram(
            "duewatch_tick_handling_seconds", "Time to handle one tick, sends included.", registry=r
        )
        self.consumer_lag = Gauge(
            "duewatch_consumer_lag",
            "End offset minus committed offset, by topic and partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.loans_set_aside = Counter(
            "duewatch_loans_set_aside", "Loans set aside after an unexpected failure (SPEC §2).", registry=r
        )
        self.loans_released = Counter(
            "duewatch_loans_released", "Loans set aside that an operator released.", registry=r
        )
        self.loans_aside = Gauge(
            "duewatch_loans_aside", "Loans set aside now, in this worker's partitions.", registry=r
        )
        self.held_repayments = Gauge(
            "duewatch_held_repayments", "Loans holding repayments that wait for a schedule.", registry=r
        )
        self.ready = Gauge(
            "duewatch_ready",
            "1 when partitions are assigned, table recovery has finished and the broker answers (/ready).",
            registry=r,
        )
        self.recovering = Gauge("duewatch_recovery_in_progress", "1 while table recovery runs.", registry=r)


class BookGauges:
    """Open delinquencies and overdue amounts, kept by adding each loan's change (never a full scan)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.open: Counts = Counts()
        self.amount: Counts = Counts()
        self.held = 0
        self.loans = 0

    def reset(self, contributions: Iterable[tuple[tuple[str, str] | None, int, bool]], loans: int) -> None:
        """Recompute from every loan's (bucket, currency) contribution, amount and held flag."""
        for bucket in list(self.open):
            self.metrics.open_delinquencies.labels(bucket).set(0)
        for bucket, currency in list(self.amount):
            self.metrics.overdue_amount.labels(bucket, currency).set(0)
        self.open.clear()
        self.amount.clear()
        self.held = 0
        for key, amount, held in contributions:
            self.add(key, amount, held, +1)
        self.loans = loans
        self.flush()

    def add(self, key: tuple[str, str] | None, amount: int, held: bool, sign: int) -> None:
        """Add (sign +1) or remove (-1) one loan's contribution."""
        if key is not None:
            self.open[key[0]] += sign
            self.amount[key] += sign * amount
        if held:
            self.held += sign

    def flush(self) -> None:
        """Publish the tallies to the gauges."""
        for bucket, count in self.open.items():
            self.metrics.open_delinquencies.labels(bucket).set(count)
        for (bucket, currency), amount in self.amount.items():
            self.metrics.overdue_amount.labels(bucket, currency).set(amount)
        self.metrics.held_repayments.set(self.held)
        self.metrics.loans_tracked.set(self.loans)


class Tally:
    """Counts what each step of a batch did (called once per step, when it is sent)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._by_type: dict[str, Any] = {}
        self._by_sink: dict[str, Any] = {}
        self._dlq_from: dict[str, Any] = {}
        self._live = metrics.detection_lag.labels("live")
        self._history = metrics.detection_lag.labels("history")

    def __call__(self, effects: Effects) -> None:
        m = self.metrics
        if effects.events:
            wall = datetime.now(UTC)
            for event in effects.events:
                counter = self._by_type.get(event.type)
                if counter is None:
                    counter = self._by_type[event.type] = m.overdue_events.labels(event.type)
                counter.inc()
                if event.retracts is None:
                    lag = (wall - event.as_of).total_seconds()
                    (self._live if lag <= LIVE_HORIZON else self._history).observe(lag)
        for send in effects.sends:
            if send.topic in ROUTED_TOPICS:
                sink = self._by_sink.get(send.topic)
                if sink is None:
                    sink = self._by_sink[send.topic] = m.routed_records.labels(send.topic)
                sink.inc()
            elif send.topic == topics.DLQ:
                origin = dict(send.headers).get("source_topic", b"?").decode()
                counter = self._dlq_from.get(origin)
                if counter is None:
                    counter = self._dlq_from[origin] = m.dlq_records.labels(origin)
                counter.inc()
        for reason in effects.dlq:
            m.invalid_records.labels(reason).inc()
        for (table, _), value in effects.writes.items():
            if table == ASIDE:
                (m.loans_set_aside if value is not None else m.loans_released).inc()


ROUTED_TOPICS = frozenset({topics.NOTIFY, topics.BUREAU, topics.PARTNER, topics.COLLECTIONS})


_METRICS: Metrics | None = None
_FAUST_METRICS: Any = None


def metrics() -> Metrics:
    """The process's metrics (registered once in the default registry)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def add_faust_sensors(app: Any) -> None:
    """Faust's own Prometheus sensor, in the default registry that /metrics serves."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    global _FAUST_METRICS
    if _FAUST_METRICS is None:
        _FAUST_METRICS = FaustMetrics.create(REGISTRY, "faust")
    app.monitor = PrometheusMonitor(metrics=_FAUST_METRICS)
