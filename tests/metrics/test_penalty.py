"""Per-cell SCNP penalty against a brute-force reading of its definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from instanseg_scnp import scnp
from instanseg_scnp.metrics import cell_penalty


def brute_force(penalty, labels, window):
    """Per cell: the mean |penalty| over the pixels within window // 2 (Chebyshev) of any of its pixels."""
    radius = window // 2
    result = {}
    for cell in sorted(set(np.unique(labels)) - {0} - {-1}):
        cells = np.argwhere(labels == cell)
        values = [abs(penalty[point]) for point in itertools.product(*map(range, labels.shape))
                  if np.abs(cells - point).max(axis=1).min() <= radius]
        result[int(cell)] = float(np.mean(values))
    return result


@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("shape", [(12, 15), (4, 6, 7)])
def test_cell_penalty_matches_brute_force(shape, window):
    rng = np.random.default_rng(window + len(shape))
    labels = rng.integers(-1, 5, shape)  # touching cells, fragments, unannotated pixels
    labels[labels == 3] = 0  # an id that does not occur
    penalty = rng.normal(size=shape)
    result = cell_penalty(penalty, labels, window)
    expected = brute_force(penalty, labels, window)
    assert result.keys() == expected.keys()
    for cell in expected:
        assert result[cell] == pytest.approx(expected[cell], rel=1e-12)


def test_cell_penalty_of_scnp_is_highest_at_the_weak_cell():
    """A nucleus with one weak pixel carries the penalty; a clean neighbour, out of its reach, none."""
    labels = np.zeros((20, 30), int)
    labels[4:12, 3:11], labels[4:12, 19:27] = 1, 2
    logits = np.where(labels > 0, 4.0, -4.0)
    logits[8, 6] = -1.0  # a weak pixel inside cell 1
    z = torch.tensor(logits)[None, None]
    penalty = (z - scnp(z, torch.tensor(labels > 0)[None, None], 3))[0, 0].numpy()
    result = cell_penalty(penalty, labels, 3)
    assert result[1] > 0 and result[2] == 0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"window": 2}, ValueError, "window must be a positive odd int"),
    ({"window": True}, ValueError, "window must be a positive odd int"),
    ({"penalty": np.zeros((4, 5), int)}, TypeError, "penalty must be a float array"),
    ({"labels": np.zeros((4, 6), int)}, ValueError, "labels"),
])
def test_cell_penalty_bad_input(kwargs, error, match):
    arguments = {"penalty": np.zeros((4, 5)), "labels": np.zeros((4, 5), int), "window": 3} | kwargs
    with pytest.raises(error, match=match):
        cell_penalty(**arguments)
