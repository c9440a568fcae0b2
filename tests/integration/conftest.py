"""Fixtures the integration modules share: the MNIST test digits, loaded once per test process, and a real
one-worker service per module (a module that needs another set-up defines its own `url`)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.server import running_service
from training.data import load_split


@pytest.fixture(scope="session")
def mnist_test_set(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 MNIST test images and their labels."""
    test = load_split("test", mnist_dir)
    return test.images, test.labels


@pytest.fixture(scope="session")
def digits(mnist_test_set) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 of them."""
    images, labels = mnist_test_set
    return images[:1000], labels[:1000]


@pytest.fixture(scope="module")
def url():
    """`bentoml serve` with one worker, for the module's tests."""
    with running_service({"DIGITSERVE_WORKERS": "1"}) as url:
        yield url
