"""accuracy/compare_models.py's test of two models on the same images (McNemar's exact test)."""

from __future__ import annotations

import pytest

from accuracy.compare_models import mcnemar_p


@pytest.mark.parametrize(
    "only_first, only_second, p",
    [(0, 0, 1.0), (10, 0, 2 / 1024), (0, 10, 2 / 1024), (1, 9, 2 * 11 / 1024), (3, 3, 1.0), (4, 7, 2 * 562 / 2048)],
)
def test_mcnemar_exact(only_first, only_second, p):
    assert mcnemar_p(only_first, only_second) == pytest.approx(p)
