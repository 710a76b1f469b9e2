"""Where the shared reference material lives, and what a test does when something it needs is
missing: skip on a developer's machine, fail under CI (``CI=true``), where the project's own
set-up (`make test`) must have provided it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DUEWATCH_SHARED", REPO.parent / "shared"))
EXAMPLES = SHARED / "examples"
KIVA = SHARED / "data" / "kiva"


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """Skip the calling test for ``what`` this machine lacks; under CI=true fail instead."""
    if _under_ci():
        pytest.fail(f"{what} (CI=true: the project's set-up must provide it)", pytrace=False)
    pytest.skip(what)


def need(path: Path) -> Path:
    """``path`` (part of ../shared), or the calling test skips (fails under CI) without it."""
    if not path.exists():
        missing(f"{path} not present (../shared is not beside the checkout)")
    return path


def example_dirs() -> list[Path]:
    """The worked examples; the calling test skips (fails under CI) without them."""
    need(EXAMPLES)
    return sorted(p for p in EXAMPLES.iterdir() if (p / "expected.jsonl").exists())


def example_params() -> list[Any]:
    """The worked examples for ``pytest.mark.parametrize``, which runs while pytest collects,
    where a skip is an error of the whole run (a clone without ../shared beside it did not get
    past collection). Without them: one case that is skipped, or under CI=true a failure."""
    if EXAMPLES.exists():
        return list(example_dirs())
    what = f"{EXAMPLES} not present (../shared is not beside the checkout)"
    if _under_ci():
        pytest.fail(f"{what} (CI=true: the project's set-up must provide it)", pytrace=False)
    return [pytest.param(EXAMPLES, id="no-examples", marks=pytest.mark.skip(reason=what))]
