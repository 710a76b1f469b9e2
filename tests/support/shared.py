"""Where the shared reference material lives, and how tests skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DUEWATCH_SHARED", REPO.parent / "shared"))
EXAMPLES = SHARED / "examples"
KIVA = SHARED / "data" / "kiva"


def need(path: Path) -> Path:
    """Skip the calling test when ``path`` (part of ../shared) is absent."""
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is not checked out here)")
    return path


def example_dirs() -> list[Path]:
    """The worked examples, or an empty list when ../shared is absent."""
    if not EXAMPLES.exists():
        return []
    return sorted(p for p in EXAMPLES.iterdir() if (p / "expected.jsonl").exists())
