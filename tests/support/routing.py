"""Shared fixtures for the router tests: realistic OverdueEvents and loan histories.

Events have exactly the SPEC §4 field names and value shapes of
``/work/shared/examples/*/expected.jsonl`` plus the loan context; retractions repeat the
withdrawn event's state fields as the detector does (``OverdueEvent.retraction``).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from streams.core.routing import PartnerPolicy, Policy
from streams.policy_loader import load_policy

SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
KEY_RT = b"realtime-partner-key-0123456789abcdef"
KEY_DG = b"digest-partner-key-0123456789abcdefgh"
PARTNERS = ("P-RT", "P-DG")

_BASE = load_policy(None)


def make_policy(**overrides: Any) -> Policy:
    """The default policy with templates, two configured partners (REALTIME P-RT, DIGEST P-DG)."""
    partners = {
        "P-RT": PartnerPolicy("P-RT", KEY_RT, "REALTIME"),
        "P-DG": PartnerPolicy("P-DG", KEY_DG, "DIGEST"),
    }
    return replace(_BASE, partners=partners, **overrides)


def at(text: str) -> datetime:
    """An aware instant from ISO text."""
    return datetime.fromisoformat(text)


def bucket_of(dpd: int) -> str:
    """SPEC §3's default bucket table."""
    if dpd <= 0:
        return "M0"
    return f"M{min(7, (dpd - 1) // 30 + 1)}"


def event(
    kind: str,
    as_of: datetime | str,
    *,
    loan: str = "L1",
    borrower: str = "B1",
    dpd: int = 0,
    bucket: str | None = None,
    previous_bucket: str | None = None,
    total: int = 0,
    oldest: date | None = None,
    first_delinquency: date | None = None,
    installments: int | None = None,
    penalty: int = 0,
    late_fees: int = 0,
    tz: str = SHANGHAI,
    locale: str = "zh-CN",
    channels: tuple[str, ...] = ("push", "sms"),
    partners: tuple[str, ...] = PARTNERS,
    loan_status: str = "ACTIVE",
    due_seq: int | None = None,
    due_date: date | None = None,
    amount_due: int | None = None,
    currency: str = "CNY",
    event_id: str | None = None,
) -> dict[str, Any]:
    """One OverdueEvent as the detector's ``to_dict`` gives it."""
    instant = at(as_of) if isinstance(as_of, str) else as_of
    instant = instant.astimezone(ZoneInfo(tz))
    bucket = bucket if bucket is not None else bucket_of(dpd)
    value = {
        "type": kind,
        "loan_id": loan,
        "borrower_id": borrower,
        "as_of": instant,
        "as_of_date": instant.date(),
        "dpd": dpd,
        "bucket": bucket,
        "previous_bucket": previous_bucket if previous_bucket is not None else bucket,
        "oldest_past_due_seq": 1 if total else None,
        "oldest_past_due_date": oldest if total else None,
        "first_delinquency_date": first_delinquency,
        "overdue_installments": installments if installments is not None else (1 if total else 0),
        "overdue_principal": total,
        "overdue_interest": 0,
        "overdue_fee": 0,
        "total_overdue": total,
        "penalty_accrued": penalty,
        "late_fees": late_fees,
        "currency": currency,
        "schedule_revision": 1,
        "loan_status": loan_status,
        "timezone": tz,
        "contact": {"locale": locale, "channels": list(channels)},
        "partners": list(partners),
        "due_seq": due_seq,
        "due_date": due_date,
        "amount_due": amount_due,
        "retracts": None,
        "detected_at": None,
    }
    content = "|".join(f"{k}={value[k]}" for k in sorted(value) if k != "detected_at")
    value["event_id"] = event_id or hashlib.sha256(content.encode()).hexdigest()[:32]
    return value


def retraction(of: dict[str, Any], as_of: datetime) -> dict[str, Any]:
    """The OVERDUE_RETRACTED withdrawing ``of``, issued at tick instant ``as_of``."""
    local = as_of.astimezone(ZoneInfo(of["timezone"]))
    return {
        **of,
        "type": "OVERDUE_RETRACTED",
        "as_of": local,
        "as_of_date": local.date(),
        "retracts": of["event_id"],
        "event_id": hashlib.sha256(f"R#{of['event_id']}".encode()).hexdigest()[:32],
    }


