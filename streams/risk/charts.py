"""The risk report's pictures, drawn with plotly, and the self-contained HTML pages around them.

A risk team opens the report on a laptop, often somewhere without access to the internet,
so the page carries plotly.js inline (one copy, however many charts) and nothing else is
fetched: no CDN, no fonts, no MathJax. Charts are interactive (hover, zoom, legend toggles)
because that is how these pictures are read; the numbers come from :mod:`.figures`.

The same chart functions draw the report (one book, two columns) and ``whatif --html`` (the
baseline and the scenario side by side, on shared axes so the eye can compare them). Every
chart has a fixed element id and the page is byte-for-byte the same for the same figures.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ..core.dates import zone
from ..core.money import minor_unit_exponent
from .figures import WRITTEN_OFF, RiskFigures

#: From current (green) to the oldest bucket (dark red); written off grey, closed light grey.
BUCKET_COLOURS = ("#2e7d32", "#f9a825", "#fb8c00", "#f4511e", "#e53935", "#c62828", "#ad1457", "#6a1b9a")
OTHER_COLOURS = {WRITTEN_OFF: "#455a64", "CLOSED": "#b0bec5"}
# No mode bar: it covers the titles, and zooming (drag), panning and reset (double-click) work without it.
CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
HEIGHT = 380
DPD_BIN = 5


def colour(state: str, buckets: Sequence[str]) -> str:
    """A state's colour: buckets along the green-to-red scale, the others fixed."""
    if state in OTHER_COLOURS:
        return OTHER_COLOURS[state]
    i = buckets.index(state) if state in buckets else len(buckets) - 1
    return BUCKET_COLOURS[min(i, len(BUCKET_COLOURS) - 1)]


def major(amount: int, currency: str) -> Decimal:
    """Minor units as an exact amount in major units (CNY 123456 → 1234.56)."""
    return Decimal(amount).scaleb(-minor_unit_exponent(currency))


def money(amount: int, currency: str) -> str:
    """``CNY 1,234.56``."""
    return f"{currency} {major(amount, currency):,.{minor_unit_exponent(currency)}f}"


def local(f: RiskFigures) -> datetime:
    """The figures' instant in the report's time zone."""
    return f.as_of.astimezone(zone(f.timezone))


def _layout(fig: go.Figure, title: str, **extra: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.18},
        font={"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12},
        **extra,
    )
    return fig


def book_chart(f: RiskFigures, y_max: float | None = None) -> go.Figure:
    """The book by bucket, one point per day: the delinquent buckets stacked, current loans as a line."""
    days = [d.isoformat() for d in f.days]
    fig = go.Figure()
    for state in f.states[1:]:
        fig.add_trace(go.Scatter(
            x=days, y=list(f.book.get(state, ())), name=state, stackgroup="overdue", mode="lines",
            line={"width": 0.5, "color": colour(state, f.buckets)},
            hovertemplate=f"{state}: %{{y:,}} loans<extra>%{{x}}</extra>",
        ))  # fmt: skip
    current = f.buckets[0]
    fig.add_trace(go.Scatter(
        x=days, y=list(f.book.get(current, ())), name=f"{current} (right axis)", yaxis="y2", mode="lines",
        line={"color": colour(current, f.buckets), "dash": "dot", "width": 2},
        hovertemplate=f"{current}: %{{y:,}} loans<extra>%{{x}}</extra>",
    ))  # fmt: skip
    return _layout(
        fig, "The book by bucket (end of each day)",
        yaxis={"title": "loans overdue / written off", "rangemode": "tozero",
               **({"range": [0, y_max]} if y_max else {})},
        yaxis2={"title": f"loans in {current}", "overlaying": "y", "side": "right", "rangemode": "tozero",
                "showgrid": False},
        hovermode="x unified",
    )  # fmt: skip


