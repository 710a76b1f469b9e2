"""The routers' policy (SPEC §5): every knob, its documented default, and the validator.

A bank changes quiet hours, caps, the collections ladder, the bureau lead time, partner
modes and keys, the digest time and the message wording by editing a TOML file
(``DUEWATCH_POLICY_FILE``), never the code. This module is pure: :func:`policy_from_mapping`
takes the parsed TOML, the environment to resolve partner keys from, and the template
texts already read, and returns an immutable :class:`Policy` or raises :class:`PolicyError`
naming the offending key. Reading the file, the environment and the template directory
is the edge's job (``streams.policy_loader``).

File layout (every key optional; ``deploy/policy.sample.toml`` shows them all)::

    [notifications]  quiet_hours_start = "21:00", quiet_hours_end = "08:00", collection_cap_per_day = 2
    [templates]      dir = "...", default_locale = "zh-CN"
    [bureau]         lead_time = "24h", lead_time_from = "created_at"
    [collections]    contact_window_start = "08:00", contact_window_end = "21:00", max_attempts_per_day = 3
    [collections.ladder]  M1 = "AUTO_REMINDER", M2 = "PHONE", M3..M6 = "AGENCY", M7 = "LEGAL"
    [partner_defaults]    mode = "REALTIME", digest_time = "07:00", timezone = "Asia/Shanghai"
    [partners.<id>]       key = "hex:…" | key_env = "ENV_VAR_NAME", mode, digest_time, timezone
    [state]          retention = "35d", digest_memory = "3d"
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

from streams.core.dates import is_zone

SUPPORTED_LOCALES: tuple[str, ...] = ("zh-CN", "en")

REALTIME = "REALTIME"
DIGEST = "DIGEST"
PARTNER_MODES = (REALTIME, DIGEST)

LEAD_FROM_CREATED_AT = "created_at"
LEAD_FROM_NOT_BEFORE = "not_before"

MIN_PARTNER_KEY_BYTES = 32

# Template ids and the placeholders each may use (string.Template syntax: ``${amount}``).
_EVENT_PARAMS = frozenset(
    {
        "loan_ref",
        "currency",
        "amount",
        "due_date",
        "days_overdue",
        "penalty",
        "late_fee",
        "installments",
        "as_of_date",
    }
)
TEMPLATE_PARAMS: Mapping[str, frozenset[str]] = {
    "due_soon": frozenset({"loan_ref", "currency", "amount", "due_date", "days_left", "as_of_date"}),
    "overdue_opened": _EVENT_PARAMS,
    "overdue_bucket_up": _EVENT_PARAMS,
    "overdue_cured": _EVENT_PARAMS,
    "overdue_cured_in_grace": _EVENT_PARAMS,
    "overdue_closed": _EVENT_PARAMS,
    "negative_report_notice": _EVENT_PARAMS | {"report_after"},
    "write_off_notice": _EVENT_PARAMS | {"report_after"},
    "correction": frozenset({"loan_ref", "original_date", "original_time"}),
}
TEMPLATE_IDS: tuple[str, ...] = tuple(TEMPLATE_PARAMS)


class PolicyError(ValueError):
    """A policy file value that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True)
class LadderRung:
    """The collections action for one bucket, and an optional attempt cap of its own."""

    action: str
    max_attempts_per_day: int | None = None


def default_ladder() -> dict[str, LadderRung]:
    """SPEC §5's ladder: M1 automated reminders, M2 phone, M3–M6 agency, M7 legal review."""
    actions = {
        "M1": "AUTO_REMINDER",
        "M2": "PHONE",
        "M3": "AGENCY",
        "M4": "AGENCY",
        "M5": "AGENCY",
        "M6": "AGENCY",
        "M7": "LEGAL",
    }
    return {bucket: LadderRung(action) for bucket, action in actions.items()}


