"""The numbers behind the risk report's pictures (SPEC §7.4), from events and schedules alone.

Every figure is computed from the overdue events after retractions (what SPEC §4's consumers
see) and the loans' schedules, never from the detector's state, so the report reads the same
from a replay file and from the topics. The rules, which the report's notes repeat:

- A loan is *in the book* from its first schedule's ``effective_at`` until a CLOSED schedule
  takes effect; a written-off loan stays in the book as "written off". It is in the bucket of
  its open episode (the bucket of its latest OVERDUE_OPENED or BUCKET_CHANGED), and in M0 when
  no episode is open: never overdue, cured, or past due but still within its grace days.
- Days and month-ends are those of the report's time zone (the one most of the book's loans
  use); a day's point is the book at the end of that day, the last one at ``as_of``.
- Roll rates compare each loan at one month-end with the same loan at the next, over every
  pair of consecutive complete month-ends; a row's shares add up to 1 over the buckets,
  written off and closed. The roll rate of b is the share in b that is in b+1 a month later;
  the cure rate of b the share that is in M0.
- Vintage: the disbursement date is the first schedule's first due date minus one period (the
  gap between its first two due dates, a month when that gap is 28–31 days or there is one
  instalment). A loan has been 30+ DPD once an event reports a DPD over 30 (M2 or worse: DPD
  31 is the first day a loan is more than 30 days past due); a vintage's curve has one point
  per complete month on book: month-end k after the disbursement month, k = 0, 1, ….
- Today (``as_of``): the DPD of an open episode is counted from the oldest past-due date its
  latest event reports, and its amount overdue is that event's ``total_overdue`` (an
  instalment that fell due since without changing the bucket emits no event).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ..core.buckets import DEFAULT_BUCKETS, BucketTable
from ..core.dates import MICROSECOND, local_date, parse_date, parse_instant, start_of_day, zone
from ..core.records import ACTIVE, CLOSED, LoanSchedule

OPENED, CHANGED, CURED, WRITTEN_OFF = "OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF"
CLOSED_STATE = "CLOSED"
_RANK = {OPENED: 0, CHANGED: 1, CURED: 2, WRITTEN_OFF: 3}
#: DPD above which a loan counts as "30+" in the vintage curves (the first day of M2).
THIRTY_PLUS = 30
TOP_EXPOSURES = 20


@dataclass(frozen=True, slots=True)
class Vintage:
    """Loans disbursed in ``month`` (``YYYY-MM``); ``ever_30[k]`` of them were 30+ by month-end k."""

    month: str
    loans: int
    ever_30: tuple[int, ...]

    def shares(self) -> list[float]:
        """``ever_30`` as shares of the vintage's loans."""
        return [n / self.loans for n in self.ever_30]


@dataclass(frozen=True, slots=True)
class Exposure:
    """One open episode today: how late and how much."""

    loan_id: str
    bucket: str
    dpd: int
    amount: int
    currency: str


@dataclass(frozen=True)
class RiskFigures:
    """Everything the report draws, for one book at one instant."""

    as_of: datetime
    timezone: str
    loans: int
    buckets: tuple[str, ...]
    # The book by state, one point per day (states: the buckets, then WRITTEN_OFF).
    days: tuple[date, ...] = ()
    book: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # Month-end to month-end: rows are buckets, columns the buckets, WRITTEN_OFF and CLOSED.
    month_ends: tuple[date, ...] = ()
    roll_columns: tuple[str, ...] = ()
    roll_counts: tuple[tuple[int, ...], ...] = ()
    vintages: tuple[Vintage, ...] = ()
    # Today: loans by DPD among open episodes, amounts overdue by currency and bucket, the largest.
    open_dpd: Mapping[int, int] = field(default_factory=dict)
    overdue_by_currency: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    top_exposures: tuple[Exposure, ...] = ()

    @property
    def states(self) -> tuple[str, ...]:
        """The book's states in chart order."""
        return (*self.buckets, WRITTEN_OFF)

    def roll_row(self, bucket: str) -> tuple[int, ...]:
        """The month-end transitions out of ``bucket``: counts per column."""
        return self.roll_counts[self.buckets.index(bucket)]

    def roll_shares(self) -> list[list[float | None]]:
        """Each row of the roll matrix as shares of its total (None for an empty row)."""
        out: list[list[float | None]] = []
        for row in self.roll_counts:
            total = sum(row)
            out.append([n / total if total else None for n in row])
        return out

    def roll_rate(self, bucket: str) -> float | None:
        """Share of loans in ``bucket`` at a month-end that are in the next bucket at the next one."""
        i = self.buckets.index(bucket)
        if i + 1 >= len(self.buckets):
            return None
        row = self.roll_row(bucket)
        return row[i + 1] / sum(row) if sum(row) else None

    def cure_rate(self, bucket: str) -> float | None:
        """Share of loans in ``bucket`` at a month-end that are in M0 (no open episode) at the next one."""
        row = self.roll_row(bucket)
        return row[0] / sum(row) if sum(row) else None

    @property
    def open_loans(self) -> int:
        """Open episodes today."""
        return sum(self.open_dpd.values())


