"""Fixtures the integration modules share: the MNIST test digits, loaded once per test process."""

from __future__ import annotations

import numpy as np
import pytest

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
