"""SPEC §1 in the worker's shells, without a broker: every output record carries the full header
set, and the ``traceparent`` of the record (or tick) it was emitted for, through the hand-overs
to the per-borrower and per-partner stages; ids and values never depend on headers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.contracts import codec
from streams.contracts import topics as names
from streams.contracts.headers import output_headers
from streams.core.config import EngineConfig
from streams.worker.detector import Detector
from streams.worker.effects import Effects, Source
from streams.worker.routers import MARKER_HEADER, LoanRouters, Notifier, PartnerDigests
from streams.worker.tables import NOTIFY_BY_BORROWER, PARTNER_ITEMS
from streams.worker.tracing import Tracing, exporting, trace_of
from streams.worker.wire import Wire
from tests.support.builders import at, payment_dict, schedule_dict
from tests.support.routing import make_policy

NOW = datetime(2026, 11, 29, tzinfo=UTC)
REPAYMENT_TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TICK_TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#: The SPEC §1 headers every output record carries (traceparent when its input had one).
FULL_SET = {"content-type", "duewatch-schema", "duewatch-schema-fingerprint", "ce_specversion", "ce_id",
            "ce_source", "ce_type", "ce_time", "ce_subject"}  # fmt: skip


class Table(dict):
    def write(self, effects: Effects) -> None:
        from streams.core import statecodec

        for (_, loan_id), (state, _) in effects.writes.items():
            self[loan_id] = statecodec.dumps(state)

    def load(self, partition: int, loan_id: str) -> bytes | None:
        return self.get(loan_id)


def _record(topic: str, value: dict[str, Any], offset: int, trace: bytes | None = None) -> Source:
    headers = () if trace is None else (("traceparent", trace), ("x-other", b"1"))
    data = codec.encode(names.TOPIC_RECORD[topic], codec.from_json(names.TOPIC_RECORD[topic], value))
    return Source(topic, 0, offset, value["loan_id"].encode(), data, headers)


def _tick(as_of: datetime, trace: bytes | None) -> Source:
    headers = () if trace is None else (("traceparent", trace),)
    return Source(names.TICKS, 0, 0, None, codec.encode("Tick", {"as_of": as_of}), headers)


def _check(send: Any, trace: bytes | None, app_id: str = "dw-test") -> dict[str, bytes]:
    """The send's headers are exactly SPEC §1's for its value (decoded independently)."""
    value = codec.decode(names.TOPIC_RECORD[send.topic], send.value)
    got = dict(send.headers)
    assert set(got) == FULL_SET | ({"traceparent"} if trace else set()), send.topic
    assert send.headers == output_headers(send.topic, value, app_id, trace)
    return got


def test_the_detector_writes_every_event_with_its_headers_and_its_inputs_trace() -> None:
    table = Table()
    detector = Detector(EngineConfig(), table.load, wire=Wire("dw-test"))
    table.write(detector.handle(_record(names.SCHEDULES, schedule_dict(), 0), NOW))
    opened = detector.on_tick(_tick(at("2026-03-19"), TICK_TRACE), at("2026-03-19"), NOW)
    table.write(opened)
    assert {e.type for e in opened.events} >= {"OVERDUE_OPENED"}
    for send in opened.sends:
        assert _check(send, TICK_TRACE)["traceparent"] == TICK_TRACE  # what a tick emits: the tick's
    cured = detector.handle(_record(names.REPAYMENTS, payment_dict("p1", 100_000, "2026-03-18T10:00"), 1,
                                    REPAYMENT_TRACE), NOW)  # fmt: skip
    assert [e.type for e in cured.events] == ["OVERDUE_CURED"]
    [send] = cured.sends
    headers = _check(send, REPAYMENT_TRACE)
    assert headers["ce_id"] == cured.events[0].event_id.encode() and headers["ce_subject"] == b"L1"
    assert cured.routed[0][1] == send.value  # the routers get the bytes that were sent

    # None is invented per record, and a malformed one is not passed on (W3C Trace Context).
    for trace in (None, b"00-XYZ-not-a-traceparent-01"):
        fresh = Detector(EngineConfig(), Table().load, wire=Wire("dw-test"))
        fresh.handle(_record(names.SCHEDULES, schedule_dict(), 0), NOW)
        for send in fresh.on_tick(_tick(at("2026-03-19"), trace), at("2026-03-19"), NOW).sends:
            _check(send, None)
            assert send.value in {s.value for s in opened.sends}  # same ids and values whatever the headers


def _opened_events() -> list[dict[str, Any]]:
    table = Table()
    detector = Detector(EngineConfig(), table.load)
    table.write(detector.handle(_record(names.SCHEDULES, schedule_dict(partners=["P-RT", "P-DG"]), 0), NOW))
    effects = detector.on_tick(_tick(at("2026-03-19"), None), at("2026-03-19"), NOW)
    return [record for record, _ in effects.routed]


def test_a_repayments_trace_goes_through_every_stage_to_the_notification_and_the_shares() -> None:
    policy, wire = make_policy(), Wire("dw-test")
    load = lambda table, partition, key: None  # noqa: E731 - empty tables
    loans = LoanRouters(policy, load, 1, wire=wire)
    notifier, digests = Notifier(policy, load, wire), PartnerDigests(policy, load, 1, wire)
    events = [(e, codec.encode("OverdueEvent", e)) for e in _opened_events()]
    routed = loans.on_events(0, events, trace=REPAYMENT_TRACE)
    handed = [s for s in routed.sends if s.topic in (NOTIFY_BY_BORROWER, PARTNER_ITEMS)]
    assert {s.topic for s in handed} == {NOTIFY_BY_BORROWER, PARTNER_ITEMS}
    assert all(dict(s.headers)["traceparent"] == REPAYMENT_TRACE for s in handed)  # the hand-overs
    outputs = [s for s in routed.sends if s not in handed]
    assert {s.topic for s in outputs} >= {names.COLLECTIONS, names.NOTIFY}
    for send in outputs:
        _check(send, REPAYMENT_TRACE)
    later: list[Any] = []
    for send in handed:  # the next stages read them from the internal topics, headers included
        source = Source(send.topic, 0, 0, send.key, send.value, tuple(send.headers))
        stage = notifier.on_event(source) if send.topic == NOTIFY_BY_BORROWER else digests.on_record(source)
        later += stage.sends
    assert {s.topic for s in later} == {names.NOTIFY, names.PARTNER}  # the SMS, the realtime share
    for send in later:
        assert _check(send, REPAYMENT_TRACE)["traceparent"] == REPAYMENT_TRACE

    # The digest goes out on a tick: it carries that tick's trace, through the tick markers.
    ticked = loans.on_tick(0, at("2026-03-21"), trace=TICK_TRACE)
    [marker] = [s for s in ticked.sends if s.topic == PARTNER_ITEMS]
    assert dict(marker.headers) == {MARKER_HEADER: b"0", "traceparent": TICK_TRACE}
    [digest] = digests.on_record(Source(PARTNER_ITEMS, 0, 1, None, marker.value, tuple(marker.headers))).sends
    assert codec.decode("PartnerShare", digest.value)["mode"] == "DIGEST"
    _check(digest, TICK_TRACE)


def test_a_dead_lettered_event_keeps_its_own_headers_and_adds_the_dlqs() -> None:
    loans = LoanRouters(make_policy(), lambda table, partition, key: None, 1, wire=Wire("dw-test"))
    event = _opened_events()[0]
    loans.aside.add(0, event["loan_id"], b"mark")
    [send] = loans.on_events(0, [(event, codec.encode("OverdueEvent", event))], trace=REPAYMENT_TRACE).sends
    headers = dict(send.headers)
    assert send.topic == names.DLQ and headers["reason"] == b"LOAN_SET_ASIDE"
    assert headers["ce_id"] == event["event_id"].encode() and headers["traceparent"] == REPAYMENT_TRACE
    assert headers["duewatch-schema"] == b"duewatch.OverdueEvent"


def test_a_tick_starts_a_trace_of_its_own_and_spans_cost_nothing_when_not_exported() -> None:
    tracing = Tracing.from_env("dw-test", {})
    assert tracing.tracer is None and not exporting(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    )
    first, second = tracing.tick_traceparent(), tracing.tick_traceparent()
    assert trace_of([("traceparent", first)]) == first and first[3:35] != second[3:35]
    assert first.endswith(b"-00")  # no span was recorded: not flagged as sampled
    assert tracing.batch("detect", []) is tracing.batch("notify", [])  # one shared no-op
