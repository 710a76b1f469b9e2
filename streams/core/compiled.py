"""Which form of the core runs: its modules compiled by mypyc, or these sources.

``make venv`` (so ``make test`` and ``make demo``) compiles the core's modules from these very
sources into ``build/native/`` (``streams/dev/compile.py``); ``streams/core/__init__.py`` asks
:func:`install` whether to put that directory first on the package's ``__path__``. The compiled
modules are used only all together and only when every one was built from exactly the source
beside it: the build records each source's SHA-256, so an edited source, a module added since,
a half-written build or another Python version mean the sources run (a stale build is said on
stderr, once). ``DUEWATCH_PURE_PYTHON=1`` runs the sources on purpose (``make test-pure``).

What is compiled: the modules of this package, not ``routing/`` — its state codec reads the
state dataclasses' field types at run time (``get_type_hints``), and mypyc gives a compiled
dataclass erased annotations (``tuple`` for ``tuple[str, ...]``). This module and the package
``__init__`` decide which form loads, so they always run as sources.

What compiling buys depends on one thing the sources must do for it: mypyc compiles functions
and the methods written in a class, but the ``__init__`` that ``@dataclass`` generates stays
interpreted (and was over half of a compiled repayment's instructions). The values built on every
step therefore write their ``__init__`` out — exactly what ``dataclasses`` generates for a frozen
class, ``object.__setattr__`` per field, which mypyc turns into a native store — and a test keeps
each one equal to its fields (``tests/unit/core/test_compiled.py``).
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import json
import logging
import os
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Set to 1 (or true/yes) to run the sources even when a fresh compiled build exists.
PURE_ENV = "DUEWATCH_PURE_PYTHON"
#: The compiled build's own record of what it was built from (written last by the build).
MANIFEST = "manifest.json"
#: The shared library mypyc puts every compiled module's code in (``<group>__mypyc``).
GROUP = "streams.core.lib"
#: Modules of the package that decide which form loads, so they always run as sources.
NOT_COMPILED = frozenset({"__init__.py", "compiled.py"})

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where ``make compile`` puts the build: ``build/native`` of the checkout.
BUILD_DIR = PACKAGE_DIR.parents[1] / "build" / "native"

_log = logging.getLogger("streams.core")


@dataclass(frozen=True, slots=True)
class Form:
    """The form of the core this process runs, and why."""

    compiled: bool
    reason: str  # a short phrase for a log line: "compiled by mypyc", "not built", ...
    path: Path | None = None  # the compiled modules' directory when ``compiled``


def sources(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The modules a build compiles: the package's own ``.py`` files (not its subpackages)."""
    return sorted(p for p in package_dir.glob("*.py") if p.name not in NOT_COMPILED)


def digest(path: Path) -> str:
    """The SHA-256 of a source file, as the manifest records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ext_suffix() -> str:
    """The file suffix of this interpreter's extension modules (``.cpython-311-x86_64-linux-gnu.so``)."""
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def manifest(package_dir: Path = PACKAGE_DIR) -> dict[str, object]:
    """What a build of the current sources records (the build writes it; :func:`choose` compares)."""
    return {
        "ext_suffix": ext_suffix(),
        "sources": {p.name: digest(p) for p in sources(package_dir)},
    }


def pure_wanted(environ: Mapping[str, str]) -> bool:
    """``DUEWATCH_PURE_PYTHON`` asks for the sources (1, true or yes; 0 or empty does not)."""
    return environ.get(PURE_ENV, "").strip().lower() in {"1", "true", "yes"}


def choose(
    package_dir: Path = PACKAGE_DIR, build_dir: Path = BUILD_DIR, environ: Mapping[str, str] = os.environ
) -> Form:
    """The form to run: compiled when a build of exactly these sources for this Python exists
    under ``build_dir`` and ``DUEWATCH_PURE_PYTHON`` does not ask for the sources."""
    if pure_wanted(environ):
        return Form(False, f"{PURE_ENV} is set")
    try:
        recorded = json.loads((build_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Form(False, "not built")
    except (OSError, ValueError) as exc:
        return Form(False, f"unreadable build manifest ({type(exc).__name__})")
    if not isinstance(recorded, dict) or recorded.get("ext_suffix") != ext_suffix():
        return Form(False, "built for another Python")
    current = {p.name: digest(p) for p in sources(package_dir)}
    built = recorded.get("sources")
    built = built if isinstance(built, dict) else {}
    changed = sorted(n for n in current.keys() | built.keys() if current.get(n) != built.get(n))
    if changed:
        return Form(False, f"stale ({', '.join(changed)} changed since it was built)")
    compiled_dir = build_dir / package_dir.parent.name / package_dir.name
    return Form(True, "compiled by mypyc", compiled_dir)


def strays(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Extension modules beside the sources (an in-place build, e.g. ``mypyc`` run by hand): Python
    loads them before the sources whatever :func:`choose` says."""
    return sorted(p.name for p in package_dir.glob("*" + ext_suffix()))


def install(package_path: list[str]) -> Form:
    """Put the compiled modules first on ``package_path`` (the package's ``__path__``) when
    :func:`choose` says so; a stale build, or an extension module beside the sources, is reported
    once on the ``streams.core`` logger."""
    for name in strays(PACKAGE_DIR):
        _log.warning("streams/core: %s beside the sources shadows its source; delete it", name)
    form = choose(PACKAGE_DIR, BUILD_DIR, os.environ)
    if form.compiled:
        assert form.path is not None
        package_path.insert(0, str(form.path))
    elif form.reason.startswith("stale"):
        _log.warning(
            "streams/core: the compiled build is %s; running the sources (make compile)", form.reason
        )
    return form


def _restore(cls: Any, given: tuple[Any, ...], memos: tuple[tuple[str, Any], ...]) -> Any:
    """A value of dataclass ``cls`` built by its ``__init__`` from ``given`` (its init fields, in
    order), with its other fields (memos, derived values) then set as they were pickled."""
    value = cls(*given)
    for name, item in memos:
        object.__setattr__(value, name, item)
    return value


def _reduce(value: Any) -> tuple[Any, tuple[Any, ...]]:
    fields = dataclasses.fields(value)
    given = tuple(getattr(value, f.name) for f in fields if f.init)
    return _restore, (
        type(value),
        given,
        tuple((f.name, getattr(value, f.name)) for f in fields if not f.init),
    )


def picklable(namespace: Mapping[str, object]) -> None:
    """Pickle and copy the dataclasses a module defines (``picklable(globals())`` at its end) field
    by field, in both forms: rebuilt by their ``__init__``, then their other fields set.

    Compiled, a frozen dataclass would otherwise unpickle through mypyc's own ``__setstate__``,
    which sets each attribute through the class's frozen ``__setattr__`` and fails (and
    ``cls.__new__`` of a compiled class runs its ``__init__``, so the way ``dataclasses`` pickles a
    slots class is not open either): what-if's two processes hand values of the core (its
    engine configuration, the replayed outcomes) between processes."""
    module = namespace.get("__name__")
    for value in namespace.values():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module:
            copyreg.pickle(value, _reduce)
