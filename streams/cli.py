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
    from .contracts import jsonform
    from .replay import load_input, replay

    records = load_input(args.input)
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

    from .policy_loader import load_policy

    policy = load_policy(_settings().policy_file)
    try:
        outputs = replay(records, args.until, progress=progress, policy=policy)
    finally:
        if bar is not None:
            bar.stop()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        from .contracts import codec

        for output in outputs:
            record = output.as_record()
            record_type = codec.TOPIC_RECORD.get(output.topic)
            if record_type is not None and output.topic != "duewatch.dlq":
                record["value"] = codec.to_json(record_type, record["value"])
            out.write(jsonform.dumps(record))
            out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _settings():
    from .settings import from_env

    return from_env()


class UsageError(Exception):
    """A command line that names something that does not exist (exit status 2, like argparse's)."""


def _read_lines(path: str) -> list[tuple[int, dict]]:
    """The JSON lines of ``path`` ('-': standard input) with their file line numbers (blank
    lines skipped); a line that is not a JSON object is reported by its number."""
    from .contracts import jsonform

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    where = "standard input" if path == "-" else path
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = jsonform.loads(line)
        except ValueError as exc:  # orjson's message counts lines of the one line it was given
            column = getattr(exc, "colno", None)
            reason = getattr(exc, "msg", None) or "not JSON"
            raise ValueError(f"{where} line {number}: not JSON ({reason}"
                             f"{f' at column {column}' if column else ''})") from None  # fmt: skip
        if not isinstance(value, dict):
            raise ValueError(f"{where} line {number}: not a JSON object")
        out.append((number, value))
    return out


def _topic(name: str, allowed: Sequence[str]) -> str:
    """The logical topic ``name`` (logical or prefixed) if it is one of ``allowed``."""
    from .kafkaio import logical_name

    topic = logical_name(name, _settings())
    if topic not in allowed:
        raise UsageError(f"unknown topic {name!r}; one of {', '.join(allowed)}")
    return topic


def _cmd_produce(args: argparse.Namespace) -> int:
    import asyncio

    from .contracts import topics as names
    from .kafkaio import BadLine, encode_lines, send_records

    cfg = _settings()
    topic = _topic(args.topic, names.ALL_TOPICS if args.raw else tuple(names.TOPIC_RECORD))
    where = "standard input" if args.file == "-" else args.file
    try:  # every line is checked before anything is sent
        records = encode_lines(topic, _read_lines(args.file), args.raw, cfg)
    except BadLine as exc:
        raise ValueError(f"{where} {exc}") from None
    sent = asyncio.run(send_records(cfg, topic, records, args.timeout))
    print(f"sent {sent} records to {cfg.topic(topic)}", file=sys.stderr)
    return 0


def _cmd_consume(args: argparse.Namespace) -> int:
    import asyncio

    from .contracts import jsonform
    from .contracts import topics as names
    from .kafkaio import consume

    cfg = _settings()
    topic = _topic(args.topic, names.ALL_TOPICS)

    async def run() -> None:
        async for record in consume(
            cfg, topic, args.from_beginning, args.idle_timeout, args.max, args.timeout
        ):
            sys.stdout.write(jsonform.dumps(record) + "\n")
            sys.stdout.flush()

    asyncio.run(run())
    return 0