@dataclass
class _Loan:
    """What the figures need of one loan, gathered from its schedules and events."""

    tz: tzinfo = UTC
    entered: datetime | None = None
    closed: datetime | None = None
    disbursed: date | None = None
    changes: list[tuple[datetime, int, str]] = field(default_factory=list)
    latest: tuple[tuple[datetime, int], Mapping[str, Any]] | None = None
    first_30: date | None = None

    def timeline(self) -> list[tuple[datetime, str | None]]:
        """(instant, state) from entry on; state None once the loan has left the book (closed)."""
        points: list[tuple[datetime, int, str | None]] = []
        if self.entered is not None:
            points.append((self.entered, -1, "M0"))
        points += self.changes
        if self.closed is not None:
            points.append((self.closed, 9, None))
        points.sort(key=lambda p: (p[0], p[1]))
        out: list[tuple[datetime, str | None]] = []
        for at, _, state in points:
            if out and out[-1][1] in (WRITTEN_OFF, None):
                break  # nothing follows a write-off or a closing (SPEC §4)
            out.append((at, state))
        return out


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, clamped to the last day of the target month."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, _month_length(year, month)))


def _month_length(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return date(day.year, day.month, _month_length(day.year, day.month))


def disbursement_date(schedule: LoanSchedule) -> date:
    """The first due date minus one period (SPEC §7.4's stand-in for the disbursement date)."""
    dues = [i.due_date for i in schedule.installments]
    if len(dues) >= 2:
        gap = (dues[1] - dues[0]).days
        if not 28 <= gap <= 31:
            return dues[0] - timedelta(days=gap)
    return add_months(dues[0], -1)


def _closing(revisions: Sequence[LoanSchedule]) -> datetime | None:
    """When a CLOSED schedule first takes effect, if the loan's first end is a closing (not a write-off)."""
    for point in sorted({s.effective_at for s in revisions}):
        in_effect = max((s for s in revisions if s.effective_at <= point), key=lambda s: s.revision)
        if in_effect.status != ACTIVE:
            return point if in_effect.status == CLOSED else None
    return None


def compute(
    events: Iterable[Mapping[str, Any]],
    schedules: Iterable[LoanSchedule],
    as_of: datetime,
    buckets: BucketTable = DEFAULT_BUCKETS,
    timezone: str | None = None,
) -> RiskFigures:
    """The report's figures for the book at ``as_of``.

    ``events``: standing OverdueEvents (retractions applied), in native or JSON form; those after
    ``as_of`` are ignored. ``schedules``: every revision received, any order. ``timezone``:
    the report's days and month-ends (default: :func:`report_zone`).
    """
    as_of = parse_instant(as_of)
    by_loan_schedules: dict[str, list[LoanSchedule]] = {}
    for s in schedules:
        by_loan_schedules.setdefault(s.loan_id, []).append(s)
    if timezone is None:
        timezone = report_zone(s for revs in by_loan_schedules.values() for s in revs)
    rtz = zone(timezone)
    names = buckets.names
    loans: dict[str, _Loan] = {}
    for loan_id, revisions in by_loan_schedules.items():
        first = min(revisions, key=lambda s: s.revision)
        entered = min(s.effective_at for s in revisions)
        if entered > as_of:
            continue
        closed = _closing(revisions)
        loans[loan_id] = _Loan(
            tz=zone(first.timezone),
            entered=entered,
            closed=closed if closed is not None and closed <= as_of else None,
            disbursed=disbursement_date(first),
        )
    for e in events:
        kind = e["type"]
        at = parse_instant(e["as_of"])
        if at > as_of or kind == "OVERDUE_RETRACTED":
            continue
        loan = loans.get(e["loan_id"])
        if loan is None:  # events of a loan whose schedules are no longer on the topic
            loan = loans[e["loan_id"]] = _Loan(tz=zone(e.get("timezone") or "UTC"), entered=at)
        key = (at, _RANK.get(kind, 4))
        if loan.latest is None or key >= loan.latest[0]:
            loan.latest = (key, e)
        if kind in _RANK:
            state = {CURED: "M0", WRITTEN_OFF: WRITTEN_OFF}.get(kind) or e["bucket"]
            loan.changes.append((at, _RANK[kind], state))
        if e.get("dpd") is not None and e["dpd"] > THIRTY_PLUS:
            day = parse_date(e["as_of_date"]) if e.get("as_of_date") else local_date(at, loan.tz)
            if loan.first_30 is None or day < loan.first_30:
                loan.first_30 = day
    timelines = {loan_id: loan.timeline() for loan_id, loan in loans.items()}
    figures: dict[str, Any] = {"as_of": as_of, "timezone": timezone, "loans": len(loans), "buckets": names}
    if not loans:
        return RiskFigures(**figures)
    until_day = local_date(as_of, rtz)
    first_day = min(local_date(t[0][0], rtz) for t in timelines.values() if t)
    figures.update(_book_by_day(timelines, first_day, until_day, rtz, names))
    figures.update(_roll_matrix(timelines, first_day, until_day, rtz, names))
    figures["vintages"] = _vintages(loans, until_day)
    figures.update(_today(loans, timelines, as_of, names))
    return RiskFigures(**figures)


def report_zone(schedules: Iterable[LoanSchedule]) -> str:
    """The time zone most of the book's loans use (by each loan's first revision; ties: the first by
    name), UTC for an empty book."""
    first: dict[str, LoanSchedule] = {}
    for s in schedules:
        if s.loan_id not in first or s.revision < first[s.loan_id].revision:
            first[s.loan_id] = s
    counts = Counter(s.timezone for s in first.values())
    if not counts:
        return "UTC"
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _book_by_day(timelines, first_day: date, until_day: date, rtz: ZoneInfo, names) -> dict[str, Any]:
    days = [first_day + timedelta(days=n) for n in range((until_day - first_day).days + 1)]
    states = (*names, WRITTEN_OFF)
    diff = {s: [0] * (len(days) + 1) for s in states}
    for timeline in timelines.values():
        segments = [((local_date(at, rtz) - first_day).days, state) for at, state in timeline]
        segments.append((len(days), None))
        for (start, state), (end, _) in zip(segments, segments[1:], strict=False):
            if state is not None and end > start:
                if state not in diff:  # a bucket the table does not name (another bucket table)
                    diff[state] = [0] * (len(days) + 1)
                diff[state][start] += 1
                diff[state][end] -= 1
    book: dict[str, tuple[int, ...]] = {}
    for state, deltas in diff.items():
        running, series = 0, []
        for delta in deltas[:-1]:
            running += delta
            series.append(running)
        book[state] = tuple(series)
    return {"days": tuple(days), "book": book}


def _state_at(timeline: Sequence[tuple[datetime, str | None]], at: datetime) -> str | None:
    """The loan's state at instant ``at``: None before it entered the book; CLOSED after it left it."""
    i = bisect_right(timeline, at, key=lambda p: p[0]) - 1
    if i < 0:
        return None
    state = timeline[i][1]
    return CLOSED_STATE if state is None else state


def _roll_matrix(timelines, first_day: date, until_day: date, rtz: ZoneInfo, names) -> dict[str, Any]:
    ends: list[date] = []
    end = month_end(first_day)
    while end < until_day:
        ends.append(end)
        end = month_end(end + timedelta(days=1))
    columns = (*names, WRITTEN_OFF, CLOSED_STATE)
    counts = [[0] * len(columns) for _ in names]
    instants = [start_of_day(e + timedelta(days=1), rtz) - MICROSECOND for e in ends]
    for timeline in timelines.values():
        states = [_state_at(timeline, at) for at in instants]
        for before, after in zip(states, states[1:], strict=False):
            if before in names and after in columns:
                counts[names.index(before)][columns.index(after)] += 1
    return {
        "month_ends": tuple(ends),
        "roll_columns": columns,
        "roll_counts": tuple(tuple(r) for r in counts),
    }


def _vintages(loans: Mapping[str, _Loan], until_day: date) -> tuple[Vintage, ...]:
    cohorts: dict[str, list[_Loan]] = {}
    for loan in loans.values():
        if loan.disbursed is not None:
            cohorts.setdefault(f"{loan.disbursed:%Y-%m}", []).append(loan)
    out = []
    for month, members in sorted(cohorts.items()):
        start = date(int(month[:4]), int(month[5:]), 1)
        points = []
        k = 0
        while (end := month_end(add_months(start, k))) < until_day:
            points.append(sum(1 for m in members if m.first_30 is not None and m.first_30 <= end))
            k += 1
        out.append(Vintage(month, len(members), tuple(points)))
    return tuple(out)


def _today(loans: Mapping[str, _Loan], timelines, as_of: datetime, names) -> dict[str, Any]:
    dpds: Counter[int] = Counter()
    amounts: dict[str, Counter[str]] = {}
    exposures: list[Exposure] = []
    for loan_id, loan in loans.items():
        timeline = timelines[loan_id]
        state = timeline[-1][1] if timeline else None
        if state in (None, "M0", WRITTEN_OFF) or loan.latest is None:
            continue
        event = loan.latest[1]
        oldest = event.get("oldest_past_due_date")
        dpd = (local_date(as_of, loan.tz) - parse_date(oldest)).days if oldest else int(event["dpd"])
        amount, currency = int(event["total_overdue"]), str(event["currency"])
        dpds[dpd] += 1
        amounts.setdefault(currency, Counter())[state] += amount
        exposures.append(Exposure(loan_id, state, dpd, amount, currency))
    exposures.sort(key=lambda x: (-x.amount, x.loan_id))
    order = {name: i for i, name in enumerate(names)}
    return {
        "open_dpd": dict(sorted(dpds.items())),
        "overdue_by_currency": {
            c: dict(sorted(by.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
            for c, by in sorted(amounts.items())
        },
        "top_exposures": tuple(exposures[:TOP_EXPOSURES]),
    }


__all__ = [
    "Exposure",
    "RiskFigures",
    "Vintage",
    "add_months",
    "compute",
    "disbursement_date",
    "month_end",
    "report_zone",
]
