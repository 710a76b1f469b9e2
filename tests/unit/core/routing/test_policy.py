"""The routing policy: SPEC defaults, validation with clear errors, loading file + templates + env."""

from __future__ import annotations

import base64
from datetime import time, timedelta
from pathlib import Path

import pytest

from streams.core.routing.policy import (
    DEFAULT_POLICY,
    TEMPLATE_IDS,
    LadderRung,
    PolicyError,
    policy_from_mapping,
)
from streams.policy_loader import DEFAULT_TEMPLATE_DIR, load_policy, load_policy_from_env, read_templates
from tests.support.shared import REPO

ROOT = REPO
SAMPLE = ROOT / "deploy" / "policy.sample.toml"
HEX_KEY = "hex:" + "ab" * 32


def test_defaults_are_specs() -> None:
    p = DEFAULT_POLICY
    assert (p.quiet_hours_start, p.quiet_hours_end) == (time(21), time(8))
    assert p.collection_cap_per_day == 2
    assert p.bureau_lead_time == timedelta(hours=24)
    assert p.bureau_lead_time_from == "created_at"
    assert (p.contact_window_start, p.contact_window_end) == (time(8), time(21))
    assert p.max_attempts_per_day == 3
    assert {b: r.action for b, r in p.ladder.items()} == {
        "M1": "AUTO_REMINDER",
        "M2": "PHONE",
        "M3": "AGENCY",
        "M4": "AGENCY",
        "M5": "AGENCY",
        "M6": "AGENCY",
        "M7": "LEGAL",
    }
    assert p.partners == {}


def test_empty_mapping_gives_the_defaults() -> None:
    assert policy_from_mapping({}) == DEFAULT_POLICY


def test_sample_file_states_exactly_the_defaults() -> None:
    loaded = load_policy(str(SAMPLE), environ={})
    default = load_policy(None, environ={})
    assert loaded == default
    assert set(loaded.templates) == set(TEMPLATE_IDS)


def test_every_knob_can_be_set() -> None:
    p = policy_from_mapping(
        {
            "notifications": {
                "quiet_hours_start": "22:00",
                "quiet_hours_end": "07:30",
                "collection_cap_per_day": 1,
            },
            "templates": {"default_locale": "en", "dir": "x"},
            "bureau": {"lead_time": "1d12h", "lead_time_from": "not_before"},
            "collections": {
                "contact_window_start": "09:00",
                "contact_window_end": "20:00",
                "max_attempts_per_day": 5,
                "ladder": {
                    "M2": {"action": "PHONE_SENIOR", "max_attempts_per_day": 6},
                    "M8": "WRITE_OFF_REVIEW",
                },
            },
            "partner_defaults": {"mode": "digest", "digest_time": "06:00", "timezone": "Asia/Hong_Kong"},
            "partners": {
                "P1": {"key": HEX_KEY},
                "P2": {"key": HEX_KEY, "mode": "REALTIME", "digest_time": "05:00", "timezone": "UTC"},
            },
            "state": {"retention": "60d", "digest_memory": "1d"},
        }
    )
    assert (p.quiet_hours_start, p.quiet_hours_end, p.collection_cap_per_day) == (time(22), time(7, 30), 1)
    assert p.default_locale == "en" and p.template_dir == "x"
    assert p.bureau_lead_time == timedelta(hours=36) and p.bureau_lead_time_from == "not_before"
    assert (p.contact_window_start, p.contact_window_end, p.max_attempts_per_day) == (time(9), time(20), 5)
    assert p.ladder["M2"] == LadderRung("PHONE_SENIOR", 6)
    assert p.ladder["M1"] == LadderRung("AUTO_REMINDER")  # untouched rungs keep the default
    assert p.rung("M8").action == "WRITE_OFF_REVIEW"
    assert p.partners["P1"].mode == "DIGEST" and p.partners["P1"].digest_time == time(6)
    assert p.partners["P1"].timezone == "Asia/Hong_Kong" and p.partners["P1"].key == bytes.fromhex("ab" * 32)
    assert p.partners["P2"].mode == "REALTIME" and p.partners["P2"].timezone == "UTC"
    assert p.retention == timedelta(days=60) and p.digest_memory == timedelta(days=1)