def _cmd_tick(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from .kafkaio import send_tick

    cfg = _settings()
    at = args.at or datetime.now(UTC)
    partitions = asyncio.run(send_tick(cfg, at, timeout=args.timeout))
    print(f"tick {at.isoformat()} sent to {partitions} partitions", file=sys.stderr)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    import asyncio

    from .kafkaio import create_topics
    from .worker.tables import internal_topics

    cfg = _settings()
    from .worker.tables import changelog_topics

    created = asyncio.run(
        create_topics(
            cfg, physical=internal_topics(cfg), compacted=changelog_topics(cfg), timeout=args.timeout
        )
    )
    for name in created:
        print(f"created {name}")
    print(f"{len(created)} created, the rest already existed", file=sys.stderr)
    if cfg.registry_mode:
        from .contracts.registry import RegistryError, RegistryUnavailable
        from .kafkaio import register_schemas

        try:
            registered = asyncio.run(register_schemas(cfg))
        except RegistryUnavailable as exc:
            print(
                f"duewatch topics: {exc}; is the registry running at DUEWATCH_SCHEMA_REGISTRY_URL?",
                file=sys.stderr,
            )
            return 1
        except RegistryError as exc:
            print(f"duewatch topics: {exc}; see schemas/README.md on evolving a schema", file=sys.stderr)
            return 1
        for subject, schema_id in registered.items():
            print(f"registered {subject} (schema id {schema_id}, compatibility BACKWARD)")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from .contracts import control
    from .core import bounds, errors
    from .kafkaio import send_control

    try:
        bounds.check_id(args.loan_id, "LOAN_ID")
    except errors.InvalidRecord as exc:
        raise ValueError(exc.detail) from None
    cfg = _settings()
    asyncio.run(
        send_control(cfg, control.Command(control.RELEASE, args.loan_id, datetime.now(UTC)), args.timeout)
    )
    print(f"release of {args.loan_id} sent; what was dead-lettered meanwhile: "
          f"duewatch dlq redrive --loan {args.loan_id}", file=sys.stderr)  # fmt: skip
    return 0


def _dead_letters(args: argparse.Namespace) -> list:
    import asyncio

    from .kafkaio import read_dlq
    from .redrive import matches

    return [r for r in asyncio.run(read_dlq(_settings(), args.timeout)) if matches(r, args.reason, args.loan)]


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    from collections import Counter

    records = _dead_letters(args)
    by_cause = Counter((r.header("reason") or "?", r.header("source_topic") or "?") for r in records)
    for (reason, source), n in sorted(by_cause.items()):
        print(f"{n:>8}  {reason:<24} from {source}")
    aside = sorted({r.header("loan_id") for r in records if r.header("reason") == "INTERNAL_ERROR"} - {None})
    if aside:
        print(f"loans set aside by an unexpected failure ({len(aside)}): {', '.join(aside)}")
    print(f"{len(records)} records", file=sys.stderr)
    return 0


def _cmd_dlq_redrive(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from .kafkaio import resend
    from .redrive import plan, summary

    chosen = plan(_dead_letters(args), None, None, datetime.now(UTC))
    sent = 0 if args.dry_run else asyncio.run(resend(_settings(), chosen.resend, args.timeout))
    for topic, n in sorted(summary(chosen).items()):
        print(f"{n:>8}  {'would go' if args.dry_run else 'redriven'} to {topic}")
    for why, n in sorted(chosen.left.items()):
        print(f"{n:>8}  left: {why}")
    print(f"{sent} records redriven", file=sys.stderr)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import logging.config

    from aiokafka.errors import KafkaError
    from faust.cli.base import prepare_app

    from .kafkaio import ConnectionCause, create_topics
    from .logs import damp_kafka_client, logging_config, quiet_kafka_client
    from .worker.app import create_app
    from .worker.outage import Worker
    from .worker.tables import changelog_topics, internal_topics

    cfg = _settings()
    config = logging_config(cfg.log_json, cfg.log_level, cfg.kafka_log_level)
    if config is None:
        logging.basicConfig(level=cfg.log_level.upper())
    else:
        logging.config.dictConfig(config)
    quiet_kafka_client(cfg.kafka_log_level)
    # Topics first (idempotent): the broker does not auto-create them, and a worker that
    # starts against a fresh cluster should simply work. A broker that cannot be reached at
    # start is one line and exit 1 (a supervisor starts the worker again); once running, the
    # worker waits for a broker it loses (streams.worker.outage).
    with ConnectionCause.captured() as cause:
        try:
            asyncio.run(create_topics(cfg, physical=internal_topics(cfg), compacted=changelog_topics(cfg)))
        except (KafkaError, TimeoutError) as exc:
            print(f"duewatch worker: {cause.describe(exc, cfg)}", file=sys.stderr)
            return 1
    app = create_app(cfg)
    damp_kafka_client()  # after create_app: every aiokafka module is imported by then
    prepare_app(app, "streams.worker.app")
    collect_garbage_less_often()
    worker = Worker(app, loglevel=cfg.log_level)
    worker.execute_from_commandline()
    return 0


def collect_garbage_less_often() -> None:
    """Tune Python's cyclic garbage collector for a worker that holds a large book.

    The detector keeps up to 200,000 decoded loan states (each tens of small objects) and
    allocates a few hundred objects per record; with the default thresholds (700, 10, 10) the
    collector ran so often that it took ~15 % of the per-record CPU (measured on a 30,000-loan
    intake without Kafka: 84 → 72 µs per record). States are acyclic values, so little is ever
    freed by it. Objects alive now (modules, the app) are frozen out of its scans."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _book_arguments(p: argparse.ArgumentParser) -> None:
    """The synthetic book's options, shared by `simulate` and `demo` (SPEC §6)."""
    p.add_argument("--loans", type=_positive_int, default=10_000, help="loans in the book (10000)")
    p.add_argument("--days", type=_positive_int, default=90, help="simulated days after --start (90)")
    p.add_argument("--speed", type=_speed, default=1.0, help="simulated days per wall-clock second (1.0)")
    p.add_argument(
        "--seed", type=int, default=7, help="the book's random seed (7); a seed names a book exactly"
    )
    p.add_argument(
        "--start", type=_date, default="2026-03-01", help="first simulated day, YYYY-MM-DD (2026-03-01)"
    )


def _cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from .dev.simulate import Progress, simulate

    cfg = _settings()
    began = time.monotonic()
    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if p.done or now - last[0] >= 5.0:
            last[0] = now
            print(f"simulate: {p.simulated.isoformat()}  {p.produced:,}/{p.total:,} records, {p.ticks:,} ticks",
                  file=sys.stderr, flush=True)  # fmt: skip

    count = asyncio.run(
        simulate(cfg, args.loans, args.days, args.speed, args.seed, args.start, out=args.out,
                 on_progress=progress, timeout=args.timeout)
    )  # fmt: skip
    where = args.out or f"Kafka at {cfg.bootstrap_servers} (prefix {cfg.topic_prefix!r})"
    print(f"simulate: {count:,} records to {where} in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .dev.demo import run_demo

    return run_demo(args.loans, args.days, args.speed, args.seed, args.start)


#: The commands that talk to Kafka with plain aiokafka clients (streams.kafkaio).
KAFKA_COMMANDS = frozenset({"produce", "consume", "tick", "topics", "simulate", "release", "dlq", "verify"})


def _against_kafka(args: argparse.Namespace) -> int:
    """Run a Kafka command; a Kafka error (a refused certificate, a wrong password, no broker)
    becomes one line on standard error and exit code 1 instead of aiokafka's log lines and a
    traceback."""
    from aiokafka.errors import KafkaError

    from .kafkaio import ConnectionCause

    with ConnectionCause.captured() as cause:
        try:
            return int(args.func(args) or 0)
        except (KafkaError, TimeoutError) as exc:
            _traceback_when_debugging()
            print(f"duewatch {args.command}: {cause.describe(exc, _settings())}", file=sys.stderr)
            return 1


def _override(text: str) -> tuple[str, int]:
    from .risk.overrides import OverrideError, parse_override

    try:
        return parse_override(text)
    except OverrideError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _policy(path: str | None):
    from .policy_loader import load_policy

    return load_policy(path)


def _cmd_whatif(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from .replay import load_input
    from .risk.charts import side_by_side_page
    from .risk.whatif import Side, run_whatif, summary_html, tables

    baseline = Side(_policy(args.baseline_policy))
    scenario = Side(_policy(args.policy), dict(args.set or ()))
    records = load_input(args.input)
    result = run_whatif(records, baseline, scenario, args.until, with_figures=bool(args.html))
    console = Console()
    for table in tables(result):
        console.print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"whatif: JSON written to {Path(args.json).resolve()}", file=sys.stderr)
    if args.html:
        assert result.baseline.figures is not None and result.scenario.figures is not None
        page = side_by_side_page(result.baseline.figures, result.scenario.figures,
                                 summary_html(result, _describe_whatif(args)))  # fmt: skip
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"whatif: HTML written to {Path(args.html).resolve()}", file=sys.stderr)
    return 0


def _describe_whatif(args: argparse.Namespace) -> str:
    """The scenario in words, for the top of the HTML page (file names, never their contents)."""
    parts = [f"input {Path(args.input).name}"]
    parts.append(f"baseline policy {Path(args.baseline_policy).name if args.baseline_policy else 'defaults'}")
    parts.append(f"scenario policy {Path(args.policy).name if args.policy else 'defaults'}")
    if args.set:
        parts.append("set on every schedule: " + ", ".join(f"{k}={v}" for k, v in args.set))
    return " · ".join(parts)


def _quiet_kafka_client() -> None:
    """aiokafka logs each failed connection attempt; a command reports the failure once, itself
    (SPEC §6: one line on standard error), unless DUEWATCH_LOG_LEVEL=DEBUG asks for everything."""
    import logging
    import os

    if os.environ.get("DUEWATCH_LOG_LEVEL", "").upper() != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _cmd_report(args: argparse.Namespace) -> int:
    from .risk.report import figures_from_records, figures_from_topics, write_report

    if args.from_topic:
        import asyncio

        from aiokafka.errors import KafkaError

        from .contracts.topics import OVERDUE, SCHEDULES
        from .kafkaio import TopicMissing, read_to_end

        if args.until is not None:
            print("duewatch report: --until goes with --input (--from-topic reports what the topics hold)",
                  file=sys.stderr)  # fmt: skip
            return 2
        _quiet_kafka_client()
        try:
            read = asyncio.run(read_to_end(_settings(), (OVERDUE, SCHEDULES), args.timeout))
        except TopicMissing as exc:
            print(f"duewatch report: {exc}", file=sys.stderr)
            return 1
        except KafkaError as exc:
            print(f"duewatch report: cannot read from Kafka at {_settings().bootstrap_servers} ({exc}); "
                  "is it running, and is KAFKA_BOOTSTRAP_SERVERS right?", file=sys.stderr)  # fmt: skip
            return 1
        figures = figures_from_topics([r["value"] for r in read[OVERDUE] if "value" in r],
                                      [r["value"] for r in read[SCHEDULES] if "value" in r])  # fmt: skip
    else:
        from .replay import load_input

        figures = figures_from_records(load_input(args.input), args.until)
    path = write_report(figures, args.out)
    print(
        f"report: {figures.loans:,} loans as of {figures.as_of.isoformat()} written to {path}",
        file=sys.stderr,
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import asyncio

    from .audit import verify_topic
    from .contracts.topics import BUREAU
    from .kafkaio import logical_name

    cfg = _settings()
    if logical_name(args.topic, cfg) != BUREAU:
        print(f"duewatch verify: {args.topic} carries no hash chains; verify reads {BUREAU} (SPEC §7.1)",
              file=sys.stderr)  # fmt: skip
        return 2
    _quiet_kafka_client()
    result = asyncio.run(verify_topic(cfg, args.from_beginning, args.timeout, args.idle_timeout))
    for line in result.lines():
        print(line)
    return 0 if result.holds else 1


def _cmd_standing(args: argparse.Namespace) -> int:
    from .audit import standing_from_records
    from .contracts import jsonform
    from .replay import load_input

    print(jsonform.dumps(standing_from_records(load_input(args.input), args.loan, args.as_of).to_json()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from .settings import variables_help

    parser = argparse.ArgumentParser(prog="duewatch", description="Real-time loan-overdue detector.")
    parser.add_argument("--version", action="version", version=f"duewatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "worker", help="run a stream worker (detector, ticker, web server)",
        description="Run a stream worker: the detector, the routers, the ticker and the web server "
                    "(/health, /ready, /metrics). It is configured by the environment alone.",
        epilog=variables_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("replay", help="run the detector over a JSON-lines file")
    p.add_argument("--input", required=True, help="JSON lines {topic, key, value}")
    p.add_argument("--until", type=_instant, default=None, help="replay up to and including this instant")
    p.add_argument("--out", default=None, help="output file (default: standard output)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("produce", help="send JSON lines {key, value} to a topic, Avro-encoded")
    p.add_argument("topic", help="logical topic name, e.g. loan.repayments")
    p.add_argument("file", help="JSON-lines file ('-' for standard input)")
    p.add_argument(
        "--raw", action="store_true", help="send each line's value string as bytes, as-is (DLQ tests)"
    )
    _timeout_argument(p)
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("consume", help="print a topic's records as JSON lines")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument(
        "--idle-timeout", type=_seconds, default=5.0, help="stop after this many seconds without a record (5)"
    )
    p.add_argument("--max", type=_positive_int, default=None, help="stop after N records (N ≥ 1)")
    _timeout_argument(p)
    p.set_defaults(func=_cmd_consume)

    p = sub.add_parser("tick", help="send one Tick to every partition of clock.ticks")
    p.add_argument("--at", type=_instant, default=None, help="the tick's instant (default: now)")
    _timeout_argument(p)
    p.set_defaults(func=_cmd_tick)

    p = sub.add_parser("topics", help="manage topics")
    topics = p.add_subparsers(dest="topics_command", required=True)
    t = topics.add_parser("create", help="create every topic of SPEC §1 (idempotent)")
    _timeout_argument(t)
    t.set_defaults(func=_cmd_topics)

    p = sub.add_parser("release", help="let a loan set aside after an unexpected failure take records again")
    p.add_argument("loan_id", metavar="LOAN_ID")
    _timeout_argument(p)
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("dlq", help="what the dead-letter topic holds: list it, redrive it")
    dlq = p.add_subparsers(dest="dlq_command", required=True)
    for name, func, text in (("list", _cmd_dlq_list, "count DLQ records by reason and source; loans set aside"),
                             ("redrive", _cmd_dlq_redrive, "re-produce DLQ records to their source topics")):  # fmt: skip
        d = dlq.add_parser(name, help=text)
        d.add_argument("--reason", default=None, help="only records with this reason (e.g. LOAN_SET_ASIDE)")
        d.add_argument("--loan", default=None, help="only records of this loan id")
        if name == "redrive":
            d.add_argument("--dry-run", action="store_true", help="say what would be redriven, send nothing")
        _timeout_argument(d)
        d.set_defaults(func=func)

    p = sub.add_parser("simulate", help="produce a synthetic loan book and ticks on an accelerated clock")
    _book_arguments(p)
    p.add_argument(
        "--out", default=None, help="write replay input (JSON lines) to this file instead of Kafka"
    )
    _timeout_argument(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="the main job, live: broker, workers, simulated book, summary, check")
    _book_arguments(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("whatif", help="replay a book under two policies and compare (SPEC §7.3)")
    p.add_argument("--input", required=True, help="replay input: JSON lines {topic, key, value}")
    p.add_argument("--until", type=_instant, default=None, help="replay up to and including this instant")
    p.add_argument(
        "--policy", default=None, help="the scenario's routing policy (TOML; default: SPEC's defaults)"
    )
    p.add_argument(
        "--baseline-policy",
        default=None,
        help="the baseline's routing policy (TOML; default: SPEC's defaults)",
    )
    p.add_argument("--set", type=_override, action="append", metavar="FIELD=VALUE",
                   help="a schedule term set on every revision in the scenario: grace_days, tolerance, "
                        "late_fee or penalty_rate_bps (repeatable)")  # fmt: skip
    p.add_argument(
        "--json",
        default=None,
        metavar="OUT.json",
        help="write {baseline, scenario, difference, changed_loans}",
    )
    p.add_argument(
        "--html",
        default=None,
        metavar="OUT.html",
        help="write the tables and the report's charts side by side",
    )
    p.set_defaults(func=_cmd_whatif)

    p = sub.add_parser("report", help="the risk report: one self-contained HTML file (SPEC §7.4)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", default=None, help="replay input: JSON lines {topic, key, value}")
    source.add_argument(
        "--from-topic", action="store_true", help="read overdue.events and loan.schedules from the beginning"
    )
    p.add_argument("--until", type=_instant, default=None, help="with --input: replay up to this instant")
    p.add_argument("--out", required=True, metavar="REPORT.html", help="where to write the report")
    _timeout_argument(p, "with --from-topic: ")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("verify", help="verify the bureau records' hash chains; the heads digest (SPEC §7.1)")
    p.add_argument("topic", metavar="TOPIC", help="bureau.records")
    p.add_argument("--from-beginning", action="store_true",
                   help="every record from the topic's beginning (without it: follow new records, as consume)")  # fmt: skip
    p.add_argument("--idle-timeout", type=_speed, default=5.0,
                   help="without --from-beginning: stop after S seconds without a record (5)")  # fmt: skip
    p.add_argument(
        "--timeout", type=_speed, default=15.0, help="give up after S seconds without an answer (15)"
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("standing", help="a loan's standing at an instant, from a replay file (SPEC §7.2)")
    p.add_argument("--input", required=True, help="replay input: JSON lines {topic, key, value}")
    p.add_argument("--loan", required=True, metavar="ID", help="the loan id")
    p.add_argument("--as-of", required=True, type=_instant, metavar="INSTANT", help="ISO-8601 with an offset")
    p.set_defaults(func=_cmd_standing)
    return parser


def _timeout_argument(p: argparse.ArgumentParser, when: str = "") -> None:
    from .settings import COMMAND_TIMEOUT

    p.add_argument("--timeout", type=_seconds, default=COMMAND_TIMEOUT, metavar="S",
                   help=f"{when}fail when Kafka does not answer within S seconds ({COMMAND_TIMEOUT:g})")  # fmt: skip


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("duewatch")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _debugging() -> bool:
    import os

    return os.environ.get("DUEWATCH_LOG_LEVEL", "").strip().upper() == "DEBUG"


def _traceback_when_debugging() -> None:
    """The traceback of the exception being handled, on standard error, at DUEWATCH_LOG_LEVEL=DEBUG
    only (SPEC §6: otherwise an error is one line)."""
    if _debugging():
        import traceback

        traceback.print_exc()


def _expected() -> tuple[type[BaseException], ...]:
    """The failures a command reports in one line: its input, its files, its settings, Kafka."""
    from aiokafka.errors import KafkaError

    from .contracts.registry import RegistryError
    from .kafkaio import TopicMissing

    return OSError, ValueError, TopicMissing, TimeoutError, KafkaError, RegistryError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `duewatch` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    try:
        if args.command in KAFKA_COMMANDS:
            return _against_kafka(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 1
    except UsageError as exc:
        print(f"duewatch {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - SPEC §6: one line, not a traceback, for every failure
        _traceback_when_debugging()
        if isinstance(exc, _expected()):
            print(f"duewatch {args.command}: {exc}", file=sys.stderr)
        else:
            print(f"duewatch {args.command}: unexpected {type(exc).__name__}: {exc} (a bug; "
                  "DUEWATCH_LOG_LEVEL=DEBUG shows where)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