def roll_chart(f: RiskFigures) -> go.Figure:
    """The month-end roll-rate matrix as a heatmap of row shares, the counts in the hover."""
    shares = f.roll_shares()
    z = [[None if s is None else round(100 * s, 1) for s in row] for row in shares]
    text = [["" if s is None else f"{100 * s:.1f}%" for s in row] for row in shares]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(f.roll_columns), y=list(f.buckets), text=text, texttemplate="%{text}",
        customdata=[list(row) for row in f.roll_counts], colorscale="Reds", zmin=0, zmax=100,
        hovertemplate="%{y} → %{x}: %{z}% (%{customdata:,} loans)<extra></extra>",
        colorbar={"title": "% of row"},
    ))  # fmt: skip
    pairs = max(0, len(f.month_ends) - 1)
    span = (
        f"<br><sub>month-ends {f.month_ends[0]:%Y-%m} to {f.month_ends[-1]:%Y-%m}: {pairs} pairs</sub>"
        if pairs
        else ""
    )
    return _layout(
        fig, f"Monthly roll rates: bucket at a month-end → at the next{span}",
        xaxis={"title": "next month-end", "side": "bottom", "type": "category"},
        yaxis={"title": "month-end", "autorange": "reversed", "type": "category"},
    )  # fmt: skip


def cure_chart(f: RiskFigures) -> go.Figure:
    """For each bucket: the share rolling one bucket worse and the share cured (M0) a month later."""
    buckets = list(f.buckets[1:])
    roll = [_pct(f.roll_rate(b)) for b in buckets]
    cure = [_pct(f.cure_rate(b)) for b in buckets]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=buckets, y=cure, name="cured (in M0 a month later)", marker_color=BUCKET_COLOURS[0],
                         hovertemplate="%{x}: %{y}% cured<extra></extra>"))  # fmt: skip
    fig.add_trace(go.Bar(x=buckets, y=roll, name="rolled one bucket worse", marker_color=BUCKET_COLOURS[5],
                         hovertemplate="%{x}: %{y}% rolled<extra></extra>"))  # fmt: skip
    return _layout(fig, "Cure and roll rates by bucket (month-end to month-end)",
                   yaxis={"title": "% of loans in the bucket", "range": [0, 100]}, barmode="group")  # fmt: skip


