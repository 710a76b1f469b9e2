"""BENCHMARKS.md, a section per benchmark: each run replaces its own section and says on which
machine and when it ran."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from .machine import describe

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "BENCHMARKS.md"

HEADER = """# Benchmarks

Written by `make bench`; every section names the machine and the date of its run. Targets
(DEVELOPERS.md) are per worker process on a 2-core machine with the real broker.
"""


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``## name`` of BENCHMARKS.md."""
    text = OUT.read_text(encoding="utf-8") if OUT.exists() else HEADER
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {name}\n\nRun {stamp} on {describe()}.\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    OUT.write_text(text, encoding="utf-8")