@dataclass(frozen=True)
class PartnerPolicy:
    """How one partner receives shares: its HMAC key (never printed), mode and digest clock."""

    partner_id: str
    key: bytes = field(repr=False)
    mode: str = REALTIME
    digest_time: time = time(7, 0)
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class Policy:
    """Every routing knob with SPEC §5's default. Immutable; build it with :func:`policy_from_mapping`.

    ``templates`` maps template id → locale → template text; the pure routers never read
    files, so the loader passes the texts in here.
    """

    # Notifications: quiet hours [start, end) in the loan's zone (start == end: none), cap per local day.
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(8, 0)
    collection_cap_per_day: int = 2
    default_locale: str = "zh-CN"
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    template_dir: str | None = None
    # Bureau: negative records wait for the episode's NOTICE plus this lead time.
    bureau_lead_time: timedelta = timedelta(hours=24)
    bureau_lead_time_from: str = LEAD_FROM_CREATED_AT
    # Collections: ladder by bucket, contact window in the loan's zone, daily attempt cap.
    ladder: Mapping[str, LadderRung] = field(default_factory=default_ladder)
    contact_window_start: time = time(8, 0)
    contact_window_end: time = time(21, 0)
    max_attempts_per_day: int = 3
    # Partners: only those configured here (with a key) ever receive anything.
    partners: Mapping[str, PartnerPolicy] = field(default_factory=dict)
    # State: how long routers remember source events (corrections, dedupe) and sent digests.
    retention: timedelta = timedelta(days=35)
    digest_memory: timedelta = timedelta(days=3)

    def template(self, template_id: str, locale: str) -> str:
        """The template text for ``template_id`` in ``locale`` (falling back to the default locale)."""
        by_locale = self.templates.get(template_id)
        if not by_locale:
            raise PolicyError(f"no template {template_id!r}: the policy was built without templates")
        text = by_locale.get(locale) or by_locale.get(self.default_locale)
        if text is None:
            raise PolicyError(f"template {template_id!r} has no {locale!r} or {self.default_locale!r} text")
        return text

    def rung(self, bucket: str) -> LadderRung | None:
        """The ladder rung for ``bucket``: its own, else the nearest younger bucket's (M9 → M7's)."""
        if bucket in self.ladder:
            return self.ladder[bucket]
        try:
            rank = int(bucket[1:])
        except ValueError:
            return None
        below = [(int(b[1:]), r) for b, r in self.ladder.items() if int(b[1:]) < rank]
        return max(below, key=lambda pair: pair[0])[1] if below else None


DEFAULT_POLICY = Policy()
"""SPEC's defaults without templates (use ``streams.policy_loader.load_policy(None)`` to render)."""


# --- parsing helpers ------------------------------------------------------------------------------

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ACTION = re.compile(r"^[A-Z][A-Z0-9_]*$")
_BUCKET = re.compile(r"^M([1-9]\d*)$")


def parse_hhmm(value: Any, where: str) -> time:
    """A wall time from ``"HH:MM"`` (or a TOML local time); PolicyError names ``where``."""
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    if isinstance(value, str):
        match = _HHMM.match(value)
        if match:
            return time(int(match.group(1)), int(match.group(2)))
    raise PolicyError(f'{where}: expected a local time like "21:00", got {value!r}')


def parse_duration(value: Any, where: str) -> timedelta:
    """A duration from ``"24h"``, ``"1d12h"``, ``"90m"``, ``"30s"``; PolicyError names ``where``."""
    if isinstance(value, str) and value:
        match = _DURATION.match(value)
        if match and any(match.groups()):
            d, h, m, s = (int(g) if g else 0 for g in match.groups())
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise PolicyError(f'{where}: expected a duration like "24h", "1d" or "90m", got {value!r}')


def decode_key(value: str, where: str) -> bytes:
    """Key bytes from ``hex:<hex>``, ``base64:<b64>`` or plain UTF-8 text."""
    try:
        if value.startswith("hex:"):
            return bytes.fromhex(value[4:])
        if value.startswith("base64:"):
            return base64.b64decode(value[7:], validate=True)
    except (ValueError, binascii.Error):
        raise PolicyError(f"{where}: the key is not valid {value.split(':', 1)[0]}") from None
    return value.encode("utf-8")