def midnight(day: date, tz: str) -> datetime:
    """The first instant of local ``day``."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz))


def episode_events(
    *,
    loan: str,
    borrower: str,
    due: date,
    tz: str,
    grace: int,
    amount: int,
    end_after: timedelta | None,
    end_kind: str,
    max_dpd: int,
    channels: tuple[str, ...],
    partners: tuple[str, ...],
    locale: str,
) -> list[dict[str, Any]]:
    """Reminders for one instalment, then (optionally) an episode: opened, aged, ended.

    ``end_after`` is measured from the opening; None keeps the episode open up to ``max_dpd``.
    ``end_kind``: "CURED", "CLOSED" (a cure by the loan closing) or "WRITTEN_OFF".
    """
    common = dict(loan=loan, borrower=borrower, tz=tz, channels=channels, partners=partners, locale=locale)
    nine = time(9, 0)
    events = [
        event(
            "DUE_SOON",
            datetime.combine(due - timedelta(days=days), nine, tzinfo=ZoneInfo(tz)),
            due_seq=1,
            due_date=due,
            amount_due=amount,
            **common,
        )
        for days in (3, 1)
    ]
    open_dpd = grace + 1
    opened_at = midnight(due + timedelta(days=open_dpd), tz)
    fdd = due + timedelta(days=1)
    facts = dict(total=amount, oldest=due, first_delinquency=fdd, **common)
    events.append(event("OVERDUE_OPENED", opened_at, dpd=open_dpd, previous_bucket="M0", **facts))
    end_at = None if end_after is None else opened_at + end_after
    dpd = open_dpd
    while True:
        nxt = next((t for t in (31, 61, 91, 121, 151, 181) if t > dpd), None)
        if nxt is None or nxt > max_dpd:
            break
        when = midnight(due + timedelta(days=nxt), tz)
        if end_at is not None and when >= end_at:
            break
        events.append(event("BUCKET_CHANGED", when, dpd=nxt, previous_bucket=bucket_of(nxt - 1), **facts))
        dpd = nxt
    if end_at is not None:
        local_dpd = (end_at.astimezone(ZoneInfo(tz)).date() - due).days
        if end_kind == "WRITTEN_OFF":
            events.append(event("WRITTEN_OFF", end_at, dpd=local_dpd, loan_status="WRITTEN_OFF", **facts))
        else:
            status = "CLOSED" if end_kind == "CLOSED" else "ACTIVE"
            remaining = amount if end_kind == "CLOSED" else 0
            events.append(
                event(
                    "OVERDUE_CURED",
                    end_at,
                    dpd=0,
                    bucket="M0",
                    previous_bucket=bucket_of(local_dpd),
                    loan_status=status,
                    **{**facts, "total": remaining},
                )
            )
    return events


@st.composite
def loan_histories(draw: st.DrawFn, max_loans: int = 4) -> tuple[list[dict[str, Any]], datetime]:
    """Several loans of a few borrowers: reminders, episodes of every shape, some retracted late.

    Returns (events in as_of order, until).
    """
    loans = draw(st.integers(1, max_loans))
    borrowers = draw(st.integers(1, 2))
    events: list[dict[str, Any]] = []
    for n in range(loans):
        tz = draw(st.sampled_from([SHANGHAI, SHANGHAI, NEW_YORK]))
        due = date(2026, 3, 1) + timedelta(days=draw(st.integers(0, 20)))
        channels = draw(st.sampled_from([("push", "sms"), ("sms",), ("sms", "push"), ("push",), ()]))
        partners = draw(st.sampled_from([PARTNERS, ("P-RT",), ("P-DG", "P-UNKNOWN"), ()]))
        grace = draw(st.sampled_from([0, 0, 3]))
        hours = draw(st.one_of(st.none(), st.integers(1, 24 * 120)))
        minutes = draw(st.integers(0, 59))
        end_after = None if hours is None else timedelta(hours=hours, minutes=minutes)
        history = episode_events(
            loan=f"L{n}",
            borrower=f"B{n % borrowers}",
            due=due,
            tz=tz,
            grace=grace,
            amount=draw(st.integers(1, 5_000_000)),
            end_after=end_after,
            end_kind=draw(st.sampled_from(["CURED", "CURED", "CLOSED", "WRITTEN_OFF"])),
            max_dpd=draw(st.sampled_from([40, 100, 200])),
            channels=channels,
            partners=partners,
            locale=draw(st.sampled_from(["zh-CN", "en"])),
        )
        if draw(st.booleans()):
            history = history[:2]  # paid on time: reminders only
        if len(history) > 2 and draw(st.integers(0, 3)) == 0:
            # A late payment dated before the cut-off arrives: every transition emitted so far is
            # retracted at the tick instant it arrives, and nothing of the episode holds any more.
            opened = history[2]["as_of"]
            arrives = opened + timedelta(hours=draw(st.integers(1, 24 * 45)))
            emitted = [e for e in history if e["as_of"] <= arrives]
            history = emitted + [
                retraction(e, arrives) for e in emitted if e["type"] != "DUE_SOON" or e["as_of"] > opened
            ]
        events += history
    events.sort(key=lambda e: e["as_of"])
    until = max(e["as_of"] for e in events) + timedelta(days=draw(st.integers(0, 3)))
    return events, until


@st.composite
def stream_and_truth(
    draw: st.DrawFn, max_loans: int = 3
) -> tuple[list[tuple[datetime, dict]], list[dict], datetime]:
    """What the detector emits in the stream when data arrives late, and what replay emits.

    Shapes per loan: no late data; a late *payment* dated before the cut-off (every transition
    emitted so far is retracted, nothing of the episode holds); a late *reversal* of the
    payment that cured the episode (the cure is retracted, then the transitions that now hold
    are emitted back-dated, then the episode goes on). Returns ([(emitted_at, event)] in
    emission order, the truth in as_of order, until).
    """
    stream: list[tuple[datetime, int, dict[str, Any]]] = []
    truth: list[dict[str, Any]] = []
    seq = 0
    for n in range(draw(st.integers(1, max_loans))):
        tz = draw(st.sampled_from([SHANGHAI, NEW_YORK]))
        due = date(2026, 3, 1) + timedelta(days=draw(st.integers(0, 10)))
        true_end = draw(st.one_of(st.none(), st.integers(24 * 20, 24 * 150)))
        history = episode_events(
            loan=f"L{n}",
            borrower=f"B{n % 2}",
            due=due,
            tz=tz,
            grace=0,
            amount=draw(st.integers(1, 10**7)),
            end_after=None
            if true_end is None
            else timedelta(hours=true_end, minutes=draw(st.integers(0, 59))),
            end_kind=draw(st.sampled_from(["CURED", "WRITTEN_OFF"])),
            max_dpd=200,
            channels=("push", "sms"),
            partners=PARTNERS,
            locale=draw(st.sampled_from(["zh-CN", "en"])),
        )
        shape = draw(st.sampled_from(["none", "late_payment", "late_reversal"]))
        opened = history[2]["as_of"]
        emitted: list[tuple[datetime, dict[str, Any]]] = [(e["as_of"], e) for e in history]
        if shape == "late_payment":
            arrives = opened + timedelta(hours=draw(st.integers(1, 24 * 40)))
            before = [e for e in history if e["as_of"] <= arrives]
            emitted = [(e["as_of"], e) for e in before]
            emitted += [(arrives, retraction(e, arrives)) for e in before if e["as_of"] >= opened]
            history = history[:2]
        elif shape == "late_reversal":
            cure_at = opened + timedelta(hours=draw(st.integers(1, 24 * 40)))
            arrives = cure_at + timedelta(hours=draw(st.integers(1, 24 * 50)))
            end = history[-1]["as_of"] if history[-1]["type"] in ("OVERDUE_CURED", "WRITTEN_OFF") else None
            if end is None or end > arrives:
                common = {k: history[2][k] for k in ("loan_id", "borrower_id", "timezone")}
                fake = event(
                    "OVERDUE_CURED",
                    cure_at,
                    loan=common["loan_id"],
                    borrower=common["borrower_id"],
                    tz=common["timezone"],
                    bucket="M0",
                    previous_bucket=bucket_of(2),
                    first_delinquency=history[2]["first_delinquency_date"],
                    partners=PARTNERS,
                    locale=history[2]["contact"]["locale"],
                )
                emitted = [(e["as_of"], e) for e in history if e["as_of"] < cure_at]
                emitted += [(cure_at, fake), (arrives, retraction(fake, arrives))]
                emitted += [(max(arrives, e["as_of"]), e) for e in history if e["as_of"] >= cure_at]
        truth += history
        for emitted_at, e in emitted:
            stream.append((emitted_at, seq, e))
            seq += 1
    stream.sort(key=lambda x: (x[0], x[1]))
    truth.sort(key=lambda e: e["as_of"])
    until = max(x[0] for x in stream) + timedelta(days=draw(st.integers(0, 3)))
    return [(t, e) for t, _, e in stream], truth, until
