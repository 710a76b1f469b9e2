"""What machine a benchmark ran on, so numbers are never quoted without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """One line: CPU model, cores, memory, Python."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) // (1024 * 1024)} GiB"
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()} ({platform.system()})"
    )
