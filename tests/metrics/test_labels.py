"""check_labels: the one validator of label images, its messages and what it lets through."""

from __future__ import annotations

import numpy as np
import pytest

from instanseg_scnp.metrics import check_labels


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "message"),
    [
        (np.zeros((3, 3), bool), {"name": "gt"}, TypeError,
         r"gt is a boolean foreground mask; expected integer instance ids: label it first \(scipy.ndimage.label"),
        (np.zeros((3, 3), np.float32), {"name": "masks"}, TypeError,
         "masks must hold integer instance ids, got dtype float32"),
        (np.array([["a"]]), {}, TypeError, "labels must hold integer instance ids, got dtype <U1"),
        (np.zeros(3, int), {}, ValueError, r"labels must have 2 or 3 dims, got shape \(3,\)"),
        (np.zeros((3, 3, 3), int), {"ndims": (2,)}, ValueError, r"labels must have 2 dims, got shape \(3, 3, 3\)"),
        (np.zeros((3, 3), int), {"name": "pred", "shape": (3, 4), "shape_of": "gt"}, ValueError,
         r"pred must have the same shape as gt, \(3, 4\), got \(3, 3\)"),
        (np.zeros((3, 3), int), {"shape": (3, 4)}, ValueError, r"labels must have shape \(3, 4\), got \(3, 3\)"),
        (np.full((2, 2), -1), {"name": "gt"}, ValueError,
         r"gt may only use 0 \(background\) and positive ids, found -1"),
        (np.full((2, 2), -2), {"allow_unannotated": True}, ValueError,
         r"labels may only use -1 \(unannotated\), 0 \(background\) and positive ids, found -2"),
    ],
)
def test_check_labels_rejects_naming_the_argument(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        check_labels(labels, **kwargs)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_check_labels_accepts_integer_images_without_copying(dtype):
    labels = np.arange(12, dtype=dtype).reshape(3, 4)
    assert check_labels(labels) is labels
    assert check_labels(labels[None], shape=(1, 3, 4)) is not None


def test_check_labels_unannotated_and_lists():
    labels = np.array([[-1, 0, 3]])
    assert check_labels(labels, allow_unannotated=True) is labels
    with pytest.raises(ValueError, match="found -1"):
        check_labels(labels)
    assert check_labels([[0, 2], [2, 0]]).dtype.kind == "i"
    assert check_labels(np.zeros((0, 4), int)).shape == (0, 4)  # empty: no minimum to check