def _section(d: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    value = d.get(name, {})
    if not isinstance(value, Mapping):
        raise PolicyError(f"[{name}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise PolicyError(
            f"[{name}]: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return value


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(f"{where}: expected an integer ≥ {minimum}, got {value!r}")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise PolicyError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")


def _zone(value: Any, where: str) -> str:
    if isinstance(value, str) and is_zone(value):
        return value
    raise PolicyError(f'{where}: expected an IANA time zone like "Asia/Shanghai", got {value!r}')


def validate_templates(templates: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Check every template id has zh-CN and en text using only its known placeholders."""
    checked: dict[str, dict[str, str]] = {}
    for template_id, allowed in TEMPLATE_PARAMS.items():
        by_locale = templates.get(template_id) or {}
        checked[template_id] = {}
        for locale in SUPPORTED_LOCALES:
            text = by_locale.get(locale)
            if not isinstance(text, str) or not text.strip():
                raise PolicyError(f"template {template_id!r} has no {locale} text")
            tpl = string.Template(text)
            if not tpl.is_valid():
                raise PolicyError(f"template {template_id}.{locale}: malformed placeholder (use ${{name}})")
            unknown = sorted(set(tpl.get_identifiers()) - allowed)
            if unknown:
                raise PolicyError(
                    f"template {template_id}.{locale}: unknown placeholder(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            checked[template_id][locale] = text
    return checked


def _partner(pid: str, raw: Any, defaults: Mapping[str, Any], env: Mapping[str, str]) -> PartnerPolicy:
    where = f"partners.{pid}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"[{where}] must be a table")
    unknown = sorted(set(raw) - {"key", "key_env", "mode", "digest_time", "timezone"})
    if unknown:
        raise PolicyError(f"[{where}]: unknown key(s) {', '.join(unknown)}")
    if ("key" in raw) == ("key_env" in raw):
        raise PolicyError(
            f"[{where}]: set exactly one of key (inline) or key_env (environment variable name)"
        )
    if "key" in raw:
        if not isinstance(raw["key"], str):
            raise PolicyError(f"{where}.key: expected a string")
        key = decode_key(raw["key"], f"{where}.key")
    else:
        name = raw["key_env"]
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}.key_env: expected an environment variable name")
        value = env.get(name)
        if not value:
            raise PolicyError(f"{where}.key_env: environment variable {name} is not set")
        key = decode_key(value, f"{where}.key_env ({name})")
    if len(key) < MIN_PARTNER_KEY_BYTES:
        raise PolicyError(f"{where}: the key must be at least {MIN_PARTNER_KEY_BYTES} bytes, got {len(key)}")
    mode = raw.get("mode", defaults.get("mode", REALTIME))
    mode = _choice(mode.upper() if isinstance(mode, str) else mode, f"{where}.mode", PARTNER_MODES)
    return PartnerPolicy(
        partner_id=pid,
        key=key,
        mode=mode,
        digest_time=parse_hhmm(
            raw.get("digest_time", defaults.get("digest_time", "07:00")), f"{where}.digest_time"
        ),
        timezone=_zone(raw.get("timezone", defaults.get("timezone", "Asia/Shanghai")), f"{where}.timezone"),
    )


def policy_from_mapping(
    d: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    templates: Mapping[str, Mapping[str, str]] | None = None,
) -> Policy:
    """Validate a parsed policy file and return the :class:`Policy` (defaults for what is absent).

    ``env`` resolves ``key_env`` partner keys (the loader passes ``os.environ``);
    ``templates`` are the texts read from the template directory (validated here: both
    locales, known placeholders only). Unknown keys are errors, so a typo never silently
    falls back to a default.
    """
    if not isinstance(d, Mapping):
        raise PolicyError("the policy must be a table")
    sections = {
        "notifications",
        "templates",
        "bureau",
        "collections",
        "partner_defaults",
        "partners",
        "state",
    }
    unknown = sorted(set(d) - sections)
    if unknown:
        raise PolicyError(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(sorted(sections))}")
    env = env or {}
    base = Policy()

    n = _section(d, "notifications", {"quiet_hours_start", "quiet_hours_end", "collection_cap_per_day"})
    t = _section(d, "templates", {"dir", "default_locale"})
    b = _section(d, "bureau", {"lead_time", "lead_time_from"})
    c = _section(
        d, "collections", {"contact_window_start", "contact_window_end", "max_attempts_per_day", "ladder"}
    )
    pd = _section(d, "partner_defaults", {"mode", "digest_time", "timezone"})
    s = _section(d, "state", {"retention", "digest_memory"})

    ladder = dict(base.ladder)
    raw_ladder = c.get("ladder", {})
    if not isinstance(raw_ladder, Mapping):
        raise PolicyError("[collections.ladder] must be a table of bucket = action")
    for bucket, rung in raw_ladder.items():
        where = f"collections.ladder.{bucket}"
        if not _BUCKET.match(bucket):
            raise PolicyError(f"{where}: bucket names are M1, M2, ... (M0 is not delinquent)")
        if isinstance(rung, str):
            rung = {"action": rung}
        if not isinstance(rung, Mapping) or set(rung) - {"action", "max_attempts_per_day"}:
            raise PolicyError(f"{where}: expected an action name or {{action, max_attempts_per_day}}")
        action = rung.get("action")
        if not isinstance(action, str) or not _ACTION.match(action) or action == "CLOSE":
            raise PolicyError(
                f"{where}.action: expected an UPPER_CASE action other than CLOSE, got {action!r}"
            )
        cap = rung.get("max_attempts_per_day")
        ladder[bucket] = LadderRung(
            action, None if cap is None else _int(cap, f"{where}.max_attempts_per_day")
        )

    raw_partners = d.get("partners", {})
    if not isinstance(raw_partners, Mapping):
        raise PolicyError("[partners] must be a table of [partners.<id>] tables")
    if "mode" in pd:
        _choice(
            pd["mode"].upper() if isinstance(pd["mode"], str) else pd["mode"],
            "partner_defaults.mode",
            PARTNER_MODES,
        )
    partners = {pid: _partner(pid, raw, pd, env) for pid, raw in raw_partners.items()}

    default_locale = _choice(
        t.get("default_locale", base.default_locale), "templates.default_locale", SUPPORTED_LOCALES
    )
    template_dir = t.get("dir")
    if template_dir is not None and not isinstance(template_dir, str):
        raise PolicyError("templates.dir: expected a path string")

    retention = parse_duration(s.get("retention", "35d"), "state.retention")
    if retention < timedelta(days=1):
        raise PolicyError("state.retention: must be at least 1d (corrections need the original)")

    window = (
        parse_hhmm(c.get("contact_window_start", "08:00"), "collections.contact_window_start"),
        parse_hhmm(c.get("contact_window_end", "21:00"), "collections.contact_window_end"),
    )
    if window[0] == window[1]:
        raise PolicyError("collections.contact_window_start and _end must differ (the window would be empty)")

    return Policy(
        quiet_hours_start=parse_hhmm(n.get("quiet_hours_start", "21:00"), "notifications.quiet_hours_start"),
        quiet_hours_end=parse_hhmm(n.get("quiet_hours_end", "08:00"), "notifications.quiet_hours_end"),
        collection_cap_per_day=_int(
            n.get("collection_cap_per_day", base.collection_cap_per_day),
            "notifications.collection_cap_per_day",
        ),
        default_locale=default_locale,
        templates=validate_templates(templates) if templates is not None else {},
        template_dir=template_dir,
        bureau_lead_time=parse_duration(b.get("lead_time", "24h"), "bureau.lead_time"),
        bureau_lead_time_from=_choice(
            b.get("lead_time_from", LEAD_FROM_CREATED_AT),
            "bureau.lead_time_from",
            (LEAD_FROM_CREATED_AT, LEAD_FROM_NOT_BEFORE),
        ),
        ladder=ladder,
        contact_window_start=window[0],
        contact_window_end=window[1],
        max_attempts_per_day=_int(
            c.get("max_attempts_per_day", base.max_attempts_per_day), "collections.max_attempts_per_day"
        ),
        partners=partners,
        retention=retention,
        digest_memory=parse_duration(s.get("digest_memory", "3d"), "state.digest_memory"),
    )
