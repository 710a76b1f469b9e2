"""HTTP for operators: /health, /ready, /metrics, /loans/{loan_id} and
/loans/{loan_id}/standing?as_of=INSTANT on the worker's web port.

Faust's built-in /table and /router views are off (they would expose loan data and cluster
layout). With DUEWATCH_API_TOKEN set, the /loans routes need ``Authorization: Bearer <token>``.
/health, /ready and /metrics stay open: Kubernetes probes and Prometheus scrapes cannot present
a secret, and none of them carries loan data (metric labels are closed sets, never ids). The
/loans routes are answered by whichever worker owns the loan's partition (Faust's table routing
forwards the request there), so any worker answers for any loan.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..contracts import codec
from ..core import statecodec
from ..core.config import EngineConfig
from ..core.dates import parse_instant
from ..core.loan import wake_at
from ..core.standing import Folded, NoSchedule, standing_at
from ..core.timeline import walk

#: The tick clock of the partition a loan id belongs to on this worker (None: no tick seen yet).
Clock = Callable[[str], datetime | None]


def authorized(request: Request, token: str | None) -> bool:
    """True when no token is configured or the request carries it (constant-time compare)."""
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())


def loan_view(raw: bytes, cfg: EngineConfig, recent: int = 20) -> dict[str, Any]:
    """What an operator needs to see of one loan: where it stands and its recent transitions."""
    state = statecodec.loads(raw)
    carry = state.carry
    latest = max(state.schedules, key=lambda s: s.revision) if state.schedules else None
    events: list[dict[str, Any]] = []
    if state.schedules and carry.cursor is not None:
        horizon = carry.cursor
        _, history = walk(
            state.ledger(), state.origin, cfg, lambda at, _t: at <= horizon, state.retracted_ids()
        )
        events = [codec.to_json("OverdueEvent", e.to_dict()) for e in history[-recent:]]
    next_wake = wake_at(state, cfg)
    return {
        "loan_id": state.loan_id,
        "status": carry.status or (latest.status if latest else None),
        "currency": latest.currency if latest else None,
        "schedule_revisions": [s.revision for s in state.schedules],
        "repayments": len(state.repayments),
        "held_repayments": state.held,
        "processed_until": carry.cursor.isoformat() if carry.cursor else None,
        "open": carry.open,
        "bucket": carry.bucket,
        "total_overdue": carry.total_overdue,
        "penalty_accrued": carry.penalty,
        "late_fees": carry.late_fees,
        "first_delinquency_date": carry.first_delinquency_date.isoformat()
        if carry.first_delinquency_date
        else None,
        "next_wake_at": next_wake.isoformat() if next_wake else None,
        "retracted_events": len(state.retracted),
        "recent_transitions": events,
    }


def _as_of(text: str | None) -> datetime:
    """The ``as_of`` query parameter. A ``+`` of an offset that was not URL-encoded (``%2B``) arrives
    as a space; an ISO-8601 instant has no space before its offset, so it is read back as ``+``."""
    if not text:
        raise ValueError("as_of is required: an ISO-8601 instant with an offset (encode + as %2B)")
    try:
        return parse_instant(text)
    except ValueError:
        head, sep, tail = text.rpartition(" ")
        if sep and tail[:2].isdigit():
            return parse_instant(f"{head}+{tail}")
        raise ValueError(f"as_of is not an ISO-8601 instant with an offset: {text!r}") from None


def standing_view(
    raw: bytes, as_of: str | None, clock: datetime | None, cfg: EngineConfig
) -> tuple[int, dict]:
    """(HTTP status, JSON body) of GET /loans/{id}/standing?as_of= for the loan stored as ``raw``
    (SPEC §7.2). ``clock``: the partition's tick clock; without one yet (a worker that has just
    started), the last instant the loan itself was processed at is the clock known to have passed."""
    try:
        at = _as_of(as_of)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    state = statecodec.loads(raw)
    known = clock if clock is not None else state.carry.cursor
    if known is None or at > known:
        told = known.isoformat() if known is not None else "not started"
        return 422, {"error": f"as_of is later than the tick clock ({told}): the future is not known yet",
                     "tick_clock": known.isoformat() if known is not None else None}  # fmt: skip
    try:
        return 200, standing_at(state, at, cfg).to_json()
    except NoSchedule as exc:
        return 404, {"error": str(exc)}
    except Folded as exc:
        return 422, {"error": str(exc), "fold_point": exc.fold_point.isoformat()}


def add_routes(
    app: faust.App, loans: faust.types.TableT, cfg: EngineConfig, token: str | None, readiness, clock: Clock
) -> None:
    """Register the operator routes on ``app``'s web server."""

    def denied(web: View) -> Response:
        return web.json({"error": "unauthorized"}, status=401)

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        ok = readiness()
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def stored(web: View, request: Request, loan_id: str) -> tuple[Any, Response | None]:
        """The loan's stored state, or the response that refuses the request (401/403, 404)."""
        if not authorized(request, token):
            return None, denied(web)
        raw = loans.get(loan_id.encode())
        if raw is None:
            return None, web.json({"error": "unknown loan"}, status=404)
        return raw, None

    @app.page("/loans/{loan_id}")
    @app.table_route(table=loans, match_info="loan_id")
    async def loan(web: View, request: Request, loan_id: str) -> Response:
        raw, refused = stored(web, request, loan_id)
        if refused is not None:
            return refused
        return web.json(loan_view(raw, cfg))

    @app.page("/loans/{loan_id}/standing")
    @app.table_route(table=loans, match_info="loan_id")
    async def standing(web: View, request: Request, loan_id: str) -> Response:
        raw, refused = stored(web, request, loan_id)
        if refused is not None:
            return refused
        status, body = standing_view(raw, request.query.get("as_of"), clock(loan_id), cfg)
        return web.json(body, status=status)
