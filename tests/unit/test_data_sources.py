"""Dataset sources: the digits conversion and a user's image folder."""

import numpy as np
import pytest
from PIL import Image

from ddpm_repro.data.arrays import split
from ddpm_repro.data.digits import load_digits
from ddpm_repro.data.sources import DatasetUnavailable, load_image_folder


def test_digits_are_1797_uint8_images_on_the_17_level_grid():
    d = load_digits()
    assert d.images.shape == (1797, 8, 8, 1) and d.images.dtype == np.uint8
    assert set(np.unique(d.images)) <= {round(v * 255 / 16) for v in range(17)}
    assert d.num_classes == 10
    train, test = split(d, 0.2, seed=0)
    assert len(train.images) + len(test.images) == 1797 and len(test.images) == 359
    again, _ = split(d, 0.2, seed=0)
    assert np.array_equal(train.images, again.images)


def test_image_folder_is_resized_centre_cropped_and_labelled_by_subfolder(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "cats" / "a.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "dogs" / "b.jpg")
    arrays = load_image_folder(tmp_path, 8)
    assert arrays.images.shape == (2, 8, 8, 3) and arrays.labels.tolist() == [0, 1]
    assert arrays.images[0, 4, 4].tolist() == [255, 0, 0]


def test_unreadable_images_are_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"1 unreadable image\(s\).*broken.png"):
        load_image_folder(tmp_path, 8)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DatasetUnavailable, match="not found"):
        load_image_folder(tmp_path / "nope", 8)
    with pytest.raises(DatasetUnavailable, match="has no images"):
        load_image_folder(tmp_path, 8)
