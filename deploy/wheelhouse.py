"""`make wheelhouse`: every wheel that serving needs, in one folder, for hosts without a package index.

    python deploy/wheelhouse.py                          # CPU flavour, for this machine's Python and platform
    python deploy/wheelhouse.py --flavour gpu            # onnxruntime-gpu with CUDA 13 and cuDNN 9 as wheels
    python deploy/wheelhouse.py --flavour gpu-no-cuda    # onnxruntime-gpu alone: the host has CUDA 13 + cuDNN 9
    python deploy/wheelhouse.py --python-version 3.12 --platform manylinux_2_28_x86_64 --out /tmp/wh

It downloads the pinned serving packages (requirements/serve.txt or serve-gpu.txt) with all their dependencies,
binary wheels only, plus setuptools (to install this project in place without an index), and writes beside them
`requirements.txt` (what was asked for) and `lock.txt` (every file fetched: name, version, sha256).
`make install WHEELHOUSE=dir` then installs from it with `pip --no-index`.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAVOURS = {"cpu": "serve.txt", "gpu": "serve-gpu.txt", "gpu-no-cuda": "serve-gpu.txt"}
BUILD = ["setuptools>=68"]  # pyproject.toml's build backend: `pip install -e .` needs it, offline too


def requirements(flavour: str) -> list[str]:
    lines = (ROOT / "requirements" / FLAVOURS[flavour]).read_text().splitlines()
    wanted = [line.split("#")[0].strip() for line in lines if line.strip() and not line.startswith("#")]
    if flavour == "gpu-no-cuda":  # the host brings CUDA and cuDNN: no nvidia-* wheels
        wanted = [line.replace("onnxruntime-gpu[cuda,cudnn]", "onnxruntime-gpu") for line in wanted]
    return wanted + BUILD


def this_platform() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def download(wanted: list[str], out: Path, python_version: str | None, target_platform: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join(wanted) + "\n")
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(out)]
    command += ["-r", str(out / "requirements.txt"), "--disable-pip-version-check"]
    if python_version:
        command += ["--python-version", python_version, "--implementation", "cp"]
    if target_platform:
        command += ["--platform", target_platform]
    subprocess.run(command, check=True)


def lock(out: Path) -> list[str]:
    """name==version  sha256  file, for every wheel in the folder (a wheel's name says its name and version)."""
    rows = []
    for wheel in sorted(out.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        rows.append(f"{name.replace('_', '-').lower()}=={version}  sha256:{digest}  {wheel.name}")
    (out / "lock.txt").write_text(
        f"# {len(rows)} wheels fetched by deploy/wheelhouse.py; install with: make install WHEELHOUSE={out}\n"
        + "\n".join(rows)
        + "\n"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="cpu")
    parser.add_argument(
        "--python-version", help=f"target Python, e.g. 3.12 (default: this one, {platform.python_version()})"
    )
    parser.add_argument("--platform", help=f"target wheel platform tag (default: this machine's, {this_platform()})")
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    args = parser.parse_args()
    download(requirements(args.flavour), args.out, args.python_version, args.platform)
    rows = lock(args.out)
    size = sum(f.stat().st_size for f in args.out.glob("*.whl")) / 1e6
    print(f"wheelhouse: {len(rows)} wheels, {size:,.0f} MB in {args.out} ({args.flavour}); lock: {args.out}/lock.txt")


if __name__ == "__main__":
    main()
