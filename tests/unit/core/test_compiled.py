"""The two forms of the core: compiled by mypyc (``make compile``) and its sources.

The whole core suite runs against both (``make test`` runs tests/unit/core again with
DUEWATCH_PURE_PYTHON=1); these tests check the choice itself: a build is used only when made from
exactly the sources in the tree, the form that runs is the one chosen (and, under CI=true, is the
compiled one), and the written-out initialisers (what lets mypyc compile a value's construction)
say exactly what their dataclass fields say. The build itself: tests/unit/dev/test_compile.py.
"""

from __future__ import annotations

import ast
import copy
import copyreg
import dataclasses
import importlib
import json
import logging
import os
import pickle
from pathlib import Path

import pytest

import streams.core
from streams.core import compiled
from streams.core.config import EngineConfig
from streams.core.loan import apply_repayment, apply_schedule, new_loan, tick
from tests.support.builders import at, payment, schedule
from tests.support.native import built, toy_package
from tests.support.shared import REPO, missing


def test_a_build_of_exactly_these_sources_is_used(tmp_path: Path) -> None:
    package, build_dir = toy_package(tmp_path)
    assert compiled.choose(package, build_dir, {}) == compiled.Form(False, "not built")
    built(package, build_dir)
    form = compiled.choose(package, build_dir, {})
    assert form.compiled and form.path == build_dir / "streams" / "core"
    assert sorted(json.loads((build_dir / compiled.MANIFEST).read_text())["sources"]) == ["a.py", "b.py"]


def test_an_edited_added_or_removed_source_makes_the_build_stale(tmp_path: Path) -> None:
    package, build_dir = toy_package(tmp_path)
    built(package, build_dir)
    (package / "a.py").write_text("A = 3\n")
    assert compiled.choose(package, build_dir, {}) == compiled.Form(
        False, "stale (a.py changed since it was built)"
    )
    (package / "a.py").write_text("A = 1\n")  # the same bytes again: the build fits again
    assert compiled.choose(package, build_dir, {}).compiled
    (package / "c.py").write_text("C = 3\n")
    assert compiled.choose(package, build_dir, {}).reason == "stale (c.py changed since it was built)"
    (package / "c.py").unlink()
    (package / "b.py").unlink()
    assert compiled.choose(package, build_dir, {}).reason == "stale (b.py changed since it was built)"


def test_the_sources_run_when_asked_or_when_the_build_is_not_for_this_python(tmp_path: Path) -> None:
    package, build_dir = toy_package(tmp_path)
    built(package, build_dir)
    for value in ("1", "true", "yes"):
        assert compiled.choose(package, build_dir, {compiled.PURE_ENV: value}) == compiled.Form(
            False, "DUEWATCH_PURE_PYTHON is set"
        )
    assert compiled.choose(package, build_dir, {compiled.PURE_ENV: "0"}).compiled
    recorded = json.loads((build_dir / compiled.MANIFEST).read_text())
    (build_dir / compiled.MANIFEST).write_text(json.dumps({**recorded, "ext_suffix": ".cpython-399.so"}))
    assert compiled.choose(package, build_dir, {}).reason == "built for another Python"
    (build_dir / compiled.MANIFEST).write_text('{"ext_suffix": ')  # a build cut short
    assert compiled.choose(package, build_dir, {}).reason == "unreadable build manifest (JSONDecodeError)"


def test_a_stale_build_is_said_on_stderr_and_left_off_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    package, build_dir = toy_package(tmp_path)
    built(package, build_dir)
    (package / "b.py").write_text("B = 4\n")
    monkeypatch.setattr(compiled, "PACKAGE_DIR", package)
    monkeypatch.setattr(compiled, "BUILD_DIR", build_dir)
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    path = [str(package)]
    with caplog.at_level(logging.WARNING, logger="streams.core"):
        form = compiled.install(path)
    assert not form.compiled and path == [str(package)]
    assert [r.getMessage() for r in caplog.records] == [
        "streams/core: the compiled build is stale (b.py changed since it was built); "
        "running the sources (make compile)"
    ]
    (package / "b.py").write_text("B = 2\n")
    caplog.clear()
    assert compiled.install(path).compiled and path == [str(build_dir / "streams" / "core"), str(package)]
    assert not caplog.records


