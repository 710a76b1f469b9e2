"""The risk report and `whatif --html` in a real browser, with the network off (SPEC §7.4).

Headless Chromium (Debian's, installed by ``make tools``) opens each file from disk with its
network emulated offline and every host name unresolvable. The test asserts that the page
asked for nothing but itself (and the ``data:`` images plotly draws heatmaps with), that
nothing was logged as an error, and that every chart the page lists drew something in its
plot area. A screenshot of each page is kept under ``build/screenshots/``.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from streams.cli import main
from streams.dev.book import generate
from streams.dev.simulate import write_replay_input
from tests.support.browser import Chromium, PageSession, chromium_path
from tests.support.shared import REPO

SCREENSHOTS = REPO / "build" / "screenshots"

#: Per chart listed on <body data-charts>: its size, and what plotly drew in its plot area
#: (``.overplot``: traces, and the image a heatmap is drawn as).
CHART_STATE = """(() => {
  const ids = (document.body.dataset.charts || '').split(' ').filter(Boolean);
  return ids.map(id => {
    const div = document.getElementById(id);
    if (!div) return {id, found: false};
    const area = div.querySelector('.cartesianlayer .overplot');
    const box = area ? area.getBBox() : {width: 0, height: 0};
    const rect = div.getBoundingClientRect();
    return {id, found: true, width: rect.width, height: rect.height, plot_width: box.width,
            plot_height: box.height, marks: area ? area.querySelectorAll('.trace, .hm image').length : 0};
  });
})()"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report and the what-if page of a 400-loan synthetic book (history from 240 days back)."""
    work = tmp_path_factory.mktemp("pages")
    book = work / "book.jsonl"
    write_replay_input(generate(400, date(2026, 3, 1), 30, seed=7), book)
    until = "2026-03-31T00:00:00+08:00"
    report, whatif = work / "report.html", work / "whatif.html"
    assert main(["report", "--input", str(book), "--until", until, "--out", str(report)]) == 0
    assert (
        main(
            ["whatif", "--input", str(book), "--until", until, "--set", "grace_days=3", "--html", str(whatif)]
        )
        == 0
    )
    return {"risk-report": report, "whatif": whatif}


async def open_offline(browser: Chromium, path: Path, expected_charts: int) -> tuple[PageSession, list[dict]]:
    page = await browser.offline_page()
    await page.send("Page.navigate", {"url": path.resolve().as_uri()})
    await page.wait_for_event("Page.loadEventFired")
    # plotly draws after the load event; wait until every listed chart has drawn, or give up.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        charts = await page.evaluate(CHART_STATE)
        if len(charts) == expected_charts and all(c.get("marks") for c in charts) or loop.time() > deadline:
            return page, charts
        await asyncio.sleep(0.25)


@pytest.mark.parametrize(("name", "expected_charts"), [("risk-report", 6), ("whatif", 12)])
async def test_the_page_renders_every_chart_offline_without_errors(
    pages, name: str, expected_charts: int
) -> None:
    async with Chromium(chromium_path()) as browser:
        page, charts = await open_offline(browser, pages[name], expected_charts)
        try:
            shot = await page.screenshot(SCREENSHOTS / f"{name}.png")
            assert page.console_errors() == []
            fetched = [u for u in page.requests() if not u.startswith("data:")]
            assert fetched == [pages[name].resolve().as_uri()], "the page asked for something besides itself"
            assert len(charts) == expected_charts
            for chart in charts:
                assert chart["found"], chart
                assert chart["width"] > 300 and chart["height"] > 300, chart
                assert chart["marks"] > 0 and chart["plot_width"] > 0 and chart["plot_height"] > 0, chart
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
        finally:
            await page.close()
