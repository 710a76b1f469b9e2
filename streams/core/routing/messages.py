"""Building one notification request (SPEC §5): channel, locale, quiet hours, rendered text.

Shared by the notification router and the bureau router (which writes its negative-report
NOTICE to ``notify.requests`` itself), so both follow the same rules: push first and SMS
as fallback among the consented channels; the borrower's locale (else the policy's
default); ``created_at`` is the source event's ``as_of`` and ``not_before`` is that moved
out of the quiet hours of the loan's time zone; the text comes from the policy's template
files and states the amount, the due date, the days overdue and what follows for the
borrower. A request with no consented channel cannot be delivered: it is written with
disposition DROPPED so the gap is auditable.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from .common import (
    DUE_SOON,
    NOTIFY_TOPIC,
    ONE_DAY,
    Output,
    RoutingError,
    ev_contact,
    ev_date,
    ev_instant,
    ev_int,
    ev_str,
    ev_zone,
    format_date,
    format_local_time,
    format_money,
    loan_ref,
    next_allowed,
)
from .policy import SUPPORTED_LOCALES, Policy

REMINDER = "REMINDER"
COLLECTION = "COLLECTION"
CONFIRMATION = "CONFIRMATION"
NOTICE = "NOTICE"
CORRECTION = "CORRECTION"

SEND = "SEND"
DROPPED = "DROPPED"

CHANNEL_ORDER = ("push", "sms")


def pick_channels(consented: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(channel, fallback_channel): the first of push, sms the borrower consented to, then the next."""
    ordered = [c for c in CHANNEL_ORDER if c in consented]
    return (ordered[0] if ordered else None), (ordered[1] if len(ordered) > 1 else None)


def pick_locale(locale: str | None, policy: Policy) -> str:
    """The borrower's locale when the templates have it, else the policy's default."""
    return locale if locale in SUPPORTED_LOCALES else policy.default_locale


def render(policy: Policy, template_id: str, locale: str, params: Mapping[str, str]) -> str:
    """The template text with its ``${name}`` placeholders filled; a missing parameter is an error."""
    try:
        return string.Template(policy.template(template_id, locale)).substitute(params).strip()
    except KeyError as exc:
        raise RoutingError(f"template {template_id}.{locale} needs parameter {exc.args[0]}") from None


def _reference_due_date(event: Mapping[str, Any]) -> date:
    """The due date a message talks about: the oldest past-due one, else the episode's (D = first
    delinquency date − 1), else the event's own date."""
    oldest = ev_date(event, "oldest_past_due_date")
    if oldest is not None:
        return oldest
    first = ev_date(event, "first_delinquency_date")
    if first is not None:
        return first - ONE_DAY
    return ev_date(event, "as_of_date") or date.min


def event_params(
    event: Mapping[str, Any], template_id: str, locale: str, *, report_after: datetime | None = None
) -> dict[str, str]:
    """The strings a template may use, worded for ``locale`` from the event's integer fields."""
    currency = ev_str(event, "currency")
    as_of_date = ev_date(event, "as_of_date")
    if as_of_date is None:
        raise RoutingError("event field 'as_of_date' is required")
    params = {
        "loan_ref": loan_ref(ev_str(event, "loan_id")),
        "currency": currency,
        "as_of_date": format_date(as_of_date, locale),
    }
    if ev_str(event, "type") == DUE_SOON:
        due = ev_date(event, "due_date")
        amount = event.get("amount_due")
        if due is None or isinstance(amount, bool) or not isinstance(amount, int):
            raise RoutingError("a DUE_SOON event needs due_date and amount_due")
        params.update(
            amount=format_money(amount, currency, locale),
            due_date=format_date(due, locale),
            days_left=str((due - as_of_date).days),
        )
        return params
    due = _reference_due_date(event)
    dpd = ev_int(event, "dpd")
    if template_id == "overdue_cured" and dpd == 0 and due <= as_of_date:
        dpd = (as_of_date - due).days  # how late the borrower was when paying
    params.update(
        amount=format_money(ev_int(event, "total_overdue"), currency, locale),
        due_date=format_date(due, locale),
        days_overdue=str(dpd),
        penalty=format_money(ev_int(event, "penalty_accrued"), currency, locale),
        late_fee=format_money(ev_int(event, "late_fees"), currency, locale),
        installments=str(ev_int(event, "overdue_installments")),
    )
    if report_after is not None:
        params["report_after"] = format_local_time(report_after, ev_zone(event), locale)
    return params


def build_notification(
    policy: Policy,
    event: Mapping[str, Any],
    *,
    notification_id: str,
    source_event_id: str,
    kind: str,
    template: str,
    params_for: Callable[[str], Mapping[str, str]],
    created_at: datetime,
    disposition: str = SEND,
) -> dict[str, Any]:
    """One Notification value (SPEC §5 fields plus ``kind``) for the borrower of ``event``'s loan.

    ``params_for(locale) -> dict[str, str]`` words the parameters once the locale is known.
    """
    locale_wanted, consented = ev_contact(event)
    locale = pick_locale(locale_wanted, policy)
    channel, fallback = pick_channels(consented)
    params = params_for(locale)
    tz = ev_zone(event)
    return {
        "notification_id": notification_id,
        "source_event_id": source_event_id,
        "kind": kind,
        "disposition": disposition if channel is not None else DROPPED,
        "borrower_id": ev_str(event, "borrower_id"),
        "loan_id": ev_str(event, "loan_id"),
        "channel": channel,
        "fallback_channel": fallback,
        "locale": locale,
        "template": template,
        "params": dict(params),
        "text": render(policy, template, locale, params),
        "created_at": created_at.astimezone(tz),
        "not_before": next_allowed(created_at, tz, policy.quiet_hours_start, policy.quiet_hours_end),
    }


def correction_for(
    policy: Policy, original: Mapping[str, Any], retraction: Mapping[str, Any], notification_id: str
) -> dict[str, Any]:
    """The CORRECTION that tells the borrower to disregard ``original`` (a request already due)."""
    tz = ev_zone(retraction)
    sent = original["not_before"].astimezone(tz)
    created_at = ev_instant(retraction, "as_of")

    def params(locale: str) -> dict[str, str]:
        return {
            "loan_ref": loan_ref(ev_str(retraction, "loan_id")),
            "original_date": format_date(sent.date(), locale),
            "original_time": f"{sent.hour:02d}:{sent.minute:02d}",
        }

    return build_notification(
        policy,
        retraction,
        notification_id=notification_id,
        source_event_id=ev_str(retraction, "event_id"),
        kind=CORRECTION,
        template="correction",
        params_for=params,
        created_at=created_at,
    )


def as_output(notification: Mapping[str, Any]) -> Output:
    """The (topic, key, value) triple of a notification: keyed by borrower_id."""
    return NOTIFY_TOPIC, notification["borrower_id"], dict(notification)
