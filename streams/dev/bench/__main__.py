"""`python -m streams.dev.bench [core|whatif|e2e|all]`: run benchmarks and rewrite BENCHMARKS.md sections."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import core
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
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    OUT.write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    if which in ("core", "all"):
        result = core.run()
        body = core.report(result)
        print(body)
        write_section("Core (no Kafka): streams.dev.bench.core", body)
    if which in ("whatif", "all"):
        from . import whatif

        whatif.main(write_section)
    if which in ("e2e", "all"):
        try:
            from . import e2e
        except ImportError:
            print("end-to-end benchmark not built yet")
        else:
            return e2e.main(write_section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