def _pct(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def vintage_chart(f: RiskFigures, y_max: float | None = None) -> go.Figure:
    """Per disbursement month: the share of its loans ever 30+ DPD, by months on book."""
    fig = go.Figure()
    for v in (v for v in f.vintages if v.ever_30):
        fig.add_trace(go.Scatter(
            x=list(range(len(v.ever_30))), y=[round(100 * s, 2) for s in v.shares()], mode="lines+markers",
            name=f"{v.month} ({v.loans:,})",
            hovertemplate=f"{v.month}, month-end %{{x}}: %{{y}}% ever 30+<extra></extra>",
        ))  # fmt: skip
    return _layout(
        fig, "Vintage curves: share ever 30+ DPD by months on book",
        xaxis={"title": "months on book (month-ends after the disbursement month)", "dtick": 1},
        yaxis={"title": "% of the vintage ever 30+ DPD", "rangemode": "tozero",
               **({"range": [0, y_max]} if y_max else {})},
    )  # fmt: skip


def dpd_chart(f: RiskFigures, y_max: float | None = None) -> go.Figure:
    """Open episodes today by DPD."""
    # Five-day bins (1–5, 6–10, …): a bar per day is too thin to read on a long tail.
    fig = go.Figure(go.Histogram(
        x=list(f.open_dpd), y=list(f.open_dpd.values()), histfunc="sum", xbins={"start": 0.5, "size": DPD_BIN},
        marker_color=BUCKET_COLOURS[3], hovertemplate="DPD %{x}: %{y:,} loans<extra></extra>",
    ))  # fmt: skip
    return _layout(
        fig, f"Open episodes today by DPD ({f.open_loans:,} loans, {local(f):%Y-%m-%d %H:%M})",
        xaxis={"title": "days past due", "rangemode": "tozero"},
        yaxis={"title": "loans", "rangemode": "tozero", **({"range": [0, y_max]} if y_max else {})},
        bargap=0.05,
    )  # fmt: skip


def amounts_chart(f: RiskFigures, y_max: float | None = None) -> go.Figure:
    """Amounts overdue today by currency, stacked by bucket (major units of each currency)."""
    fig = go.Figure()
    currencies = list(f.overdue_by_currency)
    for state in f.buckets[1:]:
        ys = [major(f.overdue_by_currency[c].get(state, 0), c) for c in currencies]
        if any(ys):
            fig.add_trace(go.Bar(
                x=currencies, y=[float(y) for y in ys], name=state, marker_color=colour(state, f.buckets),
                customdata=[money(f.overdue_by_currency[c].get(state, 0), c) for c in currencies],
                hovertemplate=f"{state}: %{{customdata}}<extra></extra>",
            ))  # fmt: skip
    return _layout(fig, "Amounts overdue today by currency and bucket",
                   yaxis={"title": "amount overdue (major units)", "rangemode": "tozero",
                          **({"range": [0, y_max]} if y_max else {})},
                   barmode="stack")  # fmt: skip


@dataclass(frozen=True)
class Chart:
    """One picture of the report: its id, how to draw it, and what to share across a side-by-side pair."""

    key: str
    draw: Callable[..., go.Figure]
    # The largest y value to show for these figures, so a pair of charts shares its axis (None: own axis).
    y_extent: Callable[[RiskFigures], float] | None = None


def _book_extent(f: RiskFigures) -> float:
    totals = [sum(f.book.get(s, ())[i] for s in f.states[1:]) for i in range(len(f.days))]
    return max(totals, default=0)


def _vintage_extent(f: RiskFigures) -> float:
    return max((100 * s for v in f.vintages for s in v.shares()), default=0)


def _dpd_extent(f: RiskFigures) -> float:
    bins: dict[int, int] = {}
    for dpd, n in f.open_dpd.items():
        bins[(dpd - 1) // DPD_BIN] = bins.get((dpd - 1) // DPD_BIN, 0) + n
    return max(bins.values(), default=0)


def _amount_extent(f: RiskFigures) -> float:
    return max(
        (float(sum(major(a, c) for a in by.values())) for c, by in f.overdue_by_currency.items()), default=0
    )


CHARTS: tuple[Chart, ...] = (
    Chart("book", book_chart, _book_extent),
    Chart("rolls", roll_chart),
    Chart("cures", cure_chart),
    Chart("vintages", vintage_chart, _vintage_extent),
    Chart("dpd", dpd_chart, _dpd_extent),
    Chart("amounts", amounts_chart, _amount_extent),
)


def chart_html(fig: go.Figure, div_id: str) -> str:
    """One chart as a ``<div>`` and its script (plotly.js itself is on the page once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def exposures_table(f: RiskFigures) -> str:
    """The 20 largest overdue exposures today as an HTML table."""
    if not f.top_exposures:
        return '<p class="empty">No open episodes today.</p>'
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(x.loan_id)}</td><td>{html.escape(x.bucket)}</td>"
        f'<td class="num">{x.dpd:,}</td><td class="num">{html.escape(money(x.amount, x.currency))}</td></tr>'
        for i, x in enumerate(f.top_exposures, 1)
    )
    return ('<table class="grid"><thead><tr><th>#</th><th>loan</th><th>bucket</th><th class="num">DPD</th>'
            f'<th class="num">amount overdue</th></tr></thead><tbody>{rows}</tbody></table>')  # fmt: skip


def headline(f: RiskFigures) -> str:
    """The book in one line: loans, open episodes, amounts overdue."""
    amounts = ", ".join(money(sum(by.values()), c) for c, by in f.overdue_by_currency.items()) or "nothing"
    written = f.book.get(WRITTEN_OFF, (0,))[-1] if f.days else 0
    return (f"{f.loans:,} loans · {f.open_loans:,} open episodes · {written:,} written off · "
            f"overdue {amounts}")  # fmt: skip


NOTES = (
    "Computed from the overdue events after retractions and the loans' schedules (SPEC §7.4).",
    "A loan is in the bucket of its open episode, in M0 when none is open (never overdue, cured, or "
    "within its grace days); it leaves the book when a CLOSED schedule takes effect.",
    "Days and month-ends are those of the report's time zone; a day's point is the book at its end.",
    "Roll and cure rates: each loan at a month-end against the same loan at the next complete month-end.",
    "Disbursement month: the first schedule's first due date minus one period. 30+ DPD: an event reported "
    "a DPD over 30. Month-end k: the k-th month-end after the disbursement month.",
    "Today's DPD counts from the oldest past-due date of the loan's latest event, and its amount overdue is "
    "that event's total.",
)

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#212121;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 16px} .headline{font-size:15px;margin:4px 0 16px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px;min-width:0}
.side{font-weight:600;margin:0 0 4px;color:#37474f}
table.grid{border-collapse:collapse;background:#fff;font-size:13px}
table.grid th,table.grid td{border:1px solid #e0e0e0;padding:4px 10px;text-align:left}
table.grid td.num,table.grid th.num{text-align:right;font-variant-numeric:tabular-nums}
td.changed{font-weight:600}
ul.notes{color:#555;font-size:12px;max-width:1100px} .empty{color:#777}
"""


def page(title: str, meta: str, body: str, chart_ids: Sequence[str]) -> str:
    """A whole self-contained HTML page: the style, plotly.js inline once, the body.

    ``chart_ids`` are listed on ``<body data-charts>`` so a test (or a person) can check that
    every chart on the page was drawn.
    """
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f'</head><body data-charts="{html.escape(" ".join(chart_ids))}">'
        f'<h1>{html.escape(title)}</h1><p class="meta">{meta}</p>{body}</body></html>\n'
    )


def _meta(f: RiskFigures) -> str:
    return (f"As of {html.escape(local(f).isoformat())} · days and month-ends in {html.escape(f.timezone)} · "
            "self-contained page (no network needed)")  # fmt: skip


def _notes() -> str:
    return (
        '<h2>How these figures are computed</h2><ul class="notes">'
        + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES)
        + "</ul>"
    )


