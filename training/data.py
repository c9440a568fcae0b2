"""MNIST: find, download, verify and parse the four IDX files into uint8 arrays."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# md5 of the *decompressed* IDX files, so gzipped and raw copies verify alike.
FILES: dict[str, tuple[str, str]] = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "data" / "mnist"
VALIDATION_SIZE = 5000
# Pixel statistics of the MNIST training set (after scaling to [0, 1]); the service reads them from the model card.
MEAN, STD = 0.1307, 0.3081


class MnistDataError(RuntimeError):
    """MNIST files are missing, corrupt or could not be downloaded."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, 28, 28], white ink on black
    labels: np.ndarray  # uint8 [N]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $MNIST_DIR, else the git-ignored cache folder."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("MNIST_DIR"):
        return Path(os.environ["MNIST_DIR"])
    return DEFAULT_CACHE


# Verified contents by (file, size, modification time): a process that loads a split many times (the test suite,
# short training runs) decompresses and checksums each file once; a file replaced on disk is read again.
_VERIFIED: dict[tuple[Path, int, int], bytes] = {}


def _read_verified(directory: Path, name: str, md5: str) -> bytes | None:
    """The decompressed bytes of `name` (gz or raw) in `directory`, or None if neither exists."""
    for path, opener in ((directory / f"{name}.gz", gzip.open), (directory / name, open)):
        if not path.exists():
            continue
        stat = path.stat()
        key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            return _VERIFIED[key]
        try:
            with opener(path, "rb") as f:
                content = f.read()
        except (OSError, EOFError) as exc:  # gzip raises EOFError on truncation, BadGzipFile (OSError) on garbage
            raise MnistDataError(f"{path} is corrupt or truncated ({exc}); delete it and fetch it again") from exc
        digest = hashlib.md5(content).hexdigest()
        if digest != md5:
            raise MnistDataError(
                f"{path} fails its checksum: md5 of its content is {digest}, expected {md5}; "
                "the file is corrupt or not the original MNIST file"
            )
        _VERIFIED[key] = content
        return content
    return None


def _download(directory: Path, name: str, md5: str, mirrors: tuple[str, ...], retries: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    errors = {}  # the last error of each mirror
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        for attempt in range(retries):
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    payload = response.read()
                if hashlib.md5(gzip.decompress(payload)).hexdigest() != md5:
                    raise MnistDataError(f"checksum mismatch for {url}")
                tmp = directory / f".{name}.gz.part"
                tmp.write_bytes(payload)
                tmp.replace(directory / f"{name}.gz")  # atomic: never leave a half-written file
                return
            except (urllib.error.URLError, OSError, EOFError, MnistDataError) as exc:
                errors[url] = exc
                if attempt + 1 < retries:
                    time.sleep(2**attempt)
    raise MnistDataError(
        f"could not download {name}.gz ({'; '.join(f'{url}: {exc}' for url, exc in errors.items())}).\n"
        f"Put these four MNIST files (gzipped or not) in {directory.resolve()}:\n"
        + "\n".join(f"  {n}.gz" for n, _ in FILES.values())
        + "\nor point --data-dir / MNIST_DIR at the folder that has them."
    )


def _parse_idx(content: bytes, name: str) -> np.ndarray:
    """IDX format: 2 zero bytes, dtype code 0x08 (uint8), ndim, then ndim big-endian uint32 sizes."""
    if len(content) < 4 or content[:3] != b"\x00\x00\x08":
        raise MnistDataError(f"{name} is not a uint8 IDX file")
    ndim = content[3]
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", ndim, offset=4))
    data = np.frombuffer(content, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise MnistDataError(f"{name} holds {data.size} bytes of data, its header promises {shape}")
    return data.reshape(shape)


def load_file(
    key: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: tuple[str, ...] = MIRRORS,
    retries: int = 3,
) -> np.ndarray:
    """One of FILES as a uint8 array, downloading it first if it is missing and `download` is set."""
    name, md5 = FILES[key]
    directory = resolve_data_dir(data_dir)
    content = _read_verified(directory, name, md5)
    if content is None:
        if not download:
            raise MnistDataError(f"{name}(.gz) not found in {directory.resolve()}")
        _download(directory, name, md5, mirrors, retries)
        content = _read_verified(directory, name, md5)
    return _parse_idx(content, name)


def load_split(split: str, data_dir: str | os.PathLike | None = None, **kwargs) -> Split:
    """'train' (55,000), 'validation' (the last 5,000 of the training file) or 'test' (10,000)."""
    source = "test" if split == "test" else "train"
    images = load_file(f"{source}_images", data_dir, **kwargs)
    labels = load_file(f"{source}_labels", data_dir, **kwargs)
    if split == "train":
        return Split(images[:-VALIDATION_SIZE], labels[:-VALIDATION_SIZE])
    if split == "validation":
        return Split(images[-VALIDATION_SIZE:], labels[-VALIDATION_SIZE:])
    if split == "test":
        return Split(images, labels)
    raise ValueError(f"unknown split {split!r}: use train, validation or test")
