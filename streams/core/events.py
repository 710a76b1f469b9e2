"""OverdueEvent (SPEC §4): one transition of one loan, with a deterministic id.

The id is a hash of every deterministic field, so the same inputs always give the same
id and a consumer can dedupe repeats after a crash. An event that was retracted and later
holds again (a late record undone by a later one) must not reuse the retracted id, or a
consumer that already dropped that id would drop the new one too: the id then carries an
incarnation number, the count of earlier retractions of the same content. In an
event-time-ordered run (replay) nothing is ever retracted and that number is always 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from .compiled import picklable
from .dates import zone
from .records import Contact

OVERDUE_OPENED = "OVERDUE_OPENED"
BUCKET_CHANGED = "BUCKET_CHANGED"
OVERDUE_CURED = "OVERDUE_CURED"
WRITTEN_OFF = "WRITTEN_OFF"
DUE_SOON = "DUE_SOON"
OVERDUE_RETRACTED = "OVERDUE_RETRACTED"
EVENT_TYPES = (OVERDUE_OPENED, BUCKET_CHANGED, OVERDUE_CURED, WRITTEN_OFF, DUE_SOON, OVERDUE_RETRACTED)


@dataclass(frozen=True, slots=True)
class OverdueEvent:
    """A transition at ``as_of`` (UTC); ``to_dict`` gives the record of SPEC §4."""

    type: str
    loan_id: str
    borrower_id: str
    as_of: datetime
    as_of_date: date
    dpd: int
    bucket: str
    previous_bucket: str
    oldest_past_due_seq: int | None
    oldest_past_due_date: date | None
    first_delinquency_date: date | None
    overdue_installments: int
    overdue_principal: int
    overdue_interest: int
    overdue_fee: int
    total_overdue: int
    penalty_accrued: int
    late_fees: int
    currency: str
    schedule_revision: int
    loan_status: str
    timezone: str
    contact: Contact
    partners: tuple[str, ...]
    due_seq: int | None = None
    due_date: date | None = None
    amount_due: int | None = None
    retracts: str | None = None
    event_id: str = ""

    def __init__(
        self,
        type: str,
        loan_id: str,
        borrower_id: str,
        as_of: datetime,
        as_of_date: date,
        dpd: int,
        bucket: str,
        previous_bucket: str,
        oldest_past_due_seq: int | None,
        oldest_past_due_date: date | None,
        first_delinquency_date: date | None,
        overdue_installments: int,
        overdue_principal: int,
        overdue_interest: int,
        overdue_fee: int,
        total_overdue: int,
        penalty_accrued: int,
        late_fees: int,
        currency: str,
        schedule_revision: int,
        loan_status: str,
        timezone: str,
        contact: Contact,
        partners: tuple[str, ...],
        due_seq: int | None = None,
        due_date: date | None = None,
        amount_due: int | None = None,
        retracts: str | None = None,
        event_id: str = "",
    ) -> None:
        # Written out rather than generated: mypyc compiles this one (streams/core/compiled.py).
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "loan_id", loan_id)
        object.__setattr__(self, "borrower_id", borrower_id)
        object.__setattr__(self, "as_of", as_of)
        object.__setattr__(self, "as_of_date", as_of_date)
        object.__setattr__(self, "dpd", dpd)
        object.__setattr__(self, "bucket", bucket)
        object.__setattr__(self, "previous_bucket", previous_bucket)
        object.__setattr__(self, "oldest_past_due_seq", oldest_past_due_seq)
        object.__setattr__(self, "oldest_past_due_date", oldest_past_due_date)
        object.__setattr__(self, "first_delinquency_date", first_delinquency_date)
        object.__setattr__(self, "overdue_installments", overdue_installments)
        object.__setattr__(self, "overdue_principal", overdue_principal)
        object.__setattr__(self, "overdue_interest", overdue_interest)
        object.__setattr__(self, "overdue_fee", overdue_fee)
        object.__setattr__(self, "total_overdue", total_overdue)
        object.__setattr__(self, "penalty_accrued", penalty_accrued)
        object.__setattr__(self, "late_fees", late_fees)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "schedule_revision", schedule_revision)
        object.__setattr__(self, "loan_status", loan_status)
        object.__setattr__(self, "timezone", timezone)
        object.__setattr__(self, "contact", contact)
        object.__setattr__(self, "partners", partners)
        object.__setattr__(self, "due_seq", due_seq)
        object.__setattr__(self, "due_date", due_date)
        object.__setattr__(self, "amount_due", amount_due)
        object.__setattr__(self, "retracts", retracts)
        object.__setattr__(self, "event_id", event_id)

    def content_key(self) -> str:
        """Every deterministic field but the id, in a fixed order: what the id hashes.

        One f-string rather than ``"|".join(str(v) for v in ...)``: ``format(v, "")`` is ``str(v)``
        for every type here (str, int, float, date, None), and a catch-up tick builds one per
        event (tests/unit/core/test_event_ids.py holds the two forms equal).
        """
        c = self.contact
        return (
            f"{self.type}|{self.loan_id}|{self.borrower_id}|{self.as_of.timestamp()}|{self.dpd}|"
            f"{self.bucket}|{self.previous_bucket}|{self.oldest_past_due_seq}|"
            f"{self.oldest_past_due_date}|{self.first_delinquency_date}|{self.overdue_installments}|"
            f"{self.overdue_principal}|{self.overdue_interest}|{self.overdue_fee}|"
            f"{self.total_overdue}|{self.penalty_accrued}|{self.late_fees}|{self.currency}|"
            f"{self.schedule_revision}|{self.loan_status}|{self.timezone}|{c.locale}|"
            f"{','.join(c.channels)}|{','.join(self.partners)}|{self.due_seq}|{self.due_date}|"
            f"{self.amount_due}|{self.retracts}"
        )

    def with_id(self, retracted: Collection[str]) -> OverdueEvent:
        """This event with its id: the first incarnation whose id was never retracted.

        Called once, by the walk that has just built the event and holds its only reference,
        so the id is written in place instead of copying a 29-field value per event.
        """
        key = self.content_key()
        incarnation = 0
        while True:
            candidate = hashlib.sha256(f"{key}#{incarnation}".encode()).hexdigest()[:32]
            if candidate not in retracted:
                object.__setattr__(self, "event_id", candidate)
                return self
            incarnation += 1

    def retraction(self, issued_at: datetime, issued_date: date) -> OverdueEvent:
        """The OVERDUE_RETRACTED that withdraws this event, issued at tick-clock instant ``issued_at``.

        It repeats the withdrawn event's state fields, so a consumer sees what it withdraws; its id
        depends only on the withdrawn id, which is unique per loan.
        """
        retraction = replace(
            self, type=OVERDUE_RETRACTED, as_of=issued_at, as_of_date=issued_date, retracts=self.event_id
        )
        return replace(retraction, event_id=hashlib.sha256(f"R#{self.event_id}".encode()).hexdigest()[:32])

    def to_dict(self, detected_at: datetime | None = None) -> dict[str, Any]:
        """The OverdueEvent record (native form: aware datetimes in the loan's zone, dates, ints)."""
        tz = zone(self.timezone)
        return {
            "event_id": self.event_id,
            "type": self.type,
            "loan_id": self.loan_id,
            "borrower_id": self.borrower_id,
            "as_of": self.as_of.astimezone(tz),
            "as_of_date": self.as_of_date,
            "dpd": self.dpd,
            "bucket": self.bucket,
            "previous_bucket": self.previous_bucket,
            "oldest_past_due_seq": self.oldest_past_due_seq,
            "oldest_past_due_date": self.oldest_past_due_date,
            "first_delinquency_date": self.first_delinquency_date,
            "overdue_installments": self.overdue_installments,
            "overdue_principal": self.overdue_principal,
            "overdue_interest": self.overdue_interest,
            "overdue_fee": self.overdue_fee,
            "total_overdue": self.total_overdue,
            "penalty_accrued": self.penalty_accrued,
            "late_fees": self.late_fees,
            "currency": self.currency,
            "schedule_revision": self.schedule_revision,
            "loan_status": self.loan_status,
            "timezone": self.timezone,
            "contact": {"locale": self.contact.locale, "channels": list(self.contact.channels)},
            "partners": list(self.partners),
            "due_seq": self.due_seq,
            "due_date": self.due_date,
            "amount_due": self.amount_due,
            "retracts": self.retracts,
            "detected_at": detected_at.astimezone(tz) if detected_at is not None else None,
        }


# Every dataclass above pickles field by field, in either form (a compiled frozen one could not
# unpickle otherwise: compiled.picklable).
picklable(globals())
