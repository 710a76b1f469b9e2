"""Every router output fits its Avro contract in schemas/ and survives the codec round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings

from streams.contracts import codec
from streams.core.routing import route_all
from tests.support.routing import loan_histories, make_policy

RECORD = {
    "notify.requests": "Notification",
    "bureau.records": "BureauRecord",
    "partner.shares": "PartnerShare",
    "collections.tasks": "CollectionTask",
}


def _defaults(name: str) -> dict[str, Any]:
    return {f["name"]: f["default"] for f in codec.load_schema(name)["fields"] if "default" in f}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a.astimezone(UTC) == b.astimezone(UTC)
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loan_histories())
def test_outputs_encode_with_the_avro_schemas(history: tuple) -> None:
    events, until = history
    disputes = [
        {
            "dispute_id": "d1",
            "loan_id": events[0]["loan_id"],
            "status": "OPEN",
            "at": events[0]["as_of"],
            "note": "borrower says paid",
        }
    ]
    for topic, _, value in route_all(events, disputes, until, make_policy()):
        name = RECORD[topic]
        decoded = codec.decode(name, codec.encode(name, value))
        # a field the router does not write (one added to the schema with a default since)
        # comes back as that default; every field it writes comes back as written
        defaults = _defaults(name)
        added = {k: v for k, v in decoded.items() if k not in value}
        assert all(k in defaults and v == defaults[k] for k, v in added.items()), (name, added)
        assert _same({k: v for k, v in decoded.items() if k in value}, value), (name, value, decoded)
        assert codec.to_json(name, value)
