"""The shipped evaluation subsets are exactly the first 1,000 official test images."""

from pathlib import Path

import numpy as np
import pytest

from models.evalset import eval_set_path, load_eval_set
from training.datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_shipped_subset_loads_with_its_checksum_and_shape(dataset):
    subset = load_eval_set(eval_set_path(dataset, REPO / "data" / "eval"))
    assert tuple(subset.images.shape) == (1000, *SHAPES[dataset])
    assert sorted(set(subset.labels.tolist())) == list(range(10))


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_shipped_subset_equals_the_first_official_test_images(dataset, official_data):
    data = load_dataset(dataset, official_data(dataset))
    subset = load_eval_set(eval_set_path(dataset, REPO / "data" / "eval"))
    expected = data.test.images[:1000].astype(np.float32) / 255.0
    np.testing.assert_array_equal(subset.images.numpy(), expected)
    np.testing.assert_array_equal(subset.labels.numpy(), data.test.labels[:1000])