def test_rung_falls_back_to_the_nearest_younger_bucket() -> None:
    assert DEFAULT_POLICY.rung("M9").action == "LEGAL"
    assert DEFAULT_POLICY.rung("M0") is None


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"notifcations": {}}, "unknown section"),
        ({"notifications": {"quiet_hour_start": "21:00"}}, "unknown key(s) quiet_hour_start"),
        ({"notifications": {"quiet_hours_start": "9pm"}}, "notifications.quiet_hours_start"),
        ({"notifications": {"quiet_hours_end": "24:00"}}, "notifications.quiet_hours_end"),
        ({"notifications": {"collection_cap_per_day": -1}}, "collection_cap_per_day"),
        ({"notifications": {"collection_cap_per_day": 2.5}}, "collection_cap_per_day"),
        ({"notifications": {"collection_cap_per_day": True}}, "collection_cap_per_day"),
        ({"bureau": {"lead_time": 24}}, "bureau.lead_time: expected a duration"),
        ({"bureau": {"lead_time": "24 hours"}}, "bureau.lead_time"),
        ({"bureau": {"lead_time_from": "sent_at"}}, "bureau.lead_time_from"),
        ({"collections": {"ladder": {"M0": "PHONE"}}}, "collections.ladder.M0"),
        ({"collections": {"ladder": {"M2": "phone"}}}, "UPPER_CASE"),
        ({"collections": {"ladder": {"M2": "CLOSE"}}}, "other than CLOSE"),
        ({"collections": {"contact_window_start": "08:00", "contact_window_end": "08:00"}}, "must differ"),
        ({"templates": {"default_locale": "fr"}}, "templates.default_locale"),
        ({"partners": {"P1": {}}}, "exactly one of key"),
        ({"partners": {"P1": {"key": HEX_KEY, "key_env": "X"}}}, "exactly one of key"),
        ({"partners": {"P1": {"key": "short"}}}, "at least 32 bytes"),
        ({"partners": {"P1": {"key": "hex:zz"}}}, "not valid hex"),
        ({"partners": {"P1": {"key_env": "NOPE"}}}, "NOPE is not set"),
        ({"partners": {"P1": {"key": HEX_KEY, "mode": "WEEKLY"}}}, "partners.P1.mode"),
        ({"partners": {"P1": {"key": HEX_KEY, "timezone": "Mars/Olympus"}}}, "partners.P1.timezone"),
        ({"partners": {"P1": {"key": HEX_KEY, "colour": "red"}}}, "unknown key(s) colour"),
        ({"state": {"retention": "1h"}}, "at least 1d"),
    ],
)
def test_invalid_values_are_named(mapping: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as info:
        policy_from_mapping(mapping)
    assert message in str(info.value)


def test_partner_keys_from_the_environment_in_every_format() -> None:
    raw = bytes(range(32))
    env = {
        "K_HEX": "hex:" + raw.hex(),
        "K_B64": "base64:" + base64.b64encode(raw).decode(),
        "K_TXT": "x" * 40,
    }
    p = policy_from_mapping(
        {"partners": {"A": {"key_env": "K_HEX"}, "B": {"key_env": "K_B64"}, "C": {"key_env": "K_TXT"}}},
        env=env,
    )
    assert p.partners["A"].key == raw and p.partners["B"].key == raw and p.partners["C"].key == b"x" * 40


def test_partner_key_is_never_printed() -> None:
    p = policy_from_mapping({"partners": {"A": {"key": HEX_KEY}}})
    assert "ab" * 32 not in repr(p) and "key=" not in repr(p.partners["A"])


def test_templates_are_validated() -> None:
    good = read_templates(DEFAULT_TEMPLATE_DIR)
    assert policy_from_mapping({}, templates=good).templates["due_soon"]["en"] == good["due_soon"]["en"]
    missing = {k: v for k, v in good.items() if k != "correction"}
    with pytest.raises(PolicyError, match="correction"):
        policy_from_mapping({}, templates=missing)
    no_en = {**good, "due_soon": {"zh-CN": good["due_soon"]["zh-CN"]}}
    with pytest.raises(PolicyError, match="due_soon.*en"):
        policy_from_mapping({}, templates=no_en)
    unknown = {**good, "due_soon": {**good["due_soon"], "en": "Pay ${amount} by ${deadline}"}}
    with pytest.raises(PolicyError, match="deadline"):
        policy_from_mapping({}, templates=unknown)
    malformed = {**good, "due_soon": {**good["due_soon"], "en": "Pay $ now"}}
    with pytest.raises(PolicyError, match="malformed"):
        policy_from_mapping({}, templates=malformed)


def test_load_policy_resolves_template_dir_relative_to_the_file(tmp_path: Path) -> None:
    templates = tmp_path / "msgs"
    templates.mkdir()
    for source in DEFAULT_TEMPLATE_DIR.glob("*.txt"):
        (templates / source.name).write_text(
            source.read_text(encoding="utf-8").replace("Reminder", "Heads-up"), encoding="utf-8"
        )
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[templates]\ndir = "msgs"\n[partners.P1]\nkey_env = "MY_KEY"\n', encoding="utf-8")
    p = load_policy(str(policy_file), environ={"MY_KEY": "k" * 32})
    assert p.templates["due_soon"]["en"].startswith("Heads-up")
    assert p.template_dir == str(templates)
    assert p.partners["P1"].key == b"k" * 32


def test_load_policy_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bureau]\nlead_time = 'soon'\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="bad.toml: bureau.lead_time"):
        load_policy(str(bad), environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[bureau\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(str(broken), environ={})
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(str(tmp_path / "absent.toml"), environ={})


def test_load_policy_from_env(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.toml"
    policy_file.write_text("[notifications]\ncollection_cap_per_day = 5\n", encoding="utf-8")
    assert load_policy_from_env({"DUEWATCH_POLICY_FILE": str(policy_file)}).collection_cap_per_day == 5
    assert load_policy_from_env({}).collection_cap_per_day == 2


def test_templates_state_amount_due_date_days_and_consequences() -> None:
    """Every collection-type template speaks of the amount, the due date, the days and the credit record."""
    t = read_templates(DEFAULT_TEMPLATE_DIR)
    for template_id in ("overdue_opened", "overdue_bucket_up", "negative_report_notice"):
        for locale in ("zh-CN", "en"):
            text = t[template_id][locale]
            for placeholder in ("${amount}", "${due_date}", "${days_overdue}", "${penalty}", "${late_fee}"):
                assert placeholder in text, (template_id, locale, placeholder)
            assert ("credit" in text) if locale == "en" else ("征信" in text or "信用记录" in text)
