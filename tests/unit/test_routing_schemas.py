"""Every router output fits its Avro contract in schemas/ and survives the codec round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings

from streams.contracts import codec
from streams.core.routing import route_all
from tests.unit.test_routing_support import loan_histories, make_policy

RECORD = {"notify.requests": "Notification", "bureau.records": "BureauRecord", "partner.shares": "PartnerShare",
          "collections.tasks": "CollectionTask"}


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
    disputes = [{"dispute_id": "d1", "loan_id": events[0]["loan_id"], "status": "OPEN", "at": events[0]["as_of"],
                 "note": "borrower says paid"}]
    for topic, _, value in route_all(events, disputes, until, make_policy()):
        name = RECORD[topic]
        decoded = codec.decode(name, codec.encode(name, value))
        assert _same(decoded, value), (name, value, decoded)
        assert codec.to_json(name, value)
