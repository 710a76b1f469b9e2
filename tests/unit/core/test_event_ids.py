"""An event's id hashes its content key; the key's form is part of the contract (ids seen by
consumers must not move). ``OverdueEvent.content_key`` builds it as one f-string for speed; this
holds it equal, on the events of random loan stories, to the form it replaced: every field
through ``str`` joined by ``|``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.core.events import OverdueEvent
from streams.core.records import parse_repayment, parse_schedule
from tests.support.story import Stream, loan_story


def joined(e: OverdueEvent) -> str:
    """The content key as it was first written (and as event ids were first computed)."""
    return "|".join(
        str(v)
        for v in (
            e.type, e.loan_id, e.borrower_id, e.as_of.timestamp(), e.dpd, e.bucket, e.previous_bucket,
            e.oldest_past_due_seq, e.oldest_past_due_date, e.first_delinquency_date,
            e.overdue_installments, e.overdue_principal, e.overdue_interest, e.overdue_fee,
            e.total_overdue, e.penalty_accrued, e.late_fees, e.currency, e.schedule_revision,
            e.loan_status, e.timezone, e.contact.locale, ",".join(e.contact.channels),
            ",".join(e.partners), e.due_seq, e.due_date, e.amount_due, e.retracts,
        )
    )  # fmt: skip


class Kept(Stream):
    """A Stream that keeps the event values, not only their records."""

    def __init__(self) -> None:
        super().__init__("L")
        self.values: list[OverdueEvent] = []

    def _take(self, outcome: Any) -> None:
        self.values.extend(outcome.events)
        super()._take(outcome)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loan_story(), st.integers(0, 999_999))
def test_the_content_key_is_every_field_joined_as_before(story: dict[str, Any], micros: int) -> None:
    stream = Kept()
    for topic, value in story["records"]:
        stream.feed(parse_schedule(value) if topic == "loan.schedules" else parse_repayment(value))
    stream.tick(story["until"] + stream.cfg.settle)
    assume(stream.values)  # a loan that emitted nothing checks nothing
    for event in stream.values:
        assert event.content_key() == joined(event)
        # an instant with a fraction of a second: the float's text must match too
        moved = OverdueEvent(**{**_fields(event), "as_of": event.as_of + timedelta(microseconds=micros)})
        assert moved.content_key() == joined(moved)
        retraction = event.retraction(datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 1).date())
        assert retraction.content_key() == joined(retraction)


def _fields(event: OverdueEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in OverdueEvent.__dataclass_fields__}
