"""A toy ``streams/core`` package and a recorded build of it: what the tests of the compiled
core's choice (``streams.core.compiled``) and of its build (``streams.dev.compile``) work on, so
that neither has to compile the real core."""

from __future__ import annotations

import json
from pathlib import Path

from streams.core import compiled


def toy_package(tmp_path: Path) -> tuple[Path, Path]:
    """A package of two modules (plus the files that are never compiled) and where its build goes."""
    package = tmp_path / "src" / "streams" / "core"
    package.mkdir(parents=True)
    for name, text in (("__init__.py", ""), ("compiled.py", ""), ("a.py", "A = 1\n"), ("b.py", "B = 2\n")):
        (package / name).write_text(text)
    return package, tmp_path / "build" / "native"


def built(package: Path, build_dir: Path) -> None:
    """Record a build of ``package``'s current sources in ``build_dir`` (its manifest alone)."""
    build_dir.mkdir(parents=True)
    (build_dir / compiled.MANIFEST).write_text(json.dumps(compiled.manifest(package)))
