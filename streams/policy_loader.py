"""Loading the routing policy at the edge: the TOML file, the template directory, the environment.

The routers in ``streams.core.routing`` are pure and take a :class:`Policy` value; this
module is where files and environment variables are read to build it, once at start-up.
``DUEWATCH_POLICY_FILE`` names the file; without one SPEC §5's defaults apply with the
templates shipped in ``streams/templates``. A partner key given as ``key_env`` is read
from the environment here and never logged.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from streams.core.routing.policy import SUPPORTED_LOCALES, Policy, PolicyError, policy_from_mapping

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
POLICY_FILE_ENV = "DUEWATCH_POLICY_FILE"


def read_templates(directory: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Every ``<template_id>.<locale>.txt`` in ``directory``: template id → locale → text."""
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError(f"template directory {root} does not exist")
    templates: dict[str, dict[str, str]] = {}
    for path in sorted(root.glob("*.txt")):
        stem = path.name[: -len(".txt")]
        for locale in SUPPORTED_LOCALES:
            suffix = f".{locale}"
            if stem.endswith(suffix):
                templates.setdefault(stem[: -len(suffix)], {})[locale] = path.read_text(encoding="utf-8")
    return templates


def load_policy(path: str | None, *, environ: Mapping[str, str] | None = None) -> Policy:
    """The policy from the TOML file at ``path`` (None: defaults), with templates and partner keys resolved.

    A relative ``[templates] dir`` is taken relative to the policy file's directory.
    Raises :class:`PolicyError` with the file name and the offending key.
    """
    environ = os.environ if environ is None else environ
    data: dict = {}
    base = Path.cwd()
    if path is not None:
        policy_path = Path(path)
        try:
            with policy_path.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
        base = policy_path.resolve().parent
    section = data.get("templates", {})
    directory = section.get("dir") if isinstance(section, Mapping) else None
    template_dir = DEFAULT_TEMPLATE_DIR if directory is None else (base / str(directory)).resolve()
    try:
        policy = policy_from_mapping(data, env=environ, templates=read_templates(template_dir))
    except PolicyError as exc:
        raise PolicyError(f"{path or 'default policy'}: {exc}") from None
    return replace(policy, template_dir=str(template_dir))


def load_policy_from_env(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy named by ``DUEWATCH_POLICY_FILE`` (SPEC's defaults when it is unset or empty)."""
    environ = os.environ if environ is None else environ
    return load_policy(environ.get(POLICY_FILE_ENV) or None, environ=environ)
