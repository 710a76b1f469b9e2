"""Real repayment data: 616 Kiva microloans with known outcomes (skips when ../shared is absent)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from streams.replay import Replay
from tests.support.kiva import load_loans, to_records
from tests.support.shared import KIVA, need


def test_kiva_defaults_end_open_in_m7_and_paid_loans_end_current() -> None:
    loans = load_loans(need(KIVA))
    assert len(loans) == 616
    outcome = {f"kiva-{loan['id']}": loan["status"] for loan in loans}
    run = Replay()
    outputs = run.run([r for loan in loans for r in to_records(loan)], datetime(2015, 1, 5, tzinfo=UTC))
    assert not [o for o in outputs if o.topic == "duewatch.dlq"]
    ends = Counter(
        (outcome[loan_id], state.carry.open, state.carry.bucket) for loan_id, state in run.loans.items()
    )
    assert ends == {("defaulted", True, "M7"): 6, ("paid", False, "M0"): 610}
    # Real loans do go late and cure: the data exercises more than the happy path.
    types = Counter(o.value["type"] for o in outputs if o.topic == "overdue.events")
    assert types["OVERDUE_OPENED"] > 100 and types["OVERDUE_CURED"] > 100
