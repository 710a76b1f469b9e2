"""Environment settings (SPEC §6 plus the documented extras): defaults and clear errors."""

from __future__ import annotations

import pytest

from streams.settings import Settings, from_env


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    cfg = from_env({})
    assert cfg == Settings(web_host=cfg.web_host)  # the host name defaults to this machine's
    assert (cfg.partitions, cfg.tick_interval, cfg.settle_delay, cfg.batch_max) == (12, 1.0, 60.0, 2000)


def test_the_batch_size_is_set_from_the_environment() -> None:
    assert from_env({"DUEWATCH_BATCH_MAX": "1"}).batch_max == 1


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_batch_size_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="DUEWATCH_BATCH_MAX"):
        from_env({"DUEWATCH_BATCH_MAX": value})
