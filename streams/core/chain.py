"""The tamper-evident chain of a loan's bureau records (SPEC §7.1): link, hash, verify.

A bureau record is what a regulator or a borrower's dispute asks about years later, so the bank
must be able to show that none was altered or removed after it was sent. Each loan's records form
a hash chain: ``chain_seq`` 1, 2, 3, … in the order the bureau router makes them, ``prev_hash`` the
``hash`` of the record before (64 zeros for the first), and ``hash`` the SHA-256 of ``prev_hash``
followed by the record's canonical form. Altering a record breaks its own hash; recomputing that
hash breaks the next record's ``prev_hash``; rewriting a whole chain changes its last hash, which
the heads digest (one value over every chain's last hash) lets an auditor keep outside Kafka.

The canonical form is the record's fields without ``hash`` as a JSON object — an instant as its
Avro value (integer microseconds since the Unix epoch), a date as ``YYYY-MM-DD``, everything else
as in the JSON form — serialised by RFC 8785 (JSON Canonicalization Scheme, the ``rfc8785``
package), so an auditor in any language recomputes it from the topic alone.

Verification is order-free within a loan: a loan's records are judged as the set the topic holds
(a record for the loan written to another partition is judged with the rest), so what it reports
does not depend on how partitions interleave when they are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import rfc8785

ZERO_HASH = "0" * 64
CHAIN_FIELDS = ("chain_seq", "prev_hash", "hash")

#: The kinds of break ``verify`` reports.
GAP = "GAP"  # a chain_seq missing between 1 (or where reading began) and the loan's last
PREV_HASH = "PREV_HASH"  # prev_hash is not the hash of the record before
HASH = "HASH"  # hash does not recompute from prev_hash and the record
FORK = "FORK"  # two different records with the same chain_seq
UNREADABLE = "UNREADABLE"  # a value that is not a BureauRecord at all

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ChainError(ValueError):
    """A record value the canonical form cannot represent (a float, a naive instant, …)."""


def _canonical_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ChainError("a naive instant has no Avro value")
        return (value - _EPOCH) // _MICROSECOND
    if isinstance(value, date):
        return value.isoformat()
    raise ChainError(f"no canonical form for a {type(value).__name__}")


def canonical_form(record: Mapping[str, Any]) -> bytes:
    """The RFC 8785 bytes of ``record``'s fields without ``hash`` (SPEC §7.1)."""
    fields = {name: _canonical_value(value) for name, value in record.items() if name != "hash"}
    try:
        return rfc8785.dumps(fields)
    except rfc8785.CanonicalizationError as exc:
        raise ChainError(str(exc)) from None


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash ``record`` must carry: SHA-256 of its ``prev_hash`` then its canonical form, hex."""
    prev = record.get("prev_hash")
    if not isinstance(prev, str):
        raise ChainError("a chained record needs its prev_hash")
    return hashlib.sha256(prev.encode("utf-8") + canonical_form(record)).hexdigest()


def link(record: Mapping[str, Any], chain_seq: int, prev_hash: str) -> dict[str, Any]:
    """``record`` as the ``chain_seq``-th of its loan's chain, after the record hashed ``prev_hash``."""
    linked = {name: value for name, value in record.items() if name not in CHAIN_FIELDS}
    linked["chain_seq"] = chain_seq
    linked["prev_hash"] = prev_hash
    linked["hash"] = record_hash(linked)
    return linked


def heads_digest(heads: Mapping[str, str]) -> str:
    """SHA-256 of the sorted lines ``loan_id:hash`` (each ending in a newline) of every chain's last
    record: what ``LC_ALL=C sort heads.txt | sha256sum`` gives for a file of those lines."""
    lines = sorted(f"{loan_id}:{head}\n" for loan_id, head in heads.items())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    """One way a loan's chain does not hold."""

    loan_id: str
    chain_seq: int | None
    kind: str
    detail: str


@dataclass(slots=True)
class _Seen:
    """One distinct record of a loan with a given chain_seq, and where it was read."""

    value: Mapping[str, Any]
    where: str
    hash: str | None


