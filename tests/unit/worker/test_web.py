"""GET /loans/{id}/standing?as_of= without a broker (SPEC §7.2): what each status means. The
routing, the token and the answer from any worker are tested on real workers
(tests/integration/test_standing_stream.py)."""

from __future__ import annotations

import json

from streams.core import statecodec
from streams.core.config import EngineConfig
from streams.core.dates import parse_instant
from streams.replay import Replay
from streams.worker.web import standing_view

CFG = EngineConfig()
SCHEDULE = {
    "topic": "loan.schedules",
    "key": "L1",
    "value": {
        "loan_id": "L1", "borrower_id": "B1", "revision": 1, "effective_at": "2026-03-01T10:00:00+08:00",
        "currency": "CNY", "timezone": "Asia/Shanghai", "status": "ACTIVE", "penalty_rate_bps": 3650,
        "installments": [{"seq": 1, "due_date": "2026-03-15", "principal": 100_000, "interest": 5_000, "fee": 0}],
        "contact": {"locale": "en", "channels": ["sms"]},
    },
}  # fmt: skip
CLOCK = parse_instant("2026-04-01T00:00:00+08:00")


def stored() -> bytes:
    replay = Replay()
    replay.run([SCHEDULE], CLOCK)
    return statecodec.dumps(replay.loans["L1"])


def test_the_standing_at_an_instant_the_clock_has_passed() -> None:
    status, body = standing_view(stored(), "2026-03-20T08:00:00+08:00", CLOCK, CFG)
    assert status == 200
    assert (body["dpd"], body["bucket"], body["open"], body["penalty_accrued"]) == (5, "M1", True, 5 * 105)
    assert body["as_of"] == "2026-03-20T08:00:00+08:00" and json.loads(json.dumps(body)) == body
    # a '+' that was not URL-encoded arrives as a space
    assert standing_view(stored(), "2026-03-20T08:00:00 08:00", CLOCK, CFG) == (status, body)
    assert standing_view(stored(), "2026-03-20T00:00:00Z", CLOCK, CFG)[0] == 200


def test_the_future_is_not_known_yet() -> None:
    status, body = standing_view(stored(), "2026-04-01T00:00:01+08:00", CLOCK, CFG)
    assert status == 422 and "later than the tick clock" in body["error"]
    assert parse_instant(body["tick_clock"]) == CLOCK
    assert standing_view(stored(), "2026-04-01T00:00:00+08:00", CLOCK, CFG)[0] == 200  # the clock itself
    # no tick seen yet since the worker started: the loan's own processed instant is the clock known
    cursor = statecodec.loads(stored()).carry.cursor
    assert cursor is not None and cursor < CLOCK
    assert standing_view(stored(), cursor.isoformat(), None, CFG)[0] == 200
    assert standing_view(stored(), "2026-03-31T12:00:00+08:00", None, CFG)[0] == 422


def test_before_the_first_schedule_and_bad_instants() -> None:
    status, body = standing_view(stored(), "2026-03-01T09:59:59+08:00", CLOCK, CFG)
    assert status == 404 and "no schedule" in body["error"]
    for bad in (None, "", "2026-03-20", "yesterday"):
        status, body = standing_view(stored(), bad, CLOCK, CFG)
        assert status == 400 and "as_of" in body["error"], bad