def test_an_extension_module_beside_the_sources_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Python would load it instead of its source in either form: say so."""
    package, build_dir = toy_package(tmp_path)
    (package / f"a{compiled.ext_suffix()}").write_bytes(b"")
    monkeypatch.setattr(compiled, "PACKAGE_DIR", package)
    monkeypatch.setattr(compiled, "BUILD_DIR", build_dir)
    with caplog.at_level(logging.WARNING, logger="streams.core"):
        compiled.install([str(package)])
    assert [r.getMessage() for r in caplog.records] == [
        f"streams/core: a{compiled.ext_suffix()} beside the sources shadows its source; delete it"
    ]
    assert compiled.strays() == []  # and the checkout has none


def test_the_form_that_runs_is_the_one_chosen() -> None:
    """Every compiled module comes from the build, or every one from its source: never a mix.
    Without DUEWATCH_PURE_PYTHON the compiled form must run: a skip on a developer's machine without
    a fresh build, a failure under CI=true, whose set-up (``make venv``) must have built it."""
    form = streams.core.FORM
    assert form == compiled.choose()
    if compiled.pure_wanted(os.environ):
        assert not form.compiled
    elif not form.compiled:
        missing(f"streams/core is not compiled ({form.reason}): run `make compile`")
    suffix = compiled.ext_suffix() if form.compiled else ".py"
    for source in compiled.sources():
        module = importlib.import_module(f"streams.core.{source.stem}")
        assert module.__file__ is not None and module.__file__.endswith(suffix), module.__file__
    assert compiled.__file__.endswith(".py") and streams.core.__file__.endswith(".py")


def test_every_dataclass_of_the_core_pickles_field_by_field() -> None:
    """Registered in either form, so both forms pickle the same way (compiled, a frozen one
    would otherwise fail to unpickle: see ``compiled.picklable``)."""
    registered = []
    for source in compiled.sources():
        module = importlib.import_module(f"streams.core.{source.stem}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                assert copyreg.dispatch_table.get(value) is compiled._reduce, value
                registered.append(value.__name__)
    assert {"EngineConfig", "LoanState", "OverdueEvent", "Outcome", "Carry", "Ledger"} <= set(registered)


def test_the_cores_values_cross_a_process_boundary_unchanged() -> None:
    """What-if's second process receives the core's values pickled (its engine configuration, and
    returns the replayed outcomes)."""
    cfg = EngineConfig()
    opened = tick(apply_schedule(new_loan("L1"), schedule(), None, cfg).state, at("2026-03-16T00:01"), cfg)
    cured = apply_repayment(
        opened.state, payment("p1", 100_000, "2026-03-17T10:00"), at("2026-03-17T10:00"), cfg
    )
    assert opened.events and cured.events  # an OVERDUE_OPENED, then its cure
    state = cured.state
    values = [cfg, opened, cured, state, state.carry, state.ledger(), *state.schedules, *state.repayments]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value, type(value)
        assert copy.deepcopy(value) == value and copy.copy(value) == value, type(value)
    again = pickle.loads(pickle.dumps(cured.events[0]))
    assert again.event_id == cured.events[0].event_id and again.to_dict() == cured.events[0].to_dict()


# --- the written-out initialisers -------------------------------------------------------------


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any(
        isinstance(d, ast.Call) and getattr(d.func, "id", None) == "dataclass" for d in node.decorator_list
    )


def _fields(source: str, node: ast.ClassDef) -> tuple[list[tuple[str, str, str | None]], dict[str, str]]:
    """The class's init fields as (name, annotation, default) and its init=False fields' defaults."""
    init: list[tuple[str, str, str | None]] = []
    memos: dict[str, str] = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        name, annotation = item.target.id, ast.get_source_segment(source, item.annotation) or ""
        value = item.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
            options = {k.arg: k.value for k in value.keywords}
            default = ast.get_source_segment(source, options["default"]) if "default" in options else None
            if isinstance(options.get("init"), ast.Constant) and options["init"].value is False:
                memos[name] = default or ""
                continue
        else:
            default = ast.get_source_segment(source, value) if value is not None else None
        init.append((name, annotation, default))
    return init, memos


def _assigned(source: str, init: ast.FunctionDef) -> dict[str, str]:
    """What the initialiser sets each attribute to (``object.__setattr__`` or ``self.x =``)."""
    out: dict[str, str] = {}
    for statement in init.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            call = statement.value
            if ast.unparse(call.func) == "object.__setattr__" and isinstance(call.args[1], ast.Constant):
                out[call.args[1].value] = ast.get_source_segment(source, call.args[2]) or ""
        elif isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Attribute):
            out[statement.targets[0].attr] = ast.get_source_segment(source, statement.value) or ""
    return out


def test_the_written_out_initialisers_say_what_their_fields_say() -> None:
    """A dataclass of the core whose ``__init__`` is written out (mypyc compiles a written-out one,
    not the one dataclasses generates) takes exactly its init fields, in order, with their
    annotations and defaults, and sets every field: the parameters as given, the memos to their
    defaults."""
    checked = []
    for path in sorted((REPO / "streams" / "core").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.ClassDef) and _is_dataclass(node)):
                continue
            init = next(
                (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None
            )
            if init is None:
                continue
            fields, memos = _fields(source, node)
            arguments = init.args.args[1:]
            defaults = [None] * (len(arguments) - len(init.args.defaults)) + [
                ast.get_source_segment(source, d) for d in init.args.defaults
            ]
            taken = [
                (a.arg, ast.get_source_segment(source, a.annotation) if a.annotation else "", default)
                for a, default in zip(arguments, defaults, strict=True)
            ]
            where = f"{path.name}:{node.name}"
            assert taken == fields, where
            assert _assigned(source, init) == {name: name for name, _, _ in fields} | memos, where
            checked.append(where)
    assert len(checked) >= 10, checked  # the hot values of every step: see docs/decisions.md
