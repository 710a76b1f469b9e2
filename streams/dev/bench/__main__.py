"""`python -m streams.dev.bench [core|codec|whatif|e2e|failover|all]`: run benchmarks and rewrite BENCHMARKS.md sections."""

from __future__ import annotations

import sys

from . import core
from .report import write_section


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    if which in ("core", "all"):
        result = core.run()
        # Compiled: the sources run too, in a child process, so BENCHMARKS.md shows what it buys.
        body = core.report(result, core.run_pure() if core.FORM.compiled else None)
        print(body)
        write_section("Core (no Kafka): streams.dev.bench.core", body)
    if which in ("codec", "all"):
        from . import codec

        codec.main(write_section)
    if which in ("whatif", "all"):
        from . import whatif

        whatif.main(write_section)
    status = 0
    if which in ("e2e", "all"):
        from . import e2e

        status = e2e.main(write_section)
    if which in ("failover", "all"):
        from . import failover

        status = failover.main(write_section) or status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
