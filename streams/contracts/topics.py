"""The topics of SPEC §1 by logical name (a deployment may prefix them), and the record type
each carries: defined here once, imported by the worker, replay, the command line, the demo
and the tests."""

from __future__ import annotations

SCHEDULES = "loan.schedules"
REPAYMENTS = "loan.repayments"
TICKS = "clock.ticks"
DISPUTES = "bureau.disputes"
OVERDUE = "overdue.events"
NOTIFY = "notify.requests"
BUREAU = "bureau.records"
PARTNER = "partner.shares"
COLLECTIONS = "collections.tasks"
DLQ = "duewatch.dlq"
#: Operators' commands to the workers (``duewatch release``, a redriven routed event): keyed by
#: loan id like the inputs, so the worker that owns the loan reads them in order with its records.
CONTROL = "duewatch.control"

INPUT_TOPICS = (SCHEDULES, REPAYMENTS, TICKS, DISPUTES)
OUTPUT_TOPICS = (OVERDUE, NOTIFY, BUREAU, PARTNER, COLLECTIONS, DLQ)
ALL_TOPICS = INPUT_TOPICS + OUTPUT_TOPICS + (CONTROL,)

#: Logical topic -> the Avro record type of its values (the DLQ carries other topics' bytes).
TOPIC_RECORD: dict[str, str] = {
    SCHEDULES: "LoanSchedule",
    REPAYMENTS: "Repayment",
    TICKS: "Tick",
    DISPUTES: "Dispute",
    OVERDUE: "OverdueEvent",
    NOTIFY: "Notification",
    BUREAU: "BureauRecord",
    PARTNER: "PartnerShare",
    COLLECTIONS: "CollectionTask",
}

#: Topic configs duewatch requires beyond the broker's defaults (``duewatch topics create`` sets
#: them, also on a topic that already exists). Bureau records must stay five years after their
#: episode ends (PBOC regulation Art. 16) and their hash chains must stay whole (SPEC §7.1):
#: deleting them is a compliance step, never a broker default.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {BUREAU: {"retention.ms": "-1"}}

#: Input topics whose key is the loan id found in the value (SPEC §1).
KEY_FIELD: dict[str, str] = {SCHEDULES: "loan_id", REPAYMENTS: "loan_id", DISPUTES: "loan_id"}

#: The event-time field of each input record (replay orders by it).
EVENT_TIME_FIELD: dict[str, str] = {
    SCHEDULES: "effective_at",
    REPAYMENTS: "paid_at",
    TICKS: "as_of",
    DISPUTES: "at",
}
