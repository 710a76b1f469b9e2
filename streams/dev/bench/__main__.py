"""`python -m streams.dev.bench [core|codec|whatif|e2e|all]`: run benchmarks and rewrite BENCHMARKS.md sections."""

from __future__ import annotations

import sys

from . import core
from .report import write_section


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    if which in ("core", "all"):
        result = core.run()
        body = core.report(result)
        print(body)
        write_section("Core (no Kafka): streams.dev.bench.core", body)
    if which in ("codec", "all"):
        from . import codec

        codec.main(write_section)
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
