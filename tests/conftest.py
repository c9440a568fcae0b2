"""Shared fixtures: the real MNIST files (from $MNIST_DIR) and the shipped model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist_cnn.onnx"

# Under pytest-xdist each worker gets its share of the cores for torch's and BLAS's threads (read when they are
# first imported): two workers each spinning threads on every core starve each other (the training tests took
# 140 s beside the rest of the suite, 48 s alone).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _share)


def pytest_configure(config: pytest.Config) -> None:
    if "not slow" in (config.option.markexpr or ""):  # make test-fast
        forbid_servers()


def forbid_servers() -> None:
    """`make test-fast` starts no server: a test that starts one (the service, HAProxy) must be marked slow, and
    fails in that run otherwise."""
    import harness.server
    from deploy.local.cluster import Cluster

    def refuse(*_, **__):
        raise RuntimeError("this run leaves out the slow tests and starts no server: mark the test slow")

    harness.server.started = refuse
    Cluster.start_haproxy = Cluster.start_replica = refuse


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--deselected-files",
        metavar="FILE",
        help="write to FILE the test files that hold tests this run left out (make test's second phase collects "
        "only those: collecting the whole suite imports torch, BentoML and the rest again)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files with slow tests (servers, training) first, the quick ones after: under xdist the quick files are
    handed out last and fill in, so that both workers finish together instead of one waiting for a slow file that
    started late. (make test passes --no-loadscope-reorder: xdist would otherwise order the files by how many tests
    each holds.) A stable sort: each file's tests stay together and in their order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


_deselected: set[str] = set()


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.update(str(item.path.relative_to(ROOT)) for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    target = session.config.getoption("deselected_files")
    if target:  # each xdist worker collects the same tests and writes the same list
        partial = Path(f"{target}.{os.getpid()}")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("".join(f"{path}\n" for path in sorted(_deselected)))
        partial.replace(target)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four original MNIST files; tests never download them."""
    candidates = [os.environ.get("MNIST_DIR"), ROOT / "data" / "mnist", ROOT.parent / "shared" / "mnist"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "t10k-images-idx3-ubyte.gz").exists() or (
            Path(candidate) / "t10k-images-idx3-ubyte"
        ).exists():
            return Path(candidate)
    pytest.fail("MNIST files not found: set MNIST_DIR to the folder holding the four IDX files")


def require_tools(*tools: str) -> None:
    """Skip a test whose system tools are missing, except under CI, where `make test` installs them (make
    ops-tools): there a skip would hide a broken setup, so it fails."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"needs {', '.join(missing)} (`make ops-tools`: Debian's haproxy and prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a pip requirements file, comments and blank lines left out."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
