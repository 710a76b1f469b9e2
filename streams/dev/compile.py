"""Compile ``streams/core`` with mypyc from its own sources (``make compile``, run by ``make venv``).

    python -m streams.dev.compile          # build when the sources changed; quiet when fresh
    python -m streams.dev.compile --setup  # the same, but a failed build does not fail (make venv)
    python -m streams.dev.compile --force  # build again anyway
    python -m streams.dev.compile --clean  # remove the build: the sources run

The extension modules go to ``build/native/streams/core/`` with a manifest of the sources'
SHA-256 written last; ``streams.core.compiled`` loads them only when that manifest matches the
sources beside it, so a build never runs code other than the source in the tree. Without a C
compiler, Python's headers or mypyc, the build says so in one line on stderr and succeeds: the
sources run (the same results, slower). A build that fails with a compiler present fails loudly
(a construct mypyc cannot compile has entered the core) — except under ``--setup``, which is how
``make venv`` calls it: set-up must not stop for an optional speed-up, so there it says so in one
line, removes any older build and goes on with the sources. Under CI=true the core's tests fail
unless the compiled form runs (``tests/unit/core/test_compiled.py``), so CI notices all the same.
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
#: What :func:`build` returns when a source changed while it compiled (nothing is installed).
CHANGED = 2


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


def build(
    build_dir: Path = compiled.BUILD_DIR, package_dir: Path = compiled.PACKAGE_DIR, quiet: bool = False
) -> int:
    """Compile the package's modules into ``build_dir`` (replacing what was there); 0 on success,
    :data:`CHANGED` when a source changed meanwhile, 1 when the build failed.
    A failed build's log is kept beside it (``<build_dir>.failed.log``); ``quiet``: nothing said
    about a failure (the caller says it), rather than the log's tail."""
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
        if not quiet:
            tail = kept.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
            print("\n".join(tail), file=sys.stderr)
            print(f"make compile: mypyc could not compile streams/core (log: {kept})", file=sys.stderr)
        return 1
    if compiled.manifest(package_dir) != before:
        shutil.rmtree(work, ignore_errors=True)
        print("make compile: the sources changed during the build; run it again", file=sys.stderr)
        return CHANGED
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


def main(argv: list[str] | None = None, package_dir: Path = compiled.PACKAGE_DIR) -> int:
    """Build when the build does not fit ``package_dir``'s sources; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m streams.dev.compile", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="build even when the build is fresh")
    parser.add_argument("--clean", action="store_true", help="remove the build (the sources run)")
    parser.add_argument(
        "--setup", action="store_true", help="a failed build is one line and exit 0 (make venv)"
    )
    # Tests build elsewhere; the core loads only from compiled.BUILD_DIR.
    parser.add_argument("--build-dir", type=Path, default=compiled.BUILD_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    build_dir: Path = args.build_dir
    if args.clean:
        shutil.rmtree(build_dir, ignore_errors=True)
        return 0
    if compiled.choose(package_dir, build_dir, environ={}).compiled and not args.force:
        return 0  # the build fits the sources: nothing to do, nothing said
    why_not = missing_toolchain()
    if why_not is not None:
        shutil.rmtree(build_dir, ignore_errors=True)  # nothing stale is left to confuse anyone
        print(
            f"make compile: {why_not}; streams/core runs as pure Python (same results, slower)",
            file=sys.stderr,
        )
        return 0
    status = build(build_dir, package_dir, quiet=args.setup)
    if status == CHANGED:
        return 0 if args.setup else 1  # said; the sources run until the next build
    if status != 0 and args.setup:
        # The sources run; an older build would only be reported as stale at every start.
        shutil.rmtree(build_dir, ignore_errors=True)
        log = build_dir.with_name(build_dir.name + ".failed.log")
        print(
            f"make venv: mypyc could not compile streams/core (log: {log}); "
            "it runs as pure Python (same results, slower)",
            file=sys.stderr,
        )
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