@dataclass(slots=True)
class Chain:
    """What the topic holds for one loan."""

    loan_id: str
    by_seq: dict[int, list[_Seen]] = field(default_factory=dict)
    records: int = 0
    unchained: int = 0  # written before the chain existed (schema v1): nothing to check

    @property
    def length(self) -> int:
        """How many distinct chain positions the loan's chain has."""
        return len(self.by_seq)

    @property
    def head(self) -> str | None:
        """The hash of the loan's last record (the first one read, if that position is forked)."""
        if not self.by_seq:
            return None
        return self.by_seq[max(self.by_seq)][0].hash


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` found: every loan's chain, every break, the heads digest."""

    records: int
    chains: tuple[Chain, ...]
    breaks: tuple[Break, ...]
    digest: str

    @property
    def holds(self) -> bool:
        """Every chain holds."""
        return not self.breaks

    def lines(self) -> list[str]:
        """The report: a line per loan, one per break under it, and the summary line last."""
        by_loan: dict[str, list[Break]] = {}
        for problem in self.breaks:
            by_loan.setdefault(problem.loan_id, []).append(problem)
        out: list[str] = []
        for chain in self.chains:
            problems = by_loan.get(chain.loan_id, [])
            verdict = "holds" if not problems else f"{len(problems)} break{'s' * (len(problems) != 1)}"
            line = f"{chain.loan_id}: chain of {chain.length}, head {chain.head or '-'}, {verdict}"
            if chain.unchained:
                line += f"; {chain.unchained} record(s) written before the chain (no chain_seq)"
            out.append(line)
            out += [
                f"  {p.kind} at chain_seq {'-' if p.chain_seq is None else p.chain_seq}: {p.detail}"
                for p in problems
            ]
        n = len(self.breaks)
        out.append(
            f"verified {self.records} records of {len(self.chains)} loans, "
            f"{n} break{'s' * (n != 1)}, heads {self.digest}"
        )
        return out


class Verifier:
    """Reads a loan's records one by one (``add``), judges them all at the end (``result``).

    ``anchored``: reading began somewhere in the middle of the topic (following new records), so
    a loan's first chain position read is taken as given; without it, every chain must start at 1.
    """

    def __init__(self, anchored: bool = False) -> None:
        self.anchored = anchored
        self.chains: dict[str, Chain] = {}
        self.records = 0
        self.unreadable: list[Break] = []

    def add(self, value: Mapping[str, Any] | None, where: str, key: str | None = None) -> None:
        """One record of the topic, ``where`` saying where it was read (partition and offset);
        ``value`` None for one that does not decode as a BureauRecord."""
        self.records += 1
        loan_id = value.get("loan_id") if value is not None else None
        if value is None or not isinstance(loan_id, str):
            self.unreadable.append(Break(key or "?", None, UNREADABLE, f"{where}: not a BureauRecord"))
            return
        chain = self.chains.setdefault(loan_id, Chain(loan_id))
        chain.records += 1
        if all(value.get(name) is None for name in CHAIN_FIELDS):
            chain.unchained += 1
            return
        seq = value.get("chain_seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            self.unreadable.append(Break(loan_id, None, UNREADABLE, f"{where}: no chain_seq of 1 or more"))
            return
        stored = value.get("hash")
        seen = chain.by_seq.setdefault(seq, [])
        if any(s.value == value for s in seen):
            return  # an identical re-send (at least once, after a crash): not a fork
        seen.append(_Seen(value, where, stored if isinstance(stored, str) else None))

    def result(self) -> Verification:
        """Judge every chain read so far."""
        breaks = list(self.unreadable)
        chains = tuple(self.chains[loan_id] for loan_id in sorted(self.chains))
        for chain in chains:
            breaks += self._judge(chain)
        heads = {c.loan_id: c.head for c in chains if c.head is not None}
        return Verification(self.records, chains, tuple(breaks), heads_digest(heads))

    def _judge(self, chain: Chain) -> list[Break]:
        out: list[Break] = []
        if not chain.by_seq:
            return out
        loan_id = chain.loan_id
        first = min(chain.by_seq) if self.anchored else 1
        missing = [seq for seq in range(first, max(chain.by_seq)) if seq not in chain.by_seq]
        for start, end in _runs(missing):
            what = f"chain_seq {start}" if start == end else f"chain_seq {start} to {end}"
            out.append(Break(loan_id, start, GAP, f"no record with {what}"))
        for seq in sorted(chain.by_seq):
            seen = chain.by_seq[seq]
            if len(seen) > 1:
                places = ", ".join(s.where for s in seen)
                out.append(Break(loan_id, seq, FORK, f"{len(seen)} different records ({places})"))
            for record in seen:
                out += self._links(chain, seq, record, first)
        return out

    def _links(self, chain: Chain, seq: int, record: _Seen, first: int) -> list[Break]:
        out: list[Break] = []
        loan_id = chain.loan_id
        try:
            recomputed: str | None = record_hash(record.value)
        except ChainError:
            recomputed = None
        if record.hash is None or recomputed != record.hash:
            out.append(Break(loan_id, seq, HASH, f"{record.where}: hash does not recompute"))
        prev = record.value.get("prev_hash")
        if seq == 1:
            expected: set[str | None] = {ZERO_HASH}
        elif seq - 1 in chain.by_seq:
            expected = {s.hash for s in chain.by_seq[seq - 1]}
        else:
            return out  # the record before is missing (a gap, reported) or before where reading began
        if prev not in expected and not (self.anchored and seq == first):
            out.append(
                Break(
                    loan_id, seq, PREV_HASH, f"{record.where}: prev_hash is not the hash of the record before"
                )
            )
        return out


def _runs(missing: list[int]) -> Iterable[tuple[int, int]]:
    """Each run of consecutive missing chain_seq as (first, last): one break per gap."""
    start: int | None = None
    previous = 0
    for seq in missing:
        if start is not None and seq != previous + 1:
            yield start, previous
            start = None
        if start is None:
            start = seq
        previous = seq
    if start is not None:
        yield start, previous


def verify(
    records: Iterable[tuple[Mapping[str, Any] | None, str, str | None]], anchored: bool = False
) -> Verification:
    """Verify ``(value, where, key)`` records of ``bureau.records`` (see :class:`Verifier`)."""
    verifier = Verifier(anchored)
    for value, where, key in records:
        verifier.add(value, where, key)
    return verifier.result()