def report_page(f: RiskFigures, title: str = "duewatch — risk report") -> str:
    """The risk report (SPEC §7.4): every chart of one book, then the largest exposures."""
    ids = [f"chart-{c.key}" for c in CHARTS]
    cards = "".join(
        f'<div class="card">{chart_html(c.draw(f), i)}</div>' for c, i in zip(CHARTS, ids, strict=True)
    )
    body = (f'<p class="headline">{html.escape(headline(f))}</p><div class="grid2">{cards}</div>'
            f"<h2>The 20 largest overdue exposures today</h2>{exposures_table(f)}{_notes()}")  # fmt: skip
    return page(title, _meta(f), body, ids)


def side_by_side_page(
    baseline: RiskFigures, scenario: RiskFigures, summary_html: str, title: str = "duewatch — what-if"
) -> str:
    """``whatif --html``: the what-if's tables, then each chart for the baseline and the scenario side by side."""
    ids: list[str] = []
    rows = []
    for c in CHARTS:
        kwargs: Mapping[str, Any] = {}
        if c.y_extent is not None:
            extent = max(c.y_extent(baseline), c.y_extent(scenario))
            kwargs = {"y_max": extent * 1.05} if extent > 0 else {}
        pair = []
        for side, f in (("baseline", baseline), ("scenario", scenario)):
            div_id = f"{side}-{c.key}"
            ids.append(div_id)
            pair.append(
                f'<div class="card"><p class="side">{side}</p>{chart_html(c.draw(f, **kwargs), div_id)}</div>'
            )
        rows.append(f'<div class="grid2">{"".join(pair)}</div>')
    tables = "".join(
        f'<div class="card"><p class="side">{side}: the 20 largest overdue exposures</p>{exposures_table(f)}</div>'
        for side, f in (("baseline", baseline), ("scenario", scenario))
    )
    body = (f"{summary_html}<h2>The book, baseline and scenario</h2>"
            f'<p class="headline">baseline: {html.escape(headline(baseline))}<br>'
            f"scenario: {html.escape(headline(scenario))}</p>"
            f'{"".join(rows)}<h2>Largest exposures</h2><div class="grid2">{tables}</div>{_notes()}')  # fmt: skip
    return page(title, _meta(baseline), body, ids)


__all__ = ["CHARTS", "Chart", "money", "report_page", "side_by_side_page"]
