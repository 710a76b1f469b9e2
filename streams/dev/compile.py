"""Compile ``streams/core`` with mypyc from its own sources (``make compile``, run by ``make venv``).

    python -m streams.dev.compile          # build when the sources changed; quiet when fresh
    python -m streams.dev.compile --force  # build again anyway
    python -m streams.dev.compile --clean  # remove the build: the sources run

The extension modules go to ``build/native/streams/core/`` with a manifest of the sources'
SHA-256 written last; ``streams.core.compiled`` loads them only when that manifest matches the
sources beside it, so a build never runs code other than the source in the tree. Without a C
compiler, Python's headers or mypyc, the build says so in one line and succeeds: the sources run
(the same results, slower). A build that fails with a compiler present fails loudly: a construct
mypyc cannot compile has entered the core.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from ..core import compiled

#: The build's compiler output, kept for a failed build's diagnosis.
LOG = "build.log"


def missing_toolchain(environ: dict[str, str] | None = None) -> str | None:
    """Why this machine cannot build the extension modules, or None when it can: mypyc (from the
    ``test`` extra), a C compiler (``$CC`` or Python's configured one), and ``Python.h``."""
    environ = dict(os.environ) if environ is None else environ
    try:
        import mypyc.build  # noqa: F401 - only whether it is there
    except ImportError:
        return "mypyc is not installed (pip install -e '.[test]')"
    cc = environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    program = shlex.split(cc)[0] if cc.strip() else "cc"
    if shutil.which(program) is None:
        return f"no C compiler ({program} not found)"
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        return f"no Python headers ({include / 'Python.h'} not found)"
    return None


def _setup_script(sources: list[Path], out: Path) -> str:
    """The child build: mypyc's C for the whole group, then setuptools compiles and links it."""
    paths = [str(p) for p in sources]
    return f"""
import os, sys
from setuptools import setup
from mypyc.build import mypycify
extensions = mypycify({paths!r}, group_name={compiled.GROUP!r}, target_dir={str(out / "c")!r}, opt_level="3")
os.chdir({str(out)!r})  # setup() reads the project configuration of its working directory
setup(name="duewatch-core", ext_modules=extensions,
      script_args=["build_ext", "--build-lib", {str(out)!r}, "--build-temp", {str(out / "tmp")!r}])
"""


def build(build_dir: Path = compiled.BUILD_DIR, package_dir: Path = compiled.PACKAGE_DIR) -> int:
    """Compile the package's modules into ``build_dir`` (replacing what was there); 0 on success."""
    sources = compiled.sources(package_dir)
    before = compiled.manifest(package_dir)
    work = build_dir.with_name(build_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    with open(work / LOG, "w", encoding="utf-8") as log:
        done = subprocess.run(
            [sys.executable, "-c", _setup_script(sources, work)],
            cwd=package_dir.parents[1],  # mypy reads the project's [tool.mypy] settings there
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        kept = build_dir.with_name(build_dir.name + ".failed.log")
        shutil.copyfile(work / LOG, kept)
        shutil.rmtree(work, ignore_errors=True)
        tail = kept.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        print(f"make compile: mypyc could not compile streams/core (log: {kept})", file=sys.stderr)
        return 1
    if compiled.manifest(package_dir) != before:
        shutil.rmtree(work, ignore_errors=True)
        print("make compile: the sources changed during the build; run it again", file=sys.stderr)
        return 1
    for scratch in ("c", "tmp"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    (work / compiled.MANIFEST).write_text(json.dumps(before, indent=1, sort_keys=True), encoding="utf-8")
    shutil.rmtree(build_dir, ignore_errors=True)
    work.rename(build_dir)
    print(
        f"make compile: streams/core compiled by mypyc ({len(sources)} modules, "
        f"{time.monotonic() - started:.0f} s) into {build_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.compile", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="build even when the build is fresh")
    parser.add_argument("--clean", action="store_true", help="remove the build (the sources run)")
    # Tests build elsewhere; the core loads only from compiled.BUILD_DIR.
    parser.add_argument("--build-dir", type=Path, default=compiled.BUILD_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    build_dir: Path = args.build_dir
    if args.clean:
        shutil.rmtree(build_dir, ignore_errors=True)
        return 0
    if compiled.choose(build_dir=build_dir, environ={}).compiled and not args.force:
        return 0
    why_not = missing_toolchain()
    if why_not is not None:
        shutil.rmtree(build_dir, ignore_errors=True)  # nothing stale is left to confuse anyone
        print(f"make compile: {why_not}; streams/core runs as pure Python (same results, slower)")
        return 0
    return build(build_dir)


if __name__ == "__main__":
    sys.exit(main())
