"""Unit tests read no data files: real digits come from harness.digits.sample_digits (committed samples)."""

import pytest


@pytest.fixture(scope="session")
def mnist_dir():
    pytest.fail("a unit test asked for the MNIST files: use harness.digits.sample_digits or move it to integration")
