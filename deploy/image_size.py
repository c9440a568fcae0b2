"""Estimate what a Bento's Python packages add to its container image, from the locked requirements alone.

    python deploy/image_size.py digitserve:latest digitserve-gpu:latest     # Bentos in the store (make bento)

For each pinned package it takes the size of the wheel pip would download for CPython 3.11 on manylinux x86_64
(from PyPI's simple index as PEP 691 JSON: the only network it uses), and, where the same version is installed
here, its installed size.
The base image (python:3.11-slim) and BentoML's build tools (build-essential, git) come on top.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from importlib import metadata
from pathlib import Path

WHEEL_TAGS = ("cp311", "abi3", "py3-none", "py2.py3-none")


def pins(bento: Path) -> list[tuple[str, str]]:
    lines = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    found = (re.match(r"^([A-Za-z0-9_.\-]+)(?:\[.*\])?==([^\s;]+)", line) for line in lines)
    return [m.groups() for m in found if m]


def wheel_bytes(name: str, version: str) -> int:
    request = urllib.request.Request(
        f"https://pypi.org/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    wheels = [
        f
        for f in files
        if f["filename"].lower().startswith(stem)
        and f["filename"].endswith(".whl")
        and any(tag in f["filename"] for tag in WHEEL_TAGS)
        and (("manylinux" in f["filename"] and "x86_64" in f["filename"]) or "none-any" in f["filename"])
    ]
    return min((f["size"] for f in wheels), default=0)


def installed_bytes(name: str, version: str) -> int | None:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    return sum(f.size or 0 for f in dist.files or [])


def bento_folder(tag_or_path: str) -> Path:
    if Path(tag_or_path).is_dir():
        return Path(tag_or_path)
    import bentoml

    return Path(bentoml.bentos.get(tag_or_path).path)


def main() -> None:
    for bento in map(bento_folder, sys.argv[1:]):
        rows = [(n, v, wheel_bytes(n, v), installed_bytes(n, v)) for n, v in pins(bento)]
        rows.sort(key=lambda r: -r[2])
        download = sum(r[2] for r in rows)
        known = [r for r in rows if r[3] is not None]
        print(f"{bento.resolve()}: {len(rows)} packages, wheels {download / 1e6:.0f} MB to download")
        if len(known) == len(rows):
            print(f"  installed here (same versions): {sum(r[3] for r in known) / 1e6:.0f} MB")
        for name, version, size, _ in rows[:8]:
            print(f"  {name}=={version}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
