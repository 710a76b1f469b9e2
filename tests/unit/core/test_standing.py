"""A loan's standing at any instant (SPEC §7.2): a hand-checked story, where it cannot be given,
and a property over generated loans — at every instant where replay emits an event the standing
equals that event's figures, and at any instant DPD and penalty are what SPEC §3 defines (an
oracle written here from §3's words, not from the core's walk)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.audit import standing_from_records
from streams.core.config import REPLAY_CONFIG, EngineConfig
from streams.core.dates import cut_off, effective_due_date, local_date, parse_instant, start_of_day, zone
from streams.core.events import DUE_SOON, OVERDUE_CURED, WRITTEN_OFF
from streams.core.loan import apply_repayment, fold
from streams.core.records import ACTIVE, PAYMENT, parse_repayment, parse_schedule
from streams.core.standing import Folded, NoSchedule, Standing, standing_at
from streams.replay import Replay
from tests.support.story import loan_story

CFG = REPLAY_CONFIG


def schedule(**kw: Any) -> dict[str, Any]:
    value = {
        "loan_id": "L1",
        "borrower_id": "B1",
        "revision": 1,
        "effective_at": "2026-03-01T10:00:00+08:00",
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "status": "ACTIVE",
        "installments": [
            {"seq": 1, "due_date": "2026-03-15", "principal": 100_000, "interest": 5_000, "fee": 0}
        ],
        "grace_days": 3,
        "penalty_rate_bps": 3650,
        "late_fee": 500,
        "contact": {"locale": "en", "channels": ["sms"]},
    }
    return {"topic": "loan.schedules", "key": "L1", "value": {**value, **kw}}


def payment(pid: str, amount: int, paid_at: str) -> dict[str, Any]:
    return {
        "topic": "loan.repayments",
        "key": "L1",
        "value": {"payment_id": pid, "loan_id": "L1", "amount": amount, "currency": "CNY",
                  "paid_at": paid_at, "channel": "app", "kind": "PAYMENT"},
    }  # fmt: skip


STORY = [schedule(), payment("p1", 50_000, "2026-03-20T12:00:00+08:00")]


def at(text: str) -> Standing:
    return standing_from_records(STORY, "L1", parse_instant(text))


def test_a_hand_checked_story() -> None:
    """One instalment of 105,000 (100,000 principal, 5,000 interest) due 2026-03-15 in Shanghai,
    grace 3 days, penalty 36.5 % a year (105,000 × 3650 / 10000 / 365 = 105 a day), late fee 500;
    50,000 paid on 03-20 at noon."""
    before = at("2026-03-15T23:59:59+08:00")  # not yet past due: the cut-off is 03-16 00:00
    assert (before.dpd, before.bucket, before.total_overdue, before.penalty_accrued) == (0, "M0", 0, 0)
    assert before.oldest_past_due_seq is None and before.open is False

    cut = at("2026-03-16T00:00:00+08:00")  # the cut-off: DPD 1, the cut-off midnight accrues
    assert (cut.dpd, cut.bucket, cut.open, cut.penalty_accrued, cut.late_fees) == (1, "M1", False, 105, 0)
    assert (cut.oldest_past_due_seq, cut.oldest_past_due_date) == (1, date(2026, 3, 15))

    grace = at("2026-03-18T10:00:00+08:00")  # within grace: DPD 3, in M1 without being open
    assert (grace.dpd, grace.bucket, grace.open) == (3, "M1", False)
    assert grace.penalty_accrued == 3 * 105  # midnights of 03-16, 03-17, 03-18
    assert grace.first_delinquency_date is None and grace.late_fees == 0

    opened = at("2026-03-19T00:00:00+08:00")  # DPD 4 > grace 3: open, the late fee is charged
    assert (opened.dpd, opened.open, opened.penalty_accrued, opened.late_fees) == (4, True, 420, 500)
    assert opened.first_delinquency_date == date(2026, 3, 16)  # D + 1

    quiet = at("2026-03-21T00:00:00+08:00")  # a midnight at which nothing happens still accrues
    assert (quiet.dpd, quiet.penalty_accrued) == (6, 5 * 105 + 55)

    later = at("2026-03-22T08:00:00+08:00")  # 50,000 paid: interest 5,000 first, then principal
    assert (later.dpd, later.open, later.late_fees) == (7, True, 500)
    assert (later.overdue_principal, later.overdue_interest, later.total_overdue) == (55_000, 0, 55_000)
    # midnights 03-16..03-20 on 105,000 (the payment came at noon on 03-20), then 03-21 and 03-22
    # on 55,000: 55,000 × 3650 / 10000 / 365 = 55 a day
    assert later.penalty_accrued == 5 * 105 + 2 * 55
    assert later.to_json() == {
        "loan_id": "L1", "as_of": "2026-03-22T08:00:00+08:00", "dpd": 7, "bucket": "M1",
        "overdue_installments": 1, "overdue_principal": 55_000, "overdue_interest": 0, "overdue_fee": 0,
        "total_overdue": 55_000, "penalty_accrued": 635, "late_fees": 500,
        "first_delinquency_date": "2026-03-16", "oldest_past_due_seq": 1, "oldest_past_due_date": "2026-03-15",
        "schedule_revision": 1, "loan_status": "ACTIVE", "currency": "CNY", "open": True,
    }  # fmt: skip
    with pytest.raises(NoSchedule):  # nothing happens before the first effective_at
        at("2026-03-01T09:59:59+08:00")
    assert at("2026-03-01T10:00:00+08:00").dpd == 0


def test_after_a_write_off_charges_stop_and_dpd_keeps_counting() -> None:
    """Written off on 04-10 at 10:00 (DPD 26, midnights 03-16..04-10 charged): the penalty stays
    26 × 105 from then on; what is past due still ages (SPEC §3's DPD)."""
    story = [schedule(), schedule(revision=2, status="WRITTEN_OFF", effective_at="2026-04-10T10:00:00+08:00")]
    off = standing_from_records(story, "L1", parse_instant("2026-04-10T10:00:00+08:00"))
    assert (off.loan_status, off.open, off.dpd, off.penalty_accrued) == ("WRITTEN_OFF", False, 26, 26 * 105)
    assert off.first_delinquency_date == date(2026, 3, 16)  # reported on the event that ends the episode
    month = standing_from_records(story, "L1", parse_instant("2026-05-10T10:00:00+08:00"))
    assert (month.dpd, month.penalty_accrued, month.late_fees, month.schedule_revision) == (
        56,
        26 * 105,
        500,
        2,
    )
    assert month.first_delinquency_date is None
    recovered = [*story, payment("p9", 105_000, "2026-04-20T09:00:00+08:00")]  # paid after the write-off
    month = standing_from_records(recovered, "L1", parse_instant("2026-05-10T10:00:00+08:00"))
    assert (month.dpd, month.total_overdue, month.penalty_accrued) == (0, 0, 26 * 105)


def test_records_after_the_instant_change_nothing_at_it() -> None:
    """A later payment or revision does not refund past days (SPEC §3)."""
    later = [*STORY, payment("p2", 55_000, "2026-04-01T00:00:00+08:00"), schedule(revision=2,
             effective_at="2026-04-02T00:00:00+08:00", installments=[{"seq": 1, "due_date": "2026-06-15",
             "principal": 100_000, "interest": 5_000, "fee": 0}])]  # fmt: skip
    when = parse_instant("2026-03-22T08:00:00+08:00")
    assert standing_from_records(later, "L1", when) == at("2026-03-22T08:00:00+08:00")
    cured = standing_from_records(later, "L1", parse_instant("2026-04-01T00:00:00+08:00"))
    assert (cured.dpd, cured.open, cured.total_overdue) == (0, False, 0)
    assert cured.first_delinquency_date == date(2026, 3, 16)  # the cure's instant reports it once
    assert (
        standing_from_records(later, "L1", parse_instant("2026-04-01T00:00:01+08:00")).first_delinquency_date
        is None
    )


def test_before_the_fold_point_the_history_is_not_there() -> None:
    """A loan keeps its open history record by record; what no record may change any more is
    folded, and the standing there cannot be walked again."""
    cfg = replace(CFG, late_window=timedelta(days=30), reversal_window=timedelta(days=30))
    replay = Replay(cfg=cfg)
    replay.run(
        [schedule(), payment("p1", 50_000, "2026-03-20T12:00:00+08:00")],
        parse_instant("2026-08-01T00:00:00+08:00"),
    )
    state = replay.loans["L1"]
    p2 = parse_repayment(payment("p2", 1_000, "2026-08-01T00:00:00+08:00")["value"])
    state = fold(apply_repayment(state, p2, parse_instant("2026-08-01T00:00:00+08:00"), cfg).state, cfg)
    assert state.sealed is not None
    with pytest.raises(Folded) as folded:
        standing_at(state, parse_instant("2026-03-22T08:00:00+08:00"), cfg)
    assert folded.value.fold_point == state.sealed.at and "replay file" in str(folded.value)
    # from the fold point on it answers, and as the whole history does
    after = state.sealed.at + timedelta(days=1)
    full = standing_from_records(
        [*STORY, payment("p2", 1_000, "2026-08-01T00:00:00+08:00")], "L1", after, cfg
    )
    assert standing_at(state, after, cfg) == full


# --- the property ---------------------------------------------------------------------------------

FIGURES = ("dpd", "bucket", "overdue_installments", "overdue_principal", "overdue_interest", "overdue_fee",
           "total_overdue", "penalty_accrued", "late_fees", "oldest_past_due_seq", "oldest_past_due_date",
           "schedule_revision", "loan_status", "currency")  # fmt: skip


def _round_half_even(numerator: int, denominator: int) -> int:
    q, r = divmod(numerator, denominator)
    return q + 1 if 2 * r > denominator or (2 * r == denominator and q % 2) else q


class Oracle:
    """SPEC §3 read literally, for one loan's records in event-time order (no walk, no shortcuts)."""

    def __init__(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        self.schedules = [parse_schedule(v) for t, v in records if t == "loan.schedules"]
        self.repayments = [parse_repayment(v) for t, v in records if t == "loan.repayments"]
        self.first = min(s.effective_at for s in self.schedules)
        # The loan ends at the first instant its schedule in effect is not ACTIVE; charges stop there.
        self.end = min((s.effective_at for s in self.schedules if s.status != ACTIVE
                        and self.schedule_at(s.effective_at) is s), default=None)  # fmt: skip

    def schedule_at(self, t: datetime):
        return max((s for s in self.schedules if s.effective_at <= t), key=lambda s: s.revision)

    def paid_at(self, t: datetime) -> int:
        reversed_ids = {r.reverses for r in self.repayments if r.kind != PAYMENT and r.paid_at <= t}
        return sum(
            r.amount
            for r in self.repayments
            if r.kind == PAYMENT and r.paid_at <= t and r.payment_id not in reversed_ids
        )

    def past_due(self, t: datetime) -> list[tuple[date, int]]:
        """(effective due date, outstanding) of each past-due instalment at ``t``."""
        s = self.schedule_at(t if self.end is None or t < self.end else self.end)
        tz, money, out = zone(s.timezone), self.paid_at(t), []
        for inst in s.installments:
            allocated = min(money, inst.amount_due)
            money -= allocated
            due = effective_due_date(inst.due_date, s.business_day_convention, s.calendar)
            if inst.amount_due - allocated > s.tolerance and t >= cut_off(due, tz):
                out.append((due, inst.amount_due - allocated))
        return out

    def dpd(self, t: datetime) -> int:
        tz = zone(self.schedule_at(t).timezone)
        past = self.past_due(t)
        return (local_date(t, tz) - past[0][0]).days if past else 0

    def penalty(self, t: datetime) -> int:
        tz = zone(self.schedules[0].timezone)
        total, day = 0, local_date(self.first, tz)
        while (midnight := start_of_day(day, tz)) <= t:
            if midnight >= self.first and (self.end is None or midnight < self.end):
                rate = self.schedule_at(midnight).penalty_rate_bps
                total += sum(
                    _round_half_even(owed * rate, 10_000 * 365) for _, owed in self.past_due(midnight)
                )
            day += timedelta(days=1)
        return total


def _replayed(story: dict[str, Any], cfg: EngineConfig):
    lines = [{"topic": t, "key": "L", "value": v} for t, v in story["records"]]
    replay = Replay(cfg=cfg)
    outputs = replay.run(lines, story["until"])
    assert not [o for o in outputs if o.topic == "duewatch.dlq"]
    return replay.loans["L"], [o.value for o in outputs if o.topic == "overdue.events"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loan_story(), st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_the_standing_is_the_events_at_their_instants_and_spec_3_between(story, fractions) -> None:
    state, events = _replayed(story, CFG)
    by_instant: dict[datetime, list[dict[str, Any]]] = {}
    for e in events:
        by_instant.setdefault(parse_instant(e["as_of"]), []).append(e)
    for instant, here in by_instant.items():
        standing = standing_at(state, instant, CFG)
        ending = [e for e in here if e["type"] in (OVERDUE_CURED, WRITTEN_OFF)]
        for e in here:
            assert {f: getattr(standing, f) for f in FIGURES} == {f: e[f] for f in FIGURES}, e["type"]
            if e["type"] != DUE_SOON or not ending:
                assert standing.first_delinquency_date == e["first_delinquency_date"], e["type"]
            if e["type"] == DUE_SOON and not ending:
                assert standing.open == (e["first_delinquency_date"] is not None)
        if ending:
            assert standing.open is False
        elif any(e["type"] in ("OVERDUE_OPENED", "BUCKET_CHANGED") for e in here):
            assert standing.open is True
    oracle = Oracle(story["records"])
    start, until = story["start"], story["until"]
    for fraction in fractions:
        t = start + (until - start) * fraction
        if t < oracle.first:
            with pytest.raises(NoSchedule):
                standing_at(state, t, CFG)
            continue
        standing = standing_at(state, t, CFG)
        assert standing.dpd == oracle.dpd(t), t
        assert standing.penalty_accrued == oracle.penalty(t), t
        assert standing.bucket == CFG.buckets.of(standing.dpd)
