"""Bad input is refused with a reason from the closed set (SPEC §2): it goes to the DLQ, not into state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import errors
from streams.core.records import parse_dispute, parse_repayment, parse_schedule, parse_tick
from tests.support.builders import at, payment, payment_dict, schedule, schedule_dict
from tests.support.story import Stream


def reason(parse, value) -> str:
    with pytest.raises(errors.InvalidRecord) as err:
        parse(value)
    return err.value.reason


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": 0}, "NON_POSITIVE_AMOUNT"),
        ({"amount": -5}, "NON_POSITIVE_AMOUNT"),
        ({"amount": "100"}, "INVALID_FIELD"),
        ({"amount": 1.5}, "INVALID_FIELD"),
        ({"currency": "XYZ"}, "UNKNOWN_CURRENCY"),
        ({"kind": "REFUND"}, "UNKNOWN_ENUM"),
        ({"paid_at": "2026-03-15T10:00:00"}, "INVALID_FIELD"),  # no offset: ambiguous
        ({"paid_at": "yesterday"}, "INVALID_FIELD"),
        ({"payment_id": None}, "MISSING_FIELD"),
        ({"kind": "REVERSAL", "reverses": None}, "MISSING_FIELD"),
    ],
)
def test_repayment_field_rules(change: dict, expected: str) -> None:
    value = payment_dict("p1", 100, "2026-03-15T10:00")
    value.update(change)
    assert reason(parse_repayment, value) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timezone": "Mars/Olympus"}, "INVALID_TIMEZONE"),
        ({"status": "PAUSED"}, "UNKNOWN_ENUM"),
        ({"business_day_convention": "MODIFIED"}, "UNKNOWN_ENUM"),
        ({"currency": "RMB"}, "UNKNOWN_CURRENCY"),
        ({"revision": 0}, "INVALID_FIELD"),
        ({"installments": []}, "INVALID_FIELD"),
        ({"grace_days": -1}, "NEGATIVE_AMOUNT"),
        ({"contact": {"locale": "fr", "channels": ["push"]}}, "UNKNOWN_ENUM"),
        ({"contact": {"locale": "en", "channels": ["fax"]}}, "UNKNOWN_ENUM"),
        ({"effective_at": None}, "MISSING_FIELD"),
        ({"contact": None}, "MISSING_FIELD"),
    ],
)
def test_schedule_field_rules(change: dict, expected: str) -> None:
    value = schedule_dict()
    value.update(change)
    assert reason(parse_schedule, value) == expected


def test_schedule_due_dates_must_strictly_increase() -> None:
    value = schedule_dict(dues=[("2026-03-15", 1), ("2026-03-15", 1)])
    assert reason(parse_schedule, value) == "SCHEDULE_ORDER"
    value = schedule_dict(dues=[("2026-03-15", 1), ("2026-04-15", 1)])
    value["installments"][1]["seq"] = 1
    assert reason(parse_schedule, value) == "SCHEDULE_ORDER"


def test_negative_instalment_amount() -> None:
    value = schedule_dict()
    value["installments"][0]["principal"] = -1
    assert reason(parse_schedule, value) == "NEGATIVE_AMOUNT"


def test_tick_and_dispute() -> None:
    assert parse_tick({"as_of": "2026-03-15T10:00:00+08:00"}).as_of == at("2026-03-15T10:00")
    assert reason(parse_tick, {"as_of": "2026-03-15"}) == "INVALID_FIELD"
    assert (
        reason(
            parse_dispute,
            {"dispute_id": "d", "loan_id": "L", "status": "MAYBE", "at": "2026-03-15T10:00:00Z"},
        )
        == "UNKNOWN_ENUM"
    )


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([payment("r1", 100_000, "2026-03-20", kind="REVERSAL", reverses="nope")], ["UNKNOWN_PAYMENT"]),
        (
            [
                payment("p1", 100_000, "2026-03-10"),
                payment("r1", 100_000, "2026-03-09", kind="REVERSAL", reverses="p1"),
            ],
            ["REVERSAL_BEFORE_PAYMENT"],
        ),
        (
            [
                payment("p1", 100_000, "2026-03-10"),
                payment("r1", 99_000, "2026-03-11", kind="REVERSAL", reverses="p1"),
            ],
            ["REVERSAL_AMOUNT_MISMATCH"],
        ),
        (
            [
                payment("p1", 100_000, "2026-03-10"),
                payment("r1", 100_000, "2026-03-11", kind="REVERSAL", reverses="p1"),
                payment("r2", 100_000, "2026-03-12", kind="REVERSAL", reverses="p1"),
            ],
            ["ALREADY_REVERSED"],
        ),
        (
            [payment("p1", 100_000, "2026-03-10"), payment("p1", 90_000, "2026-03-10")],
            ["CONFLICTING_DUPLICATE"],
        ),
        (
            [payment("p1", 100_000, "2026-03-10"), payment("p1", 100_000, "2026-03-10")],
            [],
        ),  # a true duplicate
        ([payment("p1", 100, "2026-03-10", currency="USD")], ["CURRENCY_MISMATCH"]),
        ([schedule(revision=1, dues=[("2026-04-15", 1)])], ["CONFLICTING_DUPLICATE"]),
        ([schedule(revision=2, currency="USD")], ["CURRENCY_CHANGED"]),
        ([payment("p1", 1, "2026-03-10", loan_id="L2")], ["KEY_MISMATCH"]),
    ],
)
def test_loan_level_rules(records: list, expected: list[str]) -> None:
    stream = Stream().run([schedule(), *records])
    assert stream.refused == expected


def test_refused_records_leave_the_state_unchanged() -> None:
    stream = Stream().run([schedule(), payment("p1", 100_000, "2026-03-10")])
    before = stream.state
    stream.feed(payment("r1", 5, "2026-03-20", kind="REVERSAL", reverses="p1"))
    assert stream.state == before


def test_duplicate_schedule_and_payment_change_nothing() -> None:
    a = Stream().run([schedule(), payment("p1", 50_000, "2026-03-20"), at("2026-05-01")])
    b = Stream().run(
        [
            schedule(),
            schedule(),
            payment("p1", 50_000, "2026-03-20"),
            at("2026-04-01"),
            payment("p1", 50_000, "2026-03-20"),
            at("2026-05-01"),
        ]
    )
    assert a.events == b.events and a.refused == b.refused == []


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"seq": True},
        {"seq": 1.0},
        {"principal": -1},
        {"interest": -1},
        {"fee": -1},
        {"fee": None},
        {"due_date": "2026-03-15"},
        {"due_date": "2026/03/15"},
        {"due_date": at("2026-03-15T00:00")},
        {"principal": "100"},
    ],
)
def test_native_instalments_are_judged_as_field_by_field(change: dict) -> None:
    """Avro gives instalments as dicts of exact ints and dates, which take a one-expression check;
    whatever it accepts or refuses, the field-by-field path (any other mapping) does the same."""
    from datetime import date
    from types import MappingProxyType

    value = schedule_dict()
    native = {"seq": 1, "due_date": date(2026, 3, 15), "principal": 100, "interest": 5, "fee": 0, **change}
    outcomes = []
    for raw in (native, MappingProxyType(native)):
        value["installments"] = [raw]
        try:
            outcomes.append(parse_schedule(value).installments)
        except errors.InvalidRecord as exc:
            outcomes.append((exc.reason, exc.detail))
    assert outcomes[0] == outcomes[1]


_TEXT = st.one_of(
    st.sampled_from(["p1", "L-1", "x" * 64, "x" * 65, "", "caf\u00e9", "a\x00b", "a\x85b", " ", "a b"]),
    st.text(max_size=70),
)
_ANY_FIELD = {
    "payment_id": st.one_of(_TEXT, st.none(), st.integers()),
    "loan_id": st.one_of(_TEXT, st.none()),
    "amount": st.one_of(
        st.sampled_from([0, 1, -1, 10**15, 10**15 + 1, True, 1.0, "5"]), st.integers(-(10**16), 10**16)
    ),
    "currency": st.sampled_from(["CNY", "USD", "XYZ", "cny", "CN", "", None, 156]),
    "paid_at": st.one_of(
        st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
        st.datetimes(),
        st.sampled_from(
            [
                "2026-03-15T10:00:00+00:00",
                None,
                datetime(2200, 1, 1, tzinfo=UTC),
                datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(1900, 1, 1, tzinfo=UTC),
                datetime(1899, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            ]
        ),
    ),
    "channel": st.one_of(_TEXT, st.none()),
    "kind": st.sampled_from(["PAYMENT", "REVERSAL", "REFUND", None]),
    "reverses": st.one_of(_TEXT, st.none()),
}


@st.composite
def _native_repayment(draw) -> dict:
    """A repayment as Avro decodes it, valid or with one to three fields changed to anything."""
    value = {
        "payment_id": "p1", "loan_id": "L1", "amount": draw(st.integers(1, 10**15)), "currency": "CNY",
        "paid_at": datetime(2026, 3, 15, 10, tzinfo=UTC), "channel": "app", "kind": "PAYMENT", "reverses": None,
    }  # fmt: skip
    if draw(st.booleans()):
        value.update(kind="REVERSAL", reverses="p0")
    for name in draw(st.lists(st.sampled_from(sorted(_ANY_FIELD)), max_size=3, unique=True)):
        value[name] = draw(_ANY_FIELD[name])
    return value


@settings(max_examples=1500, deadline=None)
@given(_native_repayment(), st.sets(st.sampled_from(["channel", "reverses", "currency"])))
def test_native_repayments_are_judged_as_field_by_field(value: dict, dropped: set) -> None:
    """Avro gives a repayment as a dict of exact types, which takes a one-expression check;
    whatever it accepts or refuses, the field-by-field path (any other mapping) does the same."""
    from types import MappingProxyType

    for name in dropped:
        del value[name]
    outcomes = []
    for raw in (value, MappingProxyType(value)):
        try:
            outcomes.append(parse_repayment(raw))
        except errors.InvalidRecord as exc:
            outcomes.append((exc.reason, exc.detail))
    assert outcomes[0] == outcomes[1]
