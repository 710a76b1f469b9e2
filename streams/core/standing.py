"""A loan's standing at any instant (SPEC §7.2): what §3 defines at T, from the records known now.

Auditors, complaint handlers and regulators ask "what was this loan's position at instant T?"
(a past reporting date, the day a complaint says it was wrongly reported). The detector's walk
already knows the answer at every instant it stops at; between them nothing that is reported
changes but the days: DPD counts local days, and each local midnight adds the same penalty
interest. So the standing at T is the walk of the loan's open history from its fold point up to
T (``timeline.walk``, the very code that emits the events), then ``delinquency.position`` at T
and the midnights between the walk's last instant and T.

Consequences, each what an event at T would say:

- at an instant where the loan has an event, the standing's figures are that event's (at an
  instant where an episode ends the first delinquency date is the ending event's, as SPEC §3
  reports it "on the event that ends it");
- once a loan is CLOSED or WRITTEN_OFF it emits nothing more and charges stop: its standing keeps
  that schedule and its charges, and DPD still counts what is past due (payments after the end
  still reduce it), which is SPEC §3's definition;
- before the loan's first ``effective_at`` nothing happens (:class:`NoSchedule`);
- before the loan's fold point (``loan.Sealed``: the stream keeps about two years of a loan's
  history record by record and folds what no record may change any more) the history is no
  longer there to walk (:class:`Folded`); replay, which has every record, answers for any instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .config import EngineConfig
from .dates import is_start_of_day, midnights_between, zone
from .delinquency import plan_for, position
from .events import OVERDUE_CURED, WRITTEN_OFF
from .loan import LoanState
from .records import ACTIVE
from .timeline import walk


class StandingUnknown(ValueError):
    """The standing at that instant cannot be given."""


class NoSchedule(StandingUnknown):
    """No schedule of the loan is in effect at the instant (nothing happens before the first)."""


class Folded(StandingUnknown):
    """The instant is before the loan's fold point: its history there is folded, not kept."""

    def __init__(self, fold_point: datetime) -> None:
        super().__init__(
            f"the loan's history before {fold_point.isoformat()} is folded (duewatch keeps a loan's "
            "open history record by record, about two years); `duewatch standing` on a replay file "
            "answers for any instant"
        )
        self.fold_point = fold_point


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a loan stood at ``as_of``, with OverdueEvent's field names (SPEC §7.2)."""

    loan_id: str
    as_of: datetime
    timezone: str
    dpd: int
    bucket: str
    open: bool
    overdue_installments: int
    overdue_principal: int
    overdue_interest: int
    overdue_fee: int
    total_overdue: int
    penalty_accrued: int
    late_fees: int
    first_delinquency_date: date | None
    oldest_past_due_seq: int | None
    oldest_past_due_date: date | None
    schedule_revision: int
    loan_status: str
    currency: str

    def to_json(self) -> dict[str, Any]:
        """The JSON form of SPEC §1: ``as_of`` ISO-8601 in the loan's time zone, dates
        ``YYYY-MM-DD``, money as integers; ``open`` last, as §7.2 adds it."""
        day = self.first_delinquency_date
        oldest = self.oldest_past_due_date
        return {
            "loan_id": self.loan_id,
            "as_of": self.as_of.astimezone(zone(self.timezone)).isoformat(),
            "dpd": self.dpd,
            "bucket": self.bucket,
            "overdue_installments": self.overdue_installments,
            "overdue_principal": self.overdue_principal,
            "overdue_interest": self.overdue_interest,
            "overdue_fee": self.overdue_fee,
            "total_overdue": self.total_overdue,
            "penalty_accrued": self.penalty_accrued,
            "late_fees": self.late_fees,
            "first_delinquency_date": day.isoformat() if day is not None else None,
            "oldest_past_due_seq": self.oldest_past_due_seq,
            "oldest_past_due_date": oldest.isoformat() if oldest is not None else None,
            "schedule_revision": self.schedule_revision,
            "loan_status": self.loan_status,
            "currency": self.currency,
            "open": self.open,
        }


def standing_at(state: LoanState, at: datetime, cfg: EngineConfig) -> Standing:
    """The standing of the loan ``state`` keeps at instant ``at`` (aware), from every record it holds.

    Raises :class:`NoSchedule` when no schedule is in effect at ``at`` and :class:`Folded` when
    ``at`` is before the loan's fold point. The caller decides whether ``at`` may be asked at all
    (the stream refuses instants its tick clock has not reached: the future is not known yet).
    """
    if state.sealed is not None and at < state.sealed.at:
        raise Folded(state.sealed.at)
    ledger = state.ledger()
    if not state.schedules or ledger.schedule_at(at) is None:
        raise NoSchedule(f"no schedule of the loan is in effect at {at.isoformat()}")
    carry, events = walk(ledger, state.origin, cfg, lambda t, _timed: t <= at, state.retracted_ids())
    cursor = carry.cursor
    assert cursor is not None  # the first effective_at is at or before ``at``: the walk stopped there
    # The walk visits every instant up to ``at`` at which the loan can change; after a terminal
    # instant (CLOSED, WRITTEN_OFF) it stops, and the schedule it ended with stays the loan's.
    schedule = ledger.schedule_at(cursor)
    assert schedule is not None
    plan = plan_for(schedule, cfg.reminder_days, cfg.reminder_time)
    pos = position(schedule, plan, ledger.paid_at(at), at, cfg.buckets)
    penalty = carry.penalty
    if carry.daily_penalty and at > cursor:
        # Nothing changed between the cursor and ``at``: each midnight in (cursor, at] adds the same.
        midnights = midnights_between(cursor, at, plan.tz) + is_start_of_day(at, plan.tz)
        penalty += midnights * carry.daily_penalty
    is_open = not carry.terminal and schedule.status == ACTIVE and pos.dpd > schedule.grace_days
    ending = [e for e in events if e.as_of == at and e.type in (OVERDUE_CURED, WRITTEN_OFF)]
    if ending:
        first_delinquency = ending[-1].first_delinquency_date
    else:
        first_delinquency = carry.first_delinquency_date if is_open else None
    oldest = pos.oldest_index
    return Standing(
        loan_id=state.loan_id,
        as_of=at,
        timezone=schedule.timezone,
        dpd=pos.dpd,
        bucket=pos.bucket,
        open=is_open,
        overdue_installments=pos.overdue_installments,
        overdue_principal=pos.overdue_principal,
        overdue_interest=pos.overdue_interest,
        overdue_fee=pos.overdue_fee,
        total_overdue=pos.total_overdue,
        penalty_accrued=penalty,
        late_fees=carry.late_fees,
        first_delinquency_date=first_delinquency,
        oldest_past_due_seq=schedule.installments[oldest].seq if oldest is not None else None,
        oldest_past_due_date=plan.effective_due[oldest] if oldest is not None else None,
        schedule_revision=schedule.revision,
        loan_status=schedule.status,
        currency=schedule.currency,
    )
