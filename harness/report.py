"""The generated sections of the docs: each measuring command rewrites its own, between its markers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def write_section(path: Path, section: str, start: str, end: str, heading: str, title: str = "# Benchmarks") -> None:
    """Replace one command's section of the document (between its markers), keeping whatever people wrote
    around it; a document without the markers gets the section appended under `heading` (a new one starts with
    `title`)."""
    text = path.read_text() if path.exists() else f"{title}\n"
    if start not in text:
        text = f"{text.rstrip()}\n\n{heading}\n\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(before + section + after)


def machine() -> str:
    """The machine a benchmark ran on, for its section's first line: figures differ several-fold between CPUs
    (this project's 2-core machines have been an AMD EPYC and an Intel Xeon)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
