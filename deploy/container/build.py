"""`make container` / `make container-gpu` / `make base-image`: the serving images, with podman or Docker.

    python -m deploy.container.build                       # CPU image digitserve:latest
    python -m deploy.container.build --flavour gpu         # GPU image digitserve-gpu:latest
    python -m deploy.container.build --save                # ... and an OCI archive in runs/container/
    python -m deploy.container.build --base-only           # only the base image (make base-image)

Steps: the base image (Python 3.11 on Debian bookworm: docker.io's python:3.11-slim-bookworm where a registry
answers, else one made here from Debian's packages by debootstrap, `localhost/digitserve-base:bookworm`, made
once); the Bento (`bentoml build`: the service code, the model and its card); the wheelhouse (deploy/wheelhouse.py:
the pinned serving wheels, downloaded by this machine's pip, so the build needs no network and no certificates);
then deploy/container/Containerfile on them. runs/container/<flavour>/ is the build context and keeps the wheels
for the next build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.container.engine import HERE, ROOT, RUNS, Engine, find_engine
from deploy.wheelhouse import requirements

REGISTRY_BASE = "docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/digitserve-base:bookworm"
FLAVOURS = {  # bentofile, image name, DIGITSERVE_PROVIDER in the image
    "cpu": ("bentofile.yaml", "digitserve", "cpu"),
    "gpu": ("bentofile.gpu.yaml", "digitserve-gpu", "auto"),
}
# What the debootstrap base leaves out: apt's caches and lists, documentation, translations (~140 of its 275 MB).
TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")


def step(text: str) -> None:
    print(f"[container] {text}", flush=True)


def base_image(engine: Engine) -> str:
    """A registry's python:3.11-slim where one answers, else the local Debian one (made once)."""
    if base := os.environ.get("DIGITSERVE_BASE_IMAGE"):
        return base
    if engine.has_image(REGISTRY_BASE) or engine.ok("pull", "--quiet", REGISTRY_BASE, timeout=300):
        return REGISTRY_BASE
    step(f"no registry answers for {REGISTRY_BASE}: using {LOCAL_BASE}, made from Debian's packages")
    if not engine.has_image(LOCAL_BASE):
        debian_base(engine)
    return LOCAL_BASE


def debian_base(engine: Engine) -> None:
    """Debian bookworm with Python 3.11 from the mirror apt already uses, imported as LOCAL_BASE (needs root)."""
    if not shutil.which("debootstrap"):
        sys.exit("debootstrap missing: `make base-image` installs it as root (apt-get install debootstrap)")
    if os.geteuid() != 0:
        sys.exit("making the base image needs root (debootstrap), or a registry with python:3.11-slim-bookworm")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=RUNS.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        packages = "python3,python3-venv,ca-certificates"
        command = ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs), mirror()]
        step(f"debootstrap bookworm ({packages}) ...")
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        for folder in TRIM:
            for child in (rootfs / folder).glob("*"):
                if child.name != "locale.alias":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        # Debian marks its Python as apt's (PEP 668); the image installs into a venv anyway, and a user who
        # derives from this base expects pip to work as on python:3.11-slim.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            engine.command("import", "--change", 'CMD ["python3"]', "-", LOCAL_BASE),
            stdin=tar.stdout,
            env=engine.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()
    step(f"{LOCAL_BASE} made in {time.monotonic() - started:.0f} s")


def mirror() -> str:
    """The Debian mirror apt uses here (a proxy or a local mirror, if the machine has one)."""
    for sources in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if sources.exists():
            for line in sources.read_text().splitlines():
                words = line.split()
                if line.startswith("URIs:") and words[1:] and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and "debian" in line and "security" not in line:
                    return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def bento(bentofile: str, name: str, into: Path) -> str:
    """`bentoml build` (the Bento in BentoML's store, as `make bento`), copied into the build context; its tag."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([bentoml, "build", "-f", bentofile], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    get = [bentoml, "get", f"{name}:latest", "-o", "path"]
    path = subprocess.run(get, env=env, check=True, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(into, ignore_errors=True)
    # BentoML's own Dockerfile and entrypoint are not used here.
    shutil.copytree(path, into, ignore=shutil.ignore_patterns("docker"))
    return f"{name}:{Path(path).name}"


def wheels(flavour: str, into: Path) -> None:
    """The pinned serving wheels for Python 3.11 on this machine's platform (kept between builds, unless the
    requirements changed: no wheel of an earlier pin is left to reach the image or the lock)."""
    asked = into / "requirements.txt"
    if asked.exists() and asked.read_text() != "\n".join(requirements(flavour)) + "\n":
        shutil.rmtree(into)
    command = [sys.executable, str(ROOT / "deploy" / "wheelhouse.py"), "--flavour", flavour]
    command += ["--python-version", "3.11", "--out", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the wheelhouse failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    step(done.stdout.strip().splitlines()[-1])


def build(engine: Engine, flavour: str, save: bool = False) -> str:
    """The image of `flavour`, tagged name:latest and name:<Bento version>; its tag name:latest."""
    bentofile, name, provider = FLAVOURS[flavour]
    context = RUNS / flavour
    context.mkdir(parents=True, exist_ok=True)
    base = base_image(engine)
    tag = bento(bentofile, name, context / "bento")
    step(f"Bento {tag}")
    wheels(flavour, context / "wheels")
    started = time.monotonic()
    command = ["build", "-f", str(HERE / "Containerfile"), "--build-arg", f"BASE={base}"]
    command += ["--build-arg", f"PROVIDER={provider}", "-t", f"{name}:latest", "-t", tag]
    if engine.name == "podman":
        command += ["--format", "docker"]  # the OCI image format has no HEALTHCHECK
    step(f"{engine.name} build {name}:latest on {base} ...")
    subprocess.run(engine.command(*command, str(context)), env=engine.env, check=True)
    forget_earlier_builds(engine, name, {"latest", tag.split(":")[1]})
    step(f"{name}:latest built in {time.monotonic() - started:.0f} s: {engine.image_mb(f'{name}:latest'):,.0f} MB")
    if save:
        archive = RUNS / f"{name}.oci.tar"
        archive.unlink(missing_ok=True)
        if engine.name == "podman":
            engine.run("save", "--format", "oci-archive", "-o", str(archive), f"{name}:latest")
        else:
            engine.run("save", "-o", str(archive), f"{name}:latest")
        step(f"saved: {archive} ({archive.stat().st_size / 1e6:,.0f} MB); load it elsewhere with `podman load -i`")
    return f"{name}:latest"


def forget_earlier_builds(engine: Engine, name: str, keep: set[str]) -> None:
    """Untag this image's earlier Bento-version tags (each build makes one): without that, every `make container`
    left its image behind. The layers they alone held go with them; `name:latest` and this build's tag stay."""
    listed = engine.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).splitlines()
    for image in listed:
        repository, _, version = image.rpartition(":")
        if repository.rsplit("/", 1)[-1] == name and version not in keep | {"<none>"}:
            engine.run("rmi", image, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="cpu")
    parser.add_argument("--save", action="store_true", help="also an OCI archive in runs/container/")
    parser.add_argument("--base-only", action="store_true", help="only make (or find) the base image")
    args = parser.parse_args(argv)
    engine, why = find_engine()
    if engine is None:
        sys.exit(f"no container engine: {why}. `make container` installs podman as root (apt-get install podman)")
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.base_only:
        step(f"base image: {base_image(engine)}")
        return
    build(engine, args.flavour, args.save)


if __name__ == "__main__":
    main()
