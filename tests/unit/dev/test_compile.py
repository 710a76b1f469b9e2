"""The build of the compiled core (``python -m streams.dev.compile``, run by ``make venv``): set-up
never stops for it — no compiler, or a build that fails, means the sources run and one line on
stderr says so — and a build that fits the sources is not made again."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.core import compiled
from streams.dev import compile as build_tool
from tests.support.native import built, toy_package
from tests.support.shared import missing


def test_without_a_c_compiler_the_build_says_so_once_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    build_dir = tmp_path / "native"
    build_dir.mkdir()  # an old build: removed, so nothing stale is left
    assert build_tool.main(["--build-dir", str(build_dir)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"make compile: no C compiler ({tmp_path / 'no-such-cc'} not found); "
        "streams/core runs as pure Python (same results, slower)\n"
    )
    assert out == "" and not build_dir.exists()


def test_a_build_that_fits_the_sources_is_not_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make venv`` runs the build step every time: when the build fits it does nothing, says
    nothing (with no compiler at all, anything more would print the no-compiler line)."""
    package, build_dir = toy_package(tmp_path)
    built(package, build_dir)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert build_tool.main(["--setup", "--build-dir", str(build_dir)], package_dir=package) == 0
    assert capsys.readouterr() == ("", "")
    assert (build_dir / compiled.MANIFEST).exists()
    (package / "a.py").write_text("A = 5\n")  # stale: now it must try (and says it cannot)
    assert build_tool.main(["--setup", "--build-dir", str(build_dir)], package_dir=package) == 0
    assert "no C compiler" in capsys.readouterr().err and not build_dir.exists()


def test_a_failed_build_does_not_stop_set_up_and_leaves_the_sources_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module mypyc refuses (a type error here): ``--setup`` (make venv) says so in one line,
    exits 0 and removes the older build; ``make compile`` fails."""
    if build_tool.missing_toolchain() is not None:
        missing(f"cannot build here: {build_tool.missing_toolchain()}")
    package, build_dir = toy_package(tmp_path)
    (package.parent / "__init__.py").write_text("")
    (package / "b.py").write_text('B: int = "two"\n')
    built(package, build_dir)
    (package / "b.py").write_text('B: int = "three"\n')  # the older build is stale
    assert build_tool.main(["--build-dir", str(build_dir)], package_dir=package) == 1
    assert build_dir.exists()  # make compile leaves what was there and fails
    capsys.readouterr()
    assert build_tool.main(["--setup", "--build-dir", str(build_dir)], package_dir=package) == 0
    out, err = capsys.readouterr()
    log = build_dir.with_name("native.failed.log")
    assert out == "" and err == (
        f"make venv: mypyc could not compile streams/core (log: {log}); "
        "it runs as pure Python (same results, slower)\n"
    )
    assert not build_dir.exists() and "incompatible types in assignment" in log.read_text().lower()
