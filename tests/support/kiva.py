"""Kiva's real microloans (../shared/data/kiva) as duewatch records.

Each loan with a repayment schedule and repayments becomes one LoanSchedule (the field
partner's ``scheduled_payments`` in USD cents, time zone UTC, grace 0, effective at
disbursal) and one Repayment per ``payments[]`` entry (``processed_date``, cents). JSON
is read with Decimal so no float ever touches an amount.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any


def _cents(amount: Decimal | int) -> int:
    return int((Decimal(amount) * 100).to_integral_value())


def load_loans(kiva_dir: Path) -> list[dict[str, Any]]:
    """Loans that carry both a schedule and repayments with a paid/defaulted outcome."""
    loans: list[dict[str, Any]] = []
    for page in sorted(kiva_dir.glob("loans_*.json")):
        data = json.loads(page.read_text(encoding="utf-8"), parse_float=Decimal)
        for loan in data["loans"]:
            terms = loan.get("terms") or {}
            if (
                loan.get("payments")
                and terms.get("scheduled_payments")
                and loan.get("status") in ("paid", "defaulted")
            ):
                loans.append(loan)
    return loans


def to_records(loan: dict[str, Any]) -> list[dict[str, Any]]:
    """The replay input lines for one Kiva loan."""
    loan_id = f"kiva-{loan['id']}"
    terms = loan["terms"]
    installments = [
        {
            "seq": seq,
            "due_date": p["due_date"][:10],
            "principal": _cents(p["amount"]),
            "interest": 0,
            "fee": 0,
        }
        for seq, p in enumerate(sorted(terms["scheduled_payments"], key=lambda p: p["due_date"]), 1)
    ]
    first_payment = min(p["processed_date"] for p in loan["payments"])
    effective_at = min(terms.get("disbursal_date") or first_payment, first_payment)
    schedule = {
        "loan_id": loan_id,
        "borrower_id": f"kiva-borrower-{loan['id']}",
        "revision": 1,
        "effective_at": effective_at.replace("Z", "+00:00"),
        "currency": "USD",
        "timezone": "UTC",
        "status": "ACTIVE",
        "installments": installments,
        "grace_days": 0,
        "tolerance": 0,
        "partners": [],
        "contact": {"locale": "en", "channels": ["sms"]},
    }
    records = [{"topic": "loan.schedules", "key": loan_id, "value": schedule}]
    for index, p in enumerate(loan["payments"]):
        records.append(
            {
                "topic": "loan.repayments",
                "key": loan_id,
                "value": {
                    "payment_id": f"{loan_id}-{p.get('payment_id', index)}",
                    "loan_id": loan_id,
                    "amount": _cents(p["amount"]),
                    "currency": "USD",
                    "paid_at": p["processed_date"].replace("Z", "+00:00"),
                    "channel": "kiva",
                    "kind": "PAYMENT",
                    "reverses": None,
                },
            }
        )
    return records
