"""Sample records of every type in their JSON form: hand-written ones, and the worked examples'
schedules and repayments when ../shared is beside the checkout."""

from __future__ import annotations

import json

from tests.support.shared import EXAMPLES, REPO

ROOT = REPO
SCHEMAS = ROOT / "schemas"


def _example_values(topic: str) -> list[dict]:
    values = []
    for path in sorted(EXAMPLES.glob("*/input.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record["topic"] == topic:
                    values.append(record["value"])
    return values


# Hand-written JSON forms; LoanSchedule and Repayment also come from the worked examples.
CONTACT = {"locale": "zh-CN", "channels": ["push", "sms"]}
SAMPLES: dict[str, list[dict]] = {
    "LoanSchedule": [
        {
            "loan_id": "L-NY-1",
            "borrower_id": "B-77",
            "revision": 3,
            "effective_at": "2026-03-08T01:30:00-05:00",
            "currency": "USD",
            "timezone": "America/New_York",
            "status": "ACTIVE",
            "installments": [
                {"seq": i, "due_date": f"2026-{i:02d}-08", "principal": 50_000, "interest": 1_250, "fee": 99}
                for i in range(1, 13)
            ],
            "grace_days": 5,
            "tolerance": 100,
            "penalty_rate_bps": 3650,
            "late_fee": 2_000,
            "business_day_convention": "FOLLOWING",
            "calendar": "US",
            "partners": ["P-ALPHA", "P-BETA"],
            "contact": {"locale": "en", "channels": ["sms"]},
        }
    ],
    "Repayment": [
        {
            "payment_id": "rev-9",
            "loan_id": "L7",
            "amount": 105_000,
            "currency": "CNY",
            "paid_at": "2026-03-25T08:15:30.123456+08:00",
            "channel": "bank_transfer",
            "kind": "REVERSAL",
            "reverses": "p1",
        }
    ],
    "Tick": [{"as_of": "2026-03-16T00:01:00+00:00"}, {"as_of": "1970-01-01T00:00:00Z"}],
    "Dispute": [
        {
            "dispute_id": "D1",
            "loan_id": "L2",
            "status": "OPEN",
            "at": "2026-04-02T10:00:00+08:00",
            "note": "不是我的贷款",
        },
        {
            "dispute_id": "D1",
            "loan_id": "L2",
            "status": "RESOLVED",
            "at": "2026-04-20T10:00:00+08:00",
            "note": None,
        },
    ],
    "OverdueEvent": [
        {
            "event_id": "ev-2b8f",
            "type": "OVERDUE_OPENED",
            "loan_id": "L2",
            "borrower_id": "B1",
            "as_of": "2026-03-16T00:00:00+08:00",
            "as_of_date": "2026-03-16",
            "dpd": 1,
            "bucket": "M1",
            "previous_bucket": "M0",
            "oldest_past_due_seq": 1,
            "oldest_past_due_date": "2026-03-15",
            "first_delinquency_date": "2026-03-16",
            "overdue_installments": 1,
            "overdue_principal": 100_000,
            "overdue_interest": 5_000,
            "overdue_fee": 0,
            "total_overdue": 105_000,
            "penalty_accrued": 0,
            "late_fees": 2_000,
            "currency": "CNY",
            "schedule_revision": 1,
            "loan_status": "ACTIVE",
            "timezone": "Asia/Shanghai",
            "contact": CONTACT,
            "partners": ["P-ALPHA"],
            "due_seq": None,
            "due_date": None,
            "amount_due": None,
            "retracts": None,
            "detected_at": "2026-03-16T00:01:00.250000+08:00",
        },
        {
            "event_id": "ev-77aa",
            "type": "DUE_SOON",
            "loan_id": "L2",
            "borrower_id": "B1",
            "as_of": "2026-04-12T09:00:00+08:00",
            "as_of_date": "2026-04-12",
            "dpd": 0,
            "bucket": "M0",
            "previous_bucket": "M0",
            "oldest_past_due_seq": None,
            "oldest_past_due_date": None,
            "first_delinquency_date": None,
            "overdue_installments": 0,
            "overdue_principal": 0,
            "overdue_interest": 0,
            "overdue_fee": 0,
            "total_overdue": 0,
            "penalty_accrued": 0,
            "late_fees": 0,
            "currency": "CNY",
            "schedule_revision": 1,
            "loan_status": "ACTIVE",
            "timezone": "Asia/Shanghai",
            "contact": CONTACT,
            "partners": [],
            "due_seq": 2,
            "due_date": "2026-04-15",
            "amount_due": 104_000,
            "detected_at": "2026-04-12T01:01:00+00:00",
        },
        {
            "event_id": "ev-retract-1",
            "type": "OVERDUE_RETRACTED",
            "loan_id": "L2",
            "borrower_id": "B1",
            "as_of": "2026-03-16T00:00:00+08:00",
            "as_of_date": "2026-03-16",
            "dpd": 0,
            "bucket": "M0",
            "previous_bucket": "M0",
            "overdue_installments": 0,
            "overdue_principal": 0,
            "overdue_interest": 0,
            "overdue_fee": 0,
            "total_overdue": 0,
            "penalty_accrued": 0,
            "late_fees": 0,
            "currency": "CNY",
            "schedule_revision": 1,
            "loan_status": "ACTIVE",
            "timezone": "Asia/Shanghai",
            "contact": {"locale": "en", "channels": []},
            "partners": [],
            "retracts": "ev-2b8f",
            "detected_at": "2026-03-16T00:03:00+00:00",
        },
    ],
    "Notification": [
        {
            "notification_id": "n-1",
            "source_event_id": "ev-2b8f",
            "kind": "COLLECTION",
            "disposition": "SEND",
            "borrower_id": "B1",
            "loan_id": "L2",
            "channel": "push",
            "fallback_channel": "sms",
            "locale": "zh-CN",
            "template": "collection",
            "params": {"amount": "1050.00", "currency": "CNY", "due_date": "2026-03-15", "dpd": "1"},
            "text": "您的贷款已逾期1天，应还金额1050.00元。",
            "created_at": "2026-03-16T00:00:00+08:00",
            "not_before": "2026-03-16T08:00:00+08:00",
        },
        {
            "notification_id": "n-2",
            "source_event_id": "ev-2b8f",
            "kind": "CORRECTION",
            "disposition": "DROPPED",
            "borrower_id": "B1",
            "loan_id": "L2",
            "channel": None,
            "fallback_channel": None,
            "locale": "en",
            "template": "correction",
            "params": {},
            "text": "Please disregard our earlier message.",
            "created_at": "2026-03-16T00:00:00+00:00",
            "not_before": "2026-03-16T00:00:00+00:00",
        },
    ],
    "BureauRecord": [
        {
            "record_id": "br-1",
            "loan_id": "L2",
            "borrower_id": "B1",
            "as_of": "2026-03-16T00:00:00+08:00",
            "as_of_date": "2026-03-16",
            "released_at": "2026-03-17T08:00:00+08:00",
            "pboc_status": "1",
            "metro2_status": "11",
            "dpd": 1,
            "overdue_installments": 1,
            "overdue_amount": 105_000,
            "first_delinquency_date": "2026-03-16",
            "notice_id": "n-notice-1",
            "disputed": True,
            "corrects": None,
            "currency": "CNY",
            "source_event_id": "ev-2b8f",
        },
        {
            "record_id": "br-2",
            "loan_id": "L2",
            "borrower_id": "B1",
            "as_of": "2026-03-20T11:30:00Z",
            "as_of_date": "2026-03-20",
            "released_at": "2026-03-20T11:30:00Z",
            "pboc_status": "N",
            "metro2_status": "11",
            "dpd": 0,
            "overdue_installments": 0,
            "overdue_amount": 0,
            "corrects": "br-1",
        },
    ],
    "PartnerShare": [
        {
            "share_id": "ps-1",
            "partner_id": "P-ALPHA",
            "mode": "DIGEST",
            "as_of": "2026-03-17T07:00:00+08:00",
            "items": [
                {
                    "loan_id": "L2",
                    "borrower_token": "9f" * 32,
                    "type": "OVERDUE_OPENED",
                    "dpd": 1,
                    "bucket": "M1",
                    "total_overdue": 105_000,
                    "currency": "CNY",
                    "as_of": "2026-03-16T00:00:00+08:00",
                },
                {
                    "loan_id": "L9",
                    "borrower_token": "0a" * 32,
                    "type": "RETRACTED",
                    "dpd": 0,
                    "bucket": "M0",
                    "total_overdue": 0,
                    "currency": "CNY",
                    "as_of": "2026-03-16T13:00:00+08:00",
                },
            ],
        },
        {
            "share_id": "ps-2",
            "partner_id": "P-BETA",
            "mode": "REALTIME",
            "as_of": "2026-03-16T00:00:00+08:00",
            "items": [],
        },
    ],
    "CollectionTask": [
        {
            "task_id": "ct-1",
            "loan_id": "L2",
            "borrower_id": "B1",
            "action": "AUTO_REMINDER",
            "reason": "OVERDUE_OPENED",
            "bucket": "M1",
            "dpd": 1,
            "total_overdue": 105_000,
            "currency": "CNY",
            "opened_at": "2026-03-16T00:00:00+08:00",
            "contact_window": {"start": "08:00", "end": "21:00", "timezone": "Asia/Shanghai"},
            "max_attempts_per_day": 3,
            "source_event_id": "ev-2b8f",
        }
    ],
}
SAMPLES["LoanSchedule"] += _example_values("loan.schedules")
SAMPLES["Repayment"] += _example_values("loan.repayments")
