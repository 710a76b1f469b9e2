"""The `duewatch` command (SPEC §6). Exit 0 on success, 1 on failure, 2 on a usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .core.dates import parse_instant


def _instant(text: str):
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an instant with an offset: {text!r} ({exc})") from None


def _cmd_replay(args: argparse.Namespace) -> int:
    from . import jsonform
    from .replay import replay

    path = Path(args.input)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(jsonform.loads(line))
        except ValueError:
            records.append({"topic": "", "key": None, "value": {"raw": line, "line": number}})
    progress = None
    bar = None
    if len(records) > 20_000 and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("replay", total=len(records))
        bar.start()

        def progress(done: int, total: int) -> None:
            if done % 5000 == 0 or done == total:
                bar.update(task, completed=done)

    try:
        outputs = replay(records, args.until, progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        for output in outputs:
            out.write(jsonform.dumps(output.as_record()))
            out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="duewatch", description="Real-time loan-overdue detector.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="run the detector over a JSON-lines file")
    p.add_argument("--input", required=True, help="JSON lines {topic, key, value}")
    p.add_argument("--until", type=_instant, default=None, help="replay up to and including this instant")
    p.add_argument("--out", default=None, help="output file (default: standard output)")
    p.set_defaults(func=_cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `duewatch` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 1
    except (OSError, ValueError) as exc:
        print(f"duewatch {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
