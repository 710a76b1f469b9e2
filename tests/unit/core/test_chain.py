"""The bureau records' hash chain (SPEC §7.1): SPEC's test vector, the canonical form, and what
verification reports for each kind of break."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from streams.core import chain
from streams.core.chain import FORK, GAP, HASH, PREV_HASH, UNREADABLE, ZERO_HASH

# SPEC §7.1's test vector, as SPEC writes it.
VECTOR: dict[str, Any] = {
    "record_id": "b-7f3a",
    "loan_id": "L1",
    "borrower_id": "B1",
    "as_of": 1772380800000000,
    "as_of_date": "2026-03-02",
    "released_at": 1772467200000000,
    "pboc_status": "1",
    "metro2_status": "11",
    "dpd": 1,
    "overdue_installments": 1,
    "overdue_amount": 105000,
    "first_delinquency_date": "2026-03-02",
    "notice_id": "n-19c2",
    "disputed": False,
    "corrects": None,
    "chain_seq": 1,
    "prev_hash": "0" * 64,
}
VECTOR_HASH = "41edbe60482179898d363d249adc44c31a21fbf59f2d0ac4493b097ec7cee03c"
CST = timezone(timedelta(hours=8))


def native_vector() -> dict[str, Any]:
    """The vector's record as the router holds it: aware instants (in the loan's zone) and dates."""
    return dict(
        VECTOR,
        as_of=datetime(2026, 3, 2, 0, 0, tzinfo=CST),
        as_of_date=date(2026, 3, 2),
        released_at=datetime(2026, 3, 3, 0, 0, tzinfo=CST),
        first_delinquency_date=date(2026, 3, 2),
    )


def test_spec_test_vector() -> None:
    assert hashlib.sha256(b"0" * 64 + rfc8785.dumps(VECTOR)).hexdigest() == VECTOR_HASH
    assert chain.record_hash(VECTOR) == VECTOR_HASH
    assert chain.record_hash(native_vector()) == VECTOR_HASH  # instants and dates as SPEC says
    linked = chain.link(
        {k: v for k, v in native_vector().items() if k not in chain.CHAIN_FIELDS}, 1, ZERO_HASH
    )
    assert linked["chain_seq"] == 1 and linked["prev_hash"] == ZERO_HASH and linked["hash"] == VECTOR_HASH


def test_the_canonical_form_leaves_out_the_hash_and_reads_instants_as_instants() -> None:
    value = native_vector()
    assert chain.canonical_form(dict(value, hash="anything")) == chain.canonical_form(value)
    utc = dict(value, as_of=value["as_of"].astimezone(UTC))
    assert chain.canonical_form(utc) == chain.canonical_form(value)
    assert b'"as_of":1772380800000000' in chain.canonical_form(value)
    assert chain.record_hash(dict(value, dpd=2)) != VECTOR_HASH  # every field counts
    assert chain.record_hash(dict(value, prev_hash="1" * 64)) != VECTOR_HASH
    with pytest.raises(chain.ChainError):
        chain.canonical_form(dict(value, as_of=datetime(2026, 3, 2)))  # naive: no Avro value
    with pytest.raises(chain.ChainError):
        chain.canonical_form(dict(value, dpd=1.5))
    with pytest.raises(chain.ChainError):
        chain.record_hash({k: v for k, v in value.items() if k != "prev_hash"})


def test_the_heads_digest_is_sha256_of_the_sorted_lines() -> None:
    heads = {"L2": "b" * 64, "L10": "a" * 64, "L1": "c" * 64}
    text = (
        f"L10:{'a' * 64}\nL1:{'c' * 64}\nL2:{'b' * 64}\n"  # lines sorted as bytes: '0' < ':'  (LC_ALL=C sort)
    )
    assert chain.heads_digest(heads) == hashlib.sha256(text.encode()).hexdigest()
    assert chain.heads_digest({}) == hashlib.sha256(b"").hexdigest()


# --- verification -----------------------------------------------------------------------------


def records(loan_id: str, n: int, start: int = 1, prev: str = ZERO_HASH) -> list[dict[str, Any]]:
    """A valid chain of ``n`` records for ``loan_id``."""
    out = []
    for seq in range(start, start + n):
        base = {k: v for k, v in native_vector().items() if k not in chain.CHAIN_FIELDS}
        base.update(loan_id=loan_id, record_id=f"r-{loan_id}-{seq}", dpd=seq)
        out.append(chain.link(base, seq, prev))
        prev = out[-1]["hash"]
    return out


def verify(values: list[dict[str, Any] | None], anchored: bool = False) -> chain.Verification:
    return chain.verify(((v, f"offset {i}", None) for i, v in enumerate(values)), anchored)


def kinds(result: chain.Verification) -> list[tuple[str, int | None, str]]:
    return [(b.loan_id, b.chain_seq, b.kind) for b in result.breaks]


def test_whole_chains_hold_and_the_summary_names_the_heads() -> None:
    a, b = records("L1", 3), records("L2", 2)
    result = verify([a[0], b[0], a[1], b[1], a[2]])
    assert result.holds and result.records == 5
    assert [(c.loan_id, c.length, c.head) for c in result.chains] == [
        ("L1", 3, a[2]["hash"]),
        ("L2", 2, b[1]["hash"]),
    ]
    digest = chain.heads_digest({"L1": a[2]["hash"], "L2": b[1]["hash"]})
    assert result.lines()[-1] == f"verified 5 records of 2 loans, 0 breaks, heads {digest}"
    assert result.lines()[0] == f"L1: chain of 3, head {a[2]['hash']}, holds"


def test_identical_re_sends_are_not_a_fork() -> None:
    a = records("L1", 3)
    result = verify([a[0], a[1], a[1], a[2], a[0]])
    assert result.holds and result.records == 5 and result.chains[0].length == 3


def test_a_gap_is_one_break_per_run_of_missing_records() -> None:
    a = records("L1", 6)
    result = verify([a[0], a[2], a[5]])
    assert kinds(result) == [("L1", 2, GAP), ("L1", 4, GAP)]
    assert "chain_seq 4 to 5" in result.breaks[1].detail
    assert kinds(verify([a[1], a[2]])) == [("L1", 1, GAP)]  # the first record is missing too
    assert verify([a[1], a[2]], anchored=True).holds  # following from the middle: the first read is given


def test_an_altered_record_does_not_recompute() -> None:
    a = records("L1", 3)
    altered = dict(a[1], overdue_amount=1)
    assert kinds(verify([a[0], altered, a[2]])) == [("L1", 2, HASH)]


def test_an_altered_record_with_its_hash_recomputed_breaks_the_next_link() -> None:
    a = records("L1", 3)
    rehashed = chain.link(dict(a[1], overdue_amount=1), 2, a[0]["hash"])
    assert kinds(verify([a[0], rehashed, a[2]])) == [("L1", 3, PREV_HASH)]


def test_a_prev_hash_that_does_not_match() -> None:
    a = records("L1", 2)
    wrong = chain.link(dict(a[1]), 2, "f" * 64)
    assert kinds(verify([a[0], wrong])) == [("L1", 2, PREV_HASH)]
    first = chain.link(dict(a[0]), 1, "f" * 64)  # the first must follow 64 zeros
    assert kinds(verify([first])) == [("L1", 1, PREV_HASH)]


def test_two_different_records_with_the_same_chain_seq_are_a_fork() -> None:
    a = records("L1", 3)
    other = chain.link(dict(a[1], pboc_status="2"), 2, a[0]["hash"])  # well-formed, but a second history
    result = verify([a[0], a[1], a[2], other])
    assert kinds(result) == [("L1", 2, FORK)]
    assert "offset 1" in result.breaks[0].detail and "offset 3" in result.breaks[0].detail
    assert result.chains[0].head == a[2]["hash"]


def test_unreadable_values_and_records_from_before_the_chain() -> None:
    a = records("L1", 1)
    legacy = {k: v for k, v in a[0].items() if k not in chain.CHAIN_FIELDS}
    legacy.update(chain_seq=None, prev_hash=None, hash=None)
    result = verify([legacy, a[0], None])
    assert kinds(result) == [("?", None, UNREADABLE)]
    assert result.chains[0].unchained == 1 and result.chains[0].length == 1
    assert "1 record(s) written before the chain" in result.lines()[0]
    assert kinds(verify([dict(a[0], chain_seq=0)])) == [("L1", None, UNREADABLE)]
    assert kinds(verify([dict(a[0], hash=None)])) == [("L1", 1, HASH)]
