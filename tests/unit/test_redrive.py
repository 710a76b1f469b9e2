"""`duewatch dlq redrive` decides where each dead-lettered record goes again (SPEC §2), and the
control topic's commands read back as written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.contracts import control
from streams.core import errors
from streams.redrive import MAX_REDRIVES, REDRIVES_HEADER, DeadLetter, plan

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def dead(key: bytes | None, source: str, reason: str = "LOAN_SET_ASIDE", **extra: str) -> DeadLetter:
    headers = [("traceparent", b"00-abc-def-01"), ("reason", reason.encode()), ("detail", b"d"),
               ("source_topic", source.encode()), ("source_partition", b"2"), ("source_offset", b"17")]  # fmt: skip
    headers += [
        (k.replace("_", "-") if k == "duewatch_redrives" else k, v.encode()) for k, v in extra.items()
    ]
    return DeadLetter(key, b"bytes of " + source.encode(), tuple(headers))


def test_input_records_go_back_to_their_topic_with_their_own_headers_and_a_count() -> None:
    chosen = plan([dead(b"L1", "loan.repayments"), dead(None, "clock.ticks", "INTERNAL_ERROR", loan_id="L1")],
                  None, None, NOW)  # fmt: skip
    repayment, tick = chosen.resend
    assert (repayment.topic, repayment.key, repayment.value, repayment.partition) == (
        "loan.repayments",
        b"L1",
        b"bytes of loan.repayments",
        None,
    )
    assert dict(repayment.headers) == {"traceparent": b"00-abc-def-01", REDRIVES_HEADER: b"1"}
    assert (tick.topic, tick.key, tick.partition) == ("clock.ticks", None, 2), (
        "a keyless record to its partition"
    )
    assert not chosen.left


def test_filters_by_reason_and_by_loan_key_or_header() -> None:
    records = [dead(b"L1", "loan.repayments"), dead(b"L2", "loan.repayments"),
               dead(None, "clock.ticks", "INTERNAL_ERROR", loan_id="L1"), dead(b"L1", "loan.schedules", "OUT_OF_RANGE")]  # fmt: skip
    assert [r.topic for r in plan(records, None, "L1", NOW).resend] == [
        "loan.repayments",
        "clock.ticks",
        "loan.schedules",
    ]
    assert [r.key for r in plan(records, "LOAN_SET_ASIDE", None, NOW).resend] == [b"L1", b"L2"]


def test_a_routed_event_goes_to_its_loans_routers_through_the_control_topic() -> None:
    [resend] = plan([dead(b"L1", "overdue.events", "INTERNAL_ERROR", loan_id="L1")], None, None, NOW).resend
    assert (resend.topic, resend.key) == ("duewatch.control", b"L1")
    command = control.decode(resend.value)
    assert command == control.Command(control.REROUTE, "L1", NOW, b"bytes of overdue.events")


def test_three_redrives_are_the_most_and_unknown_sources_stay() -> None:
    again = dead(b"L1", "loan.repayments", duewatch_redrives=str(MAX_REDRIVES - 1))
    done = dead(b"L1", "loan.repayments", duewatch_redrives=str(MAX_REDRIVES))
    chosen = plan([again, done, dead(b"L1", "somebody.elses.topic")], None, None, NOW)
    [resend] = chosen.resend
    assert dict(resend.headers)[REDRIVES_HEADER] == str(MAX_REDRIVES).encode()
    assert chosen.left == {f"redriven {MAX_REDRIVES} times already": 1,
                           "from somebody.elses.topic: not redrivable": 1}  # fmt: skip


def test_control_commands_round_trip_and_bad_ones_are_refused_with_a_reason() -> None:
    for command in (
        control.Command(control.RELEASE, "L1", NOW),
        control.Command(control.REROUTE, "L1", NOW, b"\x00x"),
    ):
        assert control.decode(control.encode(command)) == command
    for value, reason in ((b"not json", errors.UNDECODABLE), (b"[]", errors.UNDECODABLE),
                          (b'{"command": "DELETE", "loan_id": "L1"}', errors.UNKNOWN_ENUM),
                          (b'{"command": "RELEASE", "loan_id": "L\\n1", "requested_at": "2026-01-01T00:00:00Z"}',
                           errors.INVALID_ID),
                          (b'{"command": "REROUTE", "loan_id": "L1", "requested_at": "2026-01-01T00:00:00Z"}',
                           errors.MISSING_FIELD)):  # fmt: skip
        with pytest.raises(errors.InvalidRecord) as refused:
            control.decode(value)
        assert refused.value.reason == reason


def test_release_refuses_an_id_that_cannot_be_a_loan_before_touching_kafka(capsys) -> None:
    from streams.cli import main

    assert main(["release", "L" * 65]) == 1
    assert "64 characters" in capsys.readouterr().err
