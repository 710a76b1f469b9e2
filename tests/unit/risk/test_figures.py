"""The risk report's figures (SPEC §7.4) on a small book whose every number is worked out by hand.

Seven loans, Asia/Shanghai, the report as of 2026-04-10 00:00 (month-ends 2025-12-31 …
2026-03-31 are complete):

- A  disbursed 2026-01-10, never overdue.
- B  disbursed 2026-01-05; opens M1 on 02-06 (oldest due 02-05), M2 on 03-08 (DPD 31), M3 on 04-07;
     a DUE_SOON on 04-08 is its latest event (215,000 overdue).
- C  disbursed 2026-01-20 (one instalment: a month before it); M1 on 02-21, cured on 03-05;
     an event after the report's instant does not count.
- D  disbursed 2025-12-15; M1 on 01-16, M2 on 02-15 (DPD 31), written off on 03-20.
- E  first due dates two weeks apart (disbursed 2026-01-19); a CLOSED revision from 03-15.
- F  disbursed 2026-02-10; an opening that was retracted.
- G  USD, disbursed 2026-02-20 (one instalment); M1 on 03-21 (oldest due 03-20), 50,000 overdue.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from streams.core.records import parse_schedule
from streams.risk.figures import Exposure, Vintage, add_months, compute, disbursement_date, month_end
from streams.risk.retractions import standing
from tests.support.builders import at, schedule, schedule_dict

AS_OF = at("2026-04-10")
_ids = iter(range(1, 10_000))


def ev(kind: str, loan: str, when: str, bucket: str = "M0", dpd: int = 0, oldest: str | None = None,
       total: int = 0, currency: str = "CNY", fdd: str | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """An OverdueEvent in JSON form with the fields the figures read."""
    instant = at(when)
    return {
        "event_id": f"e{next(_ids)}", "type": kind, "loan_id": loan, "as_of": instant.isoformat(),
        "as_of_date": instant.date().isoformat(), "dpd": dpd, "bucket": bucket, "oldest_past_due_date": oldest,
        "total_overdue": total, "currency": currency, "timezone": "Asia/Shanghai", "first_delinquency_date": fdd,
        **extra,
    }  # fmt: skip


def book() -> tuple[list[dict[str, Any]], list]:
    schedules = [
        schedule("A", [("2026-02-10", 100_000), ("2026-03-10", 100_000)], effective_at="2026-01-10T10:00"),
        schedule("B", [("2026-02-05", 100_000), ("2026-03-05", 100_000)], effective_at="2026-01-05T10:00"),
        schedule("C", [("2026-02-20", 100_000)], effective_at="2026-01-20T10:00"),
        schedule("D", [("2026-01-15", 100_000), ("2026-02-15", 100_000)], effective_at="2025-12-15T10:00"),
        schedule("E", [("2026-02-02", 50_000), ("2026-02-16", 50_000)], effective_at="2026-01-02T10:00"),
        schedule(
            "E",
            [("2026-02-02", 50_000), ("2026-02-16", 50_000)],
            effective_at="2026-03-15T10:00",
            revision=2,
            status="CLOSED",
        ),  # fmt: skip
        schedule("F", [("2026-03-10", 100_000), ("2026-04-10", 100_000)], effective_at="2026-02-10T10:00"),
        schedule("G", [("2026-03-20", 50_000)], effective_at="2026-03-01T10:00", currency="USD"),
    ]
    retracted = ev("OVERDUE_OPENED", "F", "2026-03-01", "M1", 1, "2026-02-28", 100_000)
    events = [
        ev("OVERDUE_OPENED", "D", "2026-01-16", "M1", 1, "2026-01-15", 100_000, fdd="2026-01-16"),
        ev("OVERDUE_OPENED", "B", "2026-02-06", "M1", 1, "2026-02-05", 100_000, fdd="2026-02-06"),
        ev("BUCKET_CHANGED", "D", "2026-02-15", "M2", 31, "2026-01-15", 100_000, fdd="2026-01-16"),
        ev("OVERDUE_OPENED", "C", "2026-02-21", "M1", 1, "2026-02-20", 100_000, fdd="2026-02-21"),
        retracted,
        ev("OVERDUE_RETRACTED", "F", "2026-03-02T10:00", retracts=retracted["event_id"]),
        ev("OVERDUE_CURED", "C", "2026-03-05T12:00", "M0", 0, None, 0, fdd="2026-02-21"),
        ev("BUCKET_CHANGED", "B", "2026-03-08", "M2", 31, "2026-02-05", 200_000, fdd="2026-02-06"),
        ev("WRITTEN_OFF", "D", "2026-03-20T10:00", "M3", 64, "2026-01-15", 200_000, fdd="2026-01-16"),
        ev(
            "OVERDUE_OPENED",
            "G",
            "2026-03-21",
            "M1",
            1,
            "2026-03-20",
            50_000,
            currency="USD",
            fdd="2026-03-21",
        ),
        ev("BUCKET_CHANGED", "B", "2026-04-07", "M3", 61, "2026-02-05", 210_000, fdd="2026-02-06"),
        ev("DUE_SOON", "B", "2026-04-08T09:00", "M3", 62, "2026-02-05", 215_000, fdd="2026-02-06"),
        ev("OVERDUE_OPENED", "C", "2026-04-11", "M1", 1, "2026-04-10", 100_000),  # after the report's instant
    ]
    return events, schedules


def figures():
    events, schedules = book()
    return compute(standing(events), schedules, AS_OF)


def test_the_book_by_bucket_counts_loans_that_never_went_overdue_as_current() -> None:
    f = figures()
    assert f.timezone == "Asia/Shanghai" and f.loans == 7
    assert f.days[0] == date(2025, 12, 15) and f.days[-1] == date(2026, 4, 10) and len(f.days) == 117

    def on(day: str) -> dict[str, int]:
        i = f.days.index(date.fromisoformat(day))
        return {state: f.book[state][i] for state in f.states if f.book[state][i]}

    assert on("2025-12-15") == {"M0": 1}  # D alone
    # 02-06: A, C, E current; B opened at midnight; D still M1 (M2 from 02-15); F enters on 02-10.
    assert on("2026-02-06") == {"M0": 3, "M1": 2}
    assert on("2026-02-15") == {"M0": 4, "M1": 1, "M2": 1}
    # The retracted opening of F never shows; E left the book when its CLOSED revision took effect.
    assert on("2026-03-01") == {"M0": 4, "M1": 2, "M2": 1}
    assert on("2026-03-14") == {"M0": 5, "M2": 2}  # C cured on 03-05, B in M2 since 03-08
    assert on("2026-03-15") == {"M0": 4, "M2": 2}  # E closed that morning
    assert on("2026-03-20") == {"M0": 4, "M2": 1, "WRITTEN_OFF": 1}
    # The last point is the book at AS_OF: C cured (its later opening is ignored), B in M3, G in M1.
    assert on("2026-04-10") == {"M0": 3, "M1": 1, "M3": 1, "WRITTEN_OFF": 1}


def test_roll_rates_and_cure_rates_compare_each_loan_at_consecutive_month_ends() -> None:
    f = figures()
    assert f.month_ends == (date(2025, 12, 31), date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31))
    assert f.roll_columns == ("M0", "M1", "M2", "M3", "M4", "M5", "M6", "M7", "WRITTEN_OFF", "CLOSED")

    def row(bucket: str) -> dict[str, int]:
        return {col: n for col, n in zip(f.roll_columns, f.roll_row(bucket), strict=True) if n}

    # M0 at a month-end: D (Dec→Jan: M1), A, C, E, B (Jan→Feb: A, E stay; B, C to M1), A, F (Feb→Mar), E closes.
    assert row("M0") == {"M0": 4, "M1": 3, "CLOSED": 1}
    assert row("M1") == {"M2": 2, "M0": 1}  # D and B roll, C cures
    assert row("M2") == {"WRITTEN_OFF": 1}  # D
    assert row("M3") == {}  # G and B reach M1/M3 only after the last complete month-end
    assert f.roll_rate("M0") == 3 / 8
    assert f.roll_rate("M1") == 2 / 3
    assert f.roll_rate("M2") == 0.0
    assert f.roll_rate("M3") is None and f.roll_rate("M7") is None
    assert f.cure_rate("M1") == 1 / 3
    assert f.cure_rate("M2") == 0.0
    assert f.roll_shares()[1] == [1 / 3, 0, 2 / 3, 0, 0, 0, 0, 0, 0, 0]


def test_vintage_curves_by_disbursement_month_and_months_on_book() -> None:
    f = figures()
    # D: ever 30+ from 02-15 (DPD 31): month-ends Dec, Jan, Feb, Mar after its December disbursement.
    # January: A, B, C, E — B is 30+ from 03-08. February: F and G, neither.
    assert f.vintages == (
        Vintage("2025-12", 1, (0, 0, 1, 1)),
        Vintage("2026-01", 4, (0, 0, 1)),
        Vintage("2026-02", 2, (0, 0)),
    )
    assert f.vintages[1].shares() == [0.0, 0.0, 0.25]


def test_open_episodes_today_their_dpd_amounts_by_currency_and_the_largest() -> None:
    f = figures()
    # B: oldest due 02-05, so DPD 64 on 04-10, and its latest event (the DUE_SOON) says 215,000.
    assert f.open_dpd == {21: 1, 64: 1}
    assert f.open_loans == 2
    assert f.overdue_by_currency == {"CNY": {"M3": 215_000}, "USD": {"M1": 50_000}}
    assert f.top_exposures == (
        Exposure("B", "M3", 64, 215_000, "CNY"),
        Exposure("G", "M1", 21, 50_000, "USD"),
    )


def test_events_in_native_form_give_the_same_figures() -> None:
    from streams.core.dates import parse_date, parse_instant

    events, schedules = book()
    native = [{**e, "as_of": parse_instant(e["as_of"]), "as_of_date": parse_date(e["as_of_date"]),
               "oldest_past_due_date": parse_date(e["oldest_past_due_date"]) if e["oldest_past_due_date"] else None}
              for e in events]  # fmt: skip
    assert compute(standing(native), schedules, AS_OF) == compute(standing(events), schedules, AS_OF)


def test_an_empty_book_has_empty_figures() -> None:
    f = compute([], [], AS_OF)
    assert f.loans == 0 and f.days == () and f.vintages == () and f.open_loans == 0 and f.timezone == "UTC"


def test_disbursement_is_the_first_due_date_minus_one_period() -> None:
    monthly = parse_schedule(schedule_dict("L", [("2026-03-31", 1), ("2026-04-30", 1)]))
    assert disbursement_date(monthly) == date(2026, 2, 28)  # a month back, clamped to February's end
    fortnightly = parse_schedule(schedule_dict("L", [("2026-03-15", 1), ("2026-03-29", 1)]))
    assert disbursement_date(fortnightly) == date(2026, 3, 1)
    single = parse_schedule(schedule_dict("L", [("2026-01-31", 1)]))
    assert disbursement_date(single) == date(2025, 12, 31)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29) and month_end(date(2026, 2, 3)) == date(
        2026, 2, 28
    )
