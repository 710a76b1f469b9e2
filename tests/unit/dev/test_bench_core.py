"""The core bench says which form of the core it measured and, run compiled, shows the sources'
figures from the same run beside the compiled ones, the targets judging the form that ran."""

from __future__ import annotations

from streams.core import FORM
from streams.dev.bench import core as bench


def test_a_small_book_in_a_child_process_on_the_sources_beside_this_form() -> None:
    pure = bench.run_pure(loans=30, days=40)  # refuses a child that ran compiled code
    here = bench.run(loans=30, days=40)
    assert pure.loans == here.loans == 30
    assert (pure.repayments, pure.transitions) == (here.repayments, here.transitions)  # the same book
    table = bench.report(here, pure)
    assert "| operation | cost, compiled | cost, pure Python | target | |" in table
    assert "same run with the sources (DUEWATCH_PURE_PYTHON=1)" in table
    repayment = next(line for line in table.splitlines() if line.startswith("| apply repayment"))
    cells = [c.strip() for c in repayment.strip("|").split("|")]
    assert cells[1:3] == [f"{here.repayment_us:.1f} µs", f"{pure.repayment_us:.1f} µs"]
    assert cells[4] == ("PASS" if here.repayment_us <= bench.REPAYMENT_TARGET_US else "**MISS**")
    alone = bench.report(here)
    assert "| operation | cost | target | |" in alone
    assert ("compiled by mypyc" in alone) == FORM.compiled
