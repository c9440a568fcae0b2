"""The MNIST files: loading, verification (checksums), the download and its mirrors."""

import functools
import gzip
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from service.contract import to_model_input
from training import data
from training.data import FILES, MnistDataError, load_file, load_split, resolve_data_dir

pytestmark = pytest.mark.integration


def test_splits_have_the_documented_sizes(mnist_dir):
    train, validation, test = (load_split(s, mnist_dir) for s in ("train", "validation", "test"))
    assert train.images.shape == (55000, 28, 28) and train.images.dtype == np.uint8
    assert validation.images.shape == (5000, 28, 28)
    assert test.images.shape == (10000, 28, 28) and test.labels.shape == (10000,)
    assert set(np.unique(test.labels)) == set(range(10))
    # MNIST is white ink on black: the background (corners) is 0.
    assert test.images[:, 0, 0].max() == 0 and test.images.max() == 255


def test_raw_idx_files_verify_like_gzipped_ones(mnist_dir, tmp_path):
    name = FILES["test_labels"][0]
    (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    labels = load_file("test_labels", tmp_path, download=False)
    np.testing.assert_array_equal(labels, load_split("test", mnist_dir).labels)


def test_a_changed_byte_fails_the_checksum(mnist_dir, tmp_path):
    name = FILES["test_labels"][0]
    content = bytearray(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    content[100] = (content[100] + 1) % 10
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(MnistDataError, match="fails its checksum"):
        load_file("test_labels", tmp_path, download=False)


def test_a_file_replaced_after_it_was_read_is_verified_again(mnist_dir, tmp_path):
    """Loads are remembered per file, size and modification time: a file changed on disk is checked again."""
    name = FILES["test_labels"][0]
    path = tmp_path / f"{name}.gz"
    path.write_bytes((mnist_dir / f"{name}.gz").read_bytes())
    labels = load_split("test", mnist_dir).labels
    np.testing.assert_array_equal(load_file("test_labels", tmp_path, download=False), labels)
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] = (content[100] + 1) % 10
    before = path.stat()
    path.write_bytes(gzip.compress(bytes(content)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # a later write, even within a tick
    with pytest.raises(MnistDataError, match="fails its checksum"):
        load_file("test_labels", tmp_path, download=False)


def test_a_truncated_file_is_a_clear_error(mnist_dir, tmp_path):
    name = FILES["test_images"][0]
    payload = (mnist_dir / f"{name}.gz").read_bytes()
    (tmp_path / f"{name}.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(MnistDataError, match="corrupt or truncated"):
        load_file("test_images", tmp_path, download=False)


def test_missing_files_without_network_say_what_to_put_where(tmp_path):
    # Port 9 (discard) on loopback refuses at once: a download that cannot succeed, without the internet.
    with pytest.raises(MnistDataError) as error:
        load_file("train_images", tmp_path / "mnist", mirrors=("http://127.0.0.1:9/",), retries=1)
    message = str(error.value)
    assert str((tmp_path / "mnist").resolve()) in message
    for name, _ in FILES.values():
        assert f"{name}.gz" in message


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """Two local HTTP mirrors: the first serves a corrupt copy, the second the real files."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, _ in FILES.values():
        (bad / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    servers = []
    for folder in (bad, mnist_dir):
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}/" for s in servers)
    for server in servers:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_verifies_and_falls_back_to_the_next_mirror(mirror, mnist_dir, tmp_path):
    target = tmp_path / "cache"
    labels = load_file("test_labels", target, mirrors=mirror, retries=1)
    assert labels.shape == (10000,)
    assert (target / "t10k-labels-idx1-ubyte.gz").read_bytes() == (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert not list(target.glob(".*part"))


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("MNIST_DIR")
    assert resolve_data_dir() == data.DEFAULT_CACHE
    assert data.DEFAULT_CACHE.relative_to(Path(data.__file__).resolve().parent.parent) == Path("data/mnist")
    assert "data/" in (Path(data.__file__).resolve().parent.parent / ".gitignore").read_text().split()


def test_normalise_matches_the_training_statistics(mnist_dir):
    train = load_split("train", mnist_dir)
    x = to_model_input(train.images[:20000], data.MEAN, data.STD)
    assert x.shape == (20000, 1, 28, 28) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
