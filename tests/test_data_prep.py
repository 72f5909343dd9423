"""data_prep.py: both CelebA layouts, attribute filters, the reference projects' crops, the uint8 cache, the tf.data feed,
bad input and the command line, checked against the tiny CelebA's known attributes and pixels."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

import data_prep
from conftest import TINY_COUNT, tiny_celeba_rows, tiny_partition, write_csv_layout, write_tiny_celeba
from data_prep import DataError

REPO = os.path.dirname(os.path.abspath(data_prep.__file__))
ATTRIBUTES = list(data_prep.CELEBA_ATTRIBUTES)


def known_faces(count=TINY_COUNT):
    """[(file name, {attribute: 1 or -1}, split code)] as the fixture wrote them."""
    return [(name, dict(zip(ATTRIBUTES, values.tolist())), tiny_partition(index, count))
            for index, (name, values, _) in enumerate(tiny_celeba_rows(count=count), start=1)]


def expected_files(split, wanted, count=TINY_COUNT):
    """Files of `split` whose attributes match `wanted` ({name: 1 or -1}), worked out from the ground truth."""
    codes = {**data_prep.SPLITS, "all": None}
    return [name for name, attributes, code in known_faces(count)
            if codes[split] in (None, code) and all(attributes[key] == value for key, value in wanted.items())]


def crop_of_file(path, **options):
    return data_prep.crop_and_resize(data_prep.read_image_uint8(path), **options)


def rewrite_line(path, number, edit):
    """Replace the 1-based line `number` of a text file by edit(line)."""
    with open(path) as handle:
        lines = handle.read().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def csv_celeba(tiny_celeba, tmp_path_factory):
    return write_csv_layout(tiny_celeba, str(tmp_path_factory.mktemp("tiny-celeba-csv")))


@pytest.fixture(scope="module")
def celeba(tiny_celeba):
    return data_prep.read_celeba(tiny_celeba)


@pytest.fixture
def small_celeba(tmp_path):
    """A writable 20-face CelebA (16 train, 2 validation, 2 test) that a test may damage."""
    return write_tiny_celeba(str(tmp_path / "small"), count=20)


# ----------------------------------------------------------------------------------------------------------
# Reading both layouts


def test_txt_layout_reads_the_written_attributes_partition_and_landmarks(celeba):
    faces = known_faces()
    assert celeba.attribute_names == ATTRIBUTES
    assert list(celeba.attributes.index) == [name for name, _, _ in faces]
    assert celeba.attributes.dtypes.unique().tolist() == [np.int8]
    np.testing.assert_array_equal(celeba.attributes.to_numpy(),
                                  [[attributes[key] for key in ATTRIBUTES] for _, attributes, _ in faces])
    assert celeba.partition.tolist() == [code for _, _, code in faces]
    assert list(celeba.landmarks.columns) == data_prep.LANDMARK_COLUMNS
    assert celeba.landmarks.loc["000007.jpg"].tolist() == [69, 111, 108, 111, 88, 135, 72, 152, 105, 152]
    assert celeba.skipped_missing == 0


def test_both_layouts_parse_to_the_same_tables(celeba, csv_celeba):
    from_csv = data_prep.read_celeba(csv_celeba)
    assert from_csv.image_dir == os.path.join(csv_celeba, "img_align_celeba", "img_align_celeba")
    pd.testing.assert_frame_equal(from_csv.attributes, celeba.attributes)
    pd.testing.assert_series_equal(from_csv.partition, celeba.partition)
    pd.testing.assert_frame_equal(from_csv.landmarks, celeba.landmarks)


# ----------------------------------------------------------------------------------------------------------
# Attribute filters


@pytest.mark.parametrize("split", ["train", "validation", "test", "all"])
@pytest.mark.parametrize("layout", ["txt", "csv"])
def test_filter_selects_exactly_the_matching_files(split, layout, tiny_celeba, csv_celeba):
    dataset = data_prep.read_celeba(tiny_celeba if layout == "txt" else csv_celeba)
    selected = data_prep.select_files(dataset, split=split, filter="Male,-Eyeglasses")
    assert selected == expected_files(split, {"Male": 1, "Eyeglasses": -1})
    assert selected  # a vacuous comparison would prove nothing


def test_no_filter_selects_the_whole_split_and_limit_keeps_the_first(celeba):
    assert data_prep.select_files(celeba, split="validation") == expected_files("validation", {})
    assert data_prep.select_files(celeba, split="train", limit=5) == expected_files("train", {})[:5]


def test_filter_names_are_case_insensitive(celeba):
    assert (data_prep.select_files(celeba, split="train", filter=" male , -EYEGLASSES,+smiling")
            == expected_files("train", {"Male": 1, "Eyeglasses": -1, "Smiling": 1}))


def test_unknown_filter_name_suggests_the_closest_and_lists_the_valid_names(celeba):
    with pytest.raises(DataError) as error:
        data_prep.select_files(celeba, split="train", filter="Male,-Eyeglass")
    message = str(error.value)
    assert "'Eyeglass'" in message and "did you mean 'Eyeglasses'?" in message
    assert "valid names: " + ", ".join(ATTRIBUTES) in message


def test_filter_keeping_nothing_says_how_many_each_term_keeps(celeba):
    males = len(expected_files("train", {"Male": 1}))
    train = len(expected_files("train", {}))
    with pytest.raises(DataError) as error:
        data_prep.select_files(celeba, split="train", filter="Male,-Male")
    assert str(error.value) == (f"filter 'Male,-Male' keeps no image of {train}: "
                                f"Male keeps {males}, -Male keeps {train - males}")


def test_unknown_split_raises(celeba):
    with pytest.raises(DataError, match="unknown split 'training'; expected one of train, validation, test, all"):
        data_prep.select_files(celeba, split="training")


# ----------------------------------------------------------------------------------------------------------
# No partition file


def test_missing_partition_file_gives_a_deterministic_split_by_name(tmp_path):
    root = write_tiny_celeba(str(tmp_path / "no-partition"), count=40)
    os.remove(os.path.join(root, "list_eval_partition.txt"))
    first, second = data_prep.read_celeba(root).partition, data_prep.read_celeba(root).partition
    pd.testing.assert_series_equal(first, second)
    # By name, not by position: the same files land in the same split whatever order they are listed in.
    shuffled = data_prep.default_partition(list(first.index[::-1]))
    pd.testing.assert_series_equal(shuffled.reindex(first.index), first)
    splits = {split: data_prep.select_files(data_prep.read_celeba(root), split=split) for split in data_prep.SPLITS}
    assert all(splits.values()), {split: len(names) for split, names in splits.items()}
    assert sorted(sum(splits.values(), [])) == sorted(first.index)


# ----------------------------------------------------------------------------------------------------------
# Crops and pixel scaling

A, B, C = (10, 200, 30), (240, 20, 90), (60, 60, 250)


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_dcgan_crop_has_the_requested_size(image_size):
    image = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    face = data_prep.crop_and_resize(image, crop="dcgan", image_size=image_size)
    assert face.shape == (image_size, image_size, 3) and face.dtype == np.uint8


@pytest.mark.parametrize("image_size, shape", [(64, (80, 64, 3)), (32, (40, 32, 3))])
def test_makeover_crop_keeps_the_box_aspect(image_size, shape):
    image = np.zeros((218, 178, 3), np.uint8)
    assert data_prep.crop_and_resize(image, crop="makeover", image_size=image_size).shape == shape
    assert data_prep.crop_output_shape("makeover", image_size) == shape[:2]


def test_dcgan_crop_takes_the_centre_square_unflipped():
    # Border A outside the centred 108 square; inside it four quadrants, so a shifted or mirrored crop shows.
    image = np.full((218, 178, 3), A, np.uint8)
    top, left = (218 - 108) // 2, (178 - 108) // 2
    quadrants = {(0, 0): A[::-1], (0, 1): B, (1, 0): C, (1, 1): (128, 128, 128)}
    for (row, column), colour in quadrants.items():
        image[top + 54 * row:top + 54 * (row + 1), left + 54 * column:left + 54 * (column + 1)] = colour
    face = data_prep.crop_and_resize(image, image_size=64)
    for (row, column), colour in quadrants.items():
        block = face[32 * row:32 * (row + 1), 32 * column:32 * (column + 1)]
        assert (block == colour).all(), (row, column, np.unique(block.reshape(-1, 3), axis=0))


def test_crop_size_is_configurable():
    # A 100 square of B inside a 108 square of C inside a border of A, all centred.
    image = np.full((218, 178, 3), A, np.uint8)
    image[(218 - 108) // 2:(218 + 108) // 2, (178 - 108) // 2:(178 + 108) // 2] = C
    image[(218 - 100) // 2:(218 + 100) // 2, (178 - 100) // 2:(178 + 100) // 2] = B
    assert (data_prep.crop_and_resize(image, crop_size=100) == B).all()
    wide = data_prep.crop_and_resize(image, crop_size=108)
    assert (wide[0, 0] == C).all() and (wide[32, 32] == B).all()
    with pytest.raises(DataError, match="crop size 220 does not fit a 178x218 image"):
        data_prep.crop_and_resize(image, crop_size=220)


def test_makeover_crop_takes_its_box():
    image = np.full((218, 178, 3), A, np.uint8)
    x, y, width, height = data_prep.MAKEOVER_BOX
    image[y:y + height, x:x + width] = B
    assert (data_prep.crop_and_resize(image, crop="makeover", image_size=64) == B).all()


def test_unknown_crop_raises():
    with pytest.raises(DataError, match="unknown crop 'square'; expected one of dcgan, makeover"):
        data_prep.crop_and_resize(np.zeros((218, 178, 3), np.uint8), crop="square")


def test_to_float_maps_uint8_onto_minus_one_to_one():
    values = data_prep.to_float(np.arange(256, dtype=np.uint8))
    assert values.dtype == np.float32
    assert values.min() == -1.0 and values.max() == 1.0 and (np.diff(values) > 0).all()


def test_to_uint8_inverts_to_float_exactly():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(data_prep.to_uint8(data_prep.to_float(pixels)), pixels)
    np.testing.assert_array_equal(data_prep.to_uint8(np.array([-1.5, 1.5])), [0, 255])  # overshoot is clipped


# ----------------------------------------------------------------------------------------------------------
# The prepared-image cache


def prepare(root, cache_dir, **options):
    return data_prep.prepare_images(root, **{"split": "train", "cache_dir": str(cache_dir), "workers": 2,
                                             "progress": False, **options})


def assert_rows_are_the_crops(prepared, root, **crop_options):
    for row, name in zip(prepared.images, prepared.names):
        np.testing.assert_array_equal(row, crop_of_file(os.path.join(root, "img_align_celeba", name), **crop_options))


def test_prepare_images_holds_the_crop_of_every_selected_face(small_celeba, tmp_path):
    prepared = prepare(small_celeba, tmp_path / "cache")
    assert prepared.names == expected_files("train", {}, count=20)
    assert prepared.images.shape == (16, 64, 64, 3) and prepared.images.dtype == np.uint8
    assert not prepared.from_cache and os.path.isfile(prepared.cache_path)
    assert_rows_are_the_crops(prepared, small_celeba)


def test_makeover_prepare_uses_the_makeover_crop(small_celeba, tmp_path):
    prepared = prepare(small_celeba, tmp_path / "cache", crop="makeover", image_size=32, filter="Smiling")
    assert prepared.names == expected_files("train", {"Smiling": 1}, count=20)
    assert prepared.images.shape == (len(prepared.names), 40, 32, 3)
    assert_rows_are_the_crops(prepared, small_celeba, crop="makeover", image_size=32)


def test_second_prepare_reuses_the_cache(small_celeba, tmp_path):
    first = prepare(small_celeba, tmp_path / "cache")
    second = prepare(small_celeba, tmp_path / "cache")
    assert second.from_cache and second.cache_path == first.cache_path
    assert second.names == first.names
    np.testing.assert_array_equal(second.images, first.images)


@pytest.mark.parametrize("change", [{"filter": "Male"}, {"image_size": 32}, {"crop_size": 100}, {"limit": 4}])
def test_changed_settings_rebuild_the_cache(change, small_celeba, tmp_path):
    first = prepare(small_celeba, tmp_path / "cache")
    changed = prepare(small_celeba, tmp_path / "cache", **change)
    assert not changed.from_cache and changed.cache_path != first.cache_path
    assert prepare(small_celeba, tmp_path / "cache").cache_path == first.cache_path  # the old one is still valid


def test_touched_image_rebuilds_the_cache(small_celeba, tmp_path):
    first = prepare(small_celeba, tmp_path / "cache")
    path = os.path.join(small_celeba, "img_align_celeba", first.names[3])
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10 ** 9))  # same bytes, a new mtime
    touched = prepare(small_celeba, tmp_path / "cache")
    assert not touched.from_cache and touched.cache_path != first.cache_path


def test_rewritten_image_rebuilds_the_cache_with_its_new_pixels(small_celeba, tmp_path):
    first = prepare(small_celeba, tmp_path / "cache")
    path = os.path.join(small_celeba, "img_align_celeba", first.names[3])
    status = os.stat(path)
    cv2.imwrite(path, np.random.default_rng(1).integers(0, 256, (218, 178, 3), dtype=np.uint8))
    assert os.path.getsize(path) != status.st_size
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))  # only the size tells the change
    rewritten = prepare(small_celeba, tmp_path / "cache")
    assert not rewritten.from_cache and rewritten.cache_path != first.cache_path
    np.testing.assert_array_equal(rewritten.images[3], crop_of_file(path))
    assert not (rewritten.images[3] == first.images[3]).all()


def test_unreadable_images_are_skipped_with_a_count(small_celeba, tmp_path, capsys):
    train = expected_files("train", {}, count=20)
    image_dir = os.path.join(small_celeba, "img_align_celeba")
    open(os.path.join(image_dir, train[2]), "wb").close()  # zero bytes
    with open(os.path.join(image_dir, train[5]), "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 not really a JPEG" * 10)
    prepared = prepare(small_celeba, tmp_path / "cache")
    assert "warning: skipped 2 unreadable images" in capsys.readouterr().err
    assert prepared.names == [name for name in train if name not in (train[2], train[5])]
    assert prepared.images.shape == (14, 64, 64, 3)
    assert_rows_are_the_crops(prepared, small_celeba)  # the rows after a skipped one moved up with their names
    assert prepare(small_celeba, tmp_path / "cache").names == prepared.names  # the cache keeps the shorter list


def test_unreadable_images_raise_when_strict(small_celeba, tmp_path):
    train = expected_files("train", {}, count=20)
    open(os.path.join(small_celeba, "img_align_celeba", train[2]), "wb").close()
    with pytest.raises(DataError, match=f"1 unreadable images; first .*{train[2]}: empty file"):
        prepare(small_celeba, tmp_path / "cache", strict=True)


def test_strict_prepare_raises_even_when_a_lenient_cache_exists(small_celeba, tmp_path):
    train = expected_files("train", {}, count=20)
    open(os.path.join(small_celeba, "img_align_celeba", train[2]), "wb").close()
    assert len(prepare(small_celeba, tmp_path / "cache").names) == 15
    with pytest.raises(DataError, match="1 unreadable images"):
        prepare(small_celeba, tmp_path / "cache", strict=True)


def test_prepare_leaves_no_temporary_files(small_celeba, tmp_path):
    train = expected_files("train", {}, count=20)
    cache = tmp_path / "cache"
    prepare(small_celeba, cache)
    prepare(small_celeba, cache, crop="makeover")
    open(os.path.join(small_celeba, "img_align_celeba", train[0]), "wb").close()
    with pytest.raises(DataError):
        prepare(small_celeba, cache, strict=True)  # the failing path
    prepare(small_celeba, cache)  # with a skipped image: the compacting path
    files = os.listdir(cache)
    assert len([name for name in files if name.endswith(".npy")]) == 3
    assert not [name for name in files if ".tmp" in name], files


# ----------------------------------------------------------------------------------------------------------
# The tf.data feed


@pytest.fixture(scope="module")
def sixteen_images():
    # Random pixels: no image equals its mirror image, so a flip always shows.
    return np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)


def test_make_dataset_covers_each_image_once_per_epoch(sixteen_images):
    dataset = data_prep.make_dataset(sixteen_images, batch_size=8, flip=False, shuffle=True, seed=0)
    batches = [batch.numpy() for batch in dataset]
    assert len(batches) == 2
    for batch in batches:
        assert batch.dtype == np.float32 and batch.shape == (8, 64, 64, 3)
        assert batch.min() >= -1.0 and batch.max() <= 1.0
    seen = data_prep.to_uint8(np.concatenate(batches))
    assert sorted(image.tobytes() for image in seen) == sorted(image.tobytes() for image in sixteen_images)
    assert not np.array_equal(seen, sixteen_images)  # shuffled


def test_oversampled_images_appear_their_number_of_times_per_epoch(sixteen_images):
    labels = np.zeros((16, 40), np.float32)
    bald, chubby = data_prep.CELEBA_ATTRIBUTES.index("Bald"), data_prep.CELEBA_ATTRIBUTES.index("Chubby")
    labels[[1, 2], bald] = 1
    labels[[2, 5], chubby] = 1
    repeats = data_prep.oversample_repeats(labels, data_prep.parse_oversample(["bald=3", "Chubby=2, Chubby=1"]))
    expected = [1, 3, 3, 1, 1, 2] + [1] * 10  # image 2 has both and takes the larger factor, not their product
    assert repeats.tolist() == expected
    # Each image's first pixel is its index, so a batch says which images it holds.
    images = np.zeros((16, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(16)
    assert len(list(data_prep.make_dataset(images, batch_size=5, seed=0, scale=False, repeats=repeats))) == 4  # 21 showings
    everything = data_prep.make_dataset(images, batch_size=1, seed=0, scale=False, repeats=repeats)
    assert np.bincount([int(batch.numpy()[0, 0, 0, 0]) for batch in everything], minlength=16).tolist() == expected


@pytest.mark.parametrize("term, message", [
    ("Bald", "is not ATTRIBUTE=N"), ("Bald=0", "is not ATTRIBUTE=N"), ("Bald=1.5", "is not ATTRIBUTE=N"),
    ("Baldd=2", "did you mean 'Bald'"), ("-Bald=2", "is not ATTRIBUTE=N"), ("=2", "is not ATTRIBUTE=N"),
    ("Bald=\u00b2", "is not ATTRIBUTE=N"),
])
def test_oversampling_refuses_a_bad_term(term, message):
    with pytest.raises(data_prep.DataError, match=message):
        data_prep.parse_oversample([term])


def test_two_spellings_of_one_oversampling_read_the_same():
    factors = data_prep.parse_oversample(["sideburns=2", "Bald=2,Bald=1"])
    assert list(factors.items()) == [("Bald", 2), ("Sideburns", 2)]  # CelebA's order, the larger factor
    assert data_prep.parse_oversample(["Bald=2,Sideburns=2"]) == factors and data_prep.parse_oversample(None) == {}


def test_make_dataset_flip_mirrors_some_images(sixteen_images):
    dataset = data_prep.make_dataset(sixteen_images, batch_size=8, flip=True, shuffle=False, seed=0)
    seen = data_prep.to_uint8(np.concatenate([batch.numpy() for batch in dataset]))
    flipped = [np.array_equal(image, original[:, ::-1]) for image, original in zip(seen, sixteen_images)]
    unchanged = [np.array_equal(image, original) for image, original in zip(seen, sixteen_images)]
    assert all(a != b for a, b in zip(flipped, unchanged))  # each image is itself or its mirror image
    assert 0 < sum(flipped) < len(seen)


def test_make_dataset_flips_follow_the_seed_and_change_each_epoch(sixteen_images):
    def flips(seed):
        dataset = data_prep.make_dataset(sixteen_images, batch_size=2, flip=True, shuffle=False, seed=seed).repeat(2)
        seen = data_prep.to_uint8(np.concatenate([batch.numpy() for batch in dataset]))
        return [np.array_equal(image, original[:, ::-1]) for image, original in zip(seen, np.tile(sixteen_images,
                                                                                                 (2, 1, 1, 1)))]
    first = flips(0)
    assert first == flips(0)  # the same seed, the same mirrored images, however the batches were scheduled
    assert first[:16] != first[16:]  # a new draw each epoch
    assert first != flips(1)


def test_make_dataset_with_labels_keeps_each_image_with_its_labels(sixteen_images):
    labels = np.eye(16, dtype=np.int8)  # image i is the only one with label i
    dataset = data_prep.make_dataset(sixteen_images, labels=labels, batch_size=6, flip=True, seed=0,
                                     drop_remainder=False)
    batches = [(images.numpy(), targets.numpy()) for images, targets in dataset]
    assert [len(targets) for _, targets in batches] == [6, 6, 4]  # the last, short batch is kept
    for images, targets in batches:
        assert targets.dtype == np.float32
        for image, target in zip(data_prep.to_uint8(images), targets):
            original = sixteen_images[int(np.argmax(target))]
            assert np.array_equal(image, original) or np.array_equal(image, original[:, ::-1])


def test_make_dataset_rejects_fewer_images_than_a_batch(sixteen_images):
    with pytest.raises(DataError, match="only 16 images for a batch of 32"):
        data_prep.make_dataset(sixteen_images, batch_size=32)


# ----------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_directory_raises(tmp_path):
    with pytest.raises(DataError, match=f"data directory not found: {tmp_path / 'nowhere'}"):
        data_prep.read_celeba(str(tmp_path / "nowhere"))


def test_directory_without_attribute_file_raises(tmp_path):
    with pytest.raises(DataError, match=f"no list_attr_celeba.txt or list_attr_celeba.csv in {tmp_path}"):
        data_prep.read_celeba(str(tmp_path))


def test_malformed_attribute_line_names_its_line_number(small_celeba):
    path = os.path.join(small_celeba, "list_attr_celeba.txt")
    rewrite_line(path, 5, lambda line: line.rsplit(" ", 1)[0])  # 000003.jpg loses its last value
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:5: expected a file name and 40 values, found 39"):
        data_prep.read_celeba(small_celeba)


@pytest.mark.parametrize("value, message", [("2", "values must be 1 or -1; row for 000004.jpg is not"),
                                            ("x", "list_attr_celeba.txt:6: non-numeric value")])
def test_attribute_value_other_than_plus_or_minus_one_raises(value, message, small_celeba):
    path = os.path.join(small_celeba, "list_attr_celeba.txt")
    rewrite_line(path, 6, lambda line: line[:-2] + f"{value:>2s}")  # 000004.jpg's Young
    with pytest.raises(DataError, match=message):
        data_prep.read_celeba(small_celeba)


def test_zero_attribute_values_are_read_as_absent(small_celeba):
    path = os.path.join(small_celeba, "list_attr_celeba.txt")
    rewrite_line(path, 6, lambda line: line[:-2] + " 0")
    assert data_prep.read_celeba(small_celeba).attributes.loc["000004.jpg", "Young"] == -1


def test_row_with_missing_image_is_skipped_with_a_warning(small_celeba, capsys):
    os.remove(os.path.join(small_celeba, "img_align_celeba", "000002.jpg"))
    dataset = data_prep.read_celeba(small_celeba)
    assert "warning: skipping 1 attribute rows whose image is missing" in capsys.readouterr().err
    assert dataset.skipped_missing == 1
    assert list(dataset.attributes.index) == [f"{index:06d}.jpg" for index in range(1, 21) if index != 2]
    assert list(dataset.partition.index) == list(dataset.attributes.index)


def test_row_with_missing_image_raises_when_strict(small_celeba):
    os.remove(os.path.join(small_celeba, "img_align_celeba", "000002.jpg"))
    with pytest.raises(DataError, match="1 images listed in .* are missing from .*, first 000002.jpg"):
        data_prep.read_celeba(small_celeba, strict=True)


def test_png_named_jpg_decodes(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (21, 17, 3), dtype=np.uint8)
    path = str(tmp_path / "really-a-png.jpg")
    with open(path, "wb") as handle:
        handle.write(cv2.imencode(".png", image[..., ::-1])[1].tobytes())  # cv2 encodes BGR
    np.testing.assert_array_equal(data_prep.read_image_uint8(path), image)


def test_png_with_alpha_decodes_to_rgb(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = str(tmp_path / "transparent.png")
    cv2.imwrite(path, np.dstack([image[..., ::-1], np.full((9, 7), 255, np.uint8)]))  # BGRA, opaque
    np.testing.assert_array_equal(data_prep.read_image_uint8(path), image)


def test_grey_jpeg_decodes_to_three_equal_channels(tmp_path):
    path = str(tmp_path / "grey.jpg")
    cv2.imwrite(path, np.tile(np.arange(0, 250, 10, dtype=np.uint8), (30, 1)))
    image = data_prep.read_image_uint8(path)
    assert image.shape == (30, 25, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_read_image_of_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "absent.jpg")
    with pytest.raises(DataError, match=f"image not found: {path}"):
        data_prep.read_image(path)


def test_read_image_returns_rgb_floats(tmp_path):
    path = str(tmp_path / "red.png")
    cv2.imwrite(path, np.full((4, 4, 3), (0, 0, 255), np.uint8))  # BGR red
    image = data_prep.read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[0, 0], [1.0, -1.0, -1.0])


# ----------------------------------------------------------------------------------------------------------
# Writing images and grids


def test_write_image_then_read_image_round_trips_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = str(tmp_path / "deep" / "image.png")
    data_prep.write_image(path, image)
    np.testing.assert_array_equal(data_prep.read_image_uint8(path), image)
    np.testing.assert_array_equal(data_prep.read_image(path), data_prep.to_float(image))
    assert os.listdir(tmp_path / "deep") == ["image.png"]  # the temporary file was renamed away


def test_save_grid_tiles_rows_and_columns(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 12, 3), dtype=np.uint8)
    path = data_prep.save_grid(str(tmp_path / "grid.png"), images, columns=3)
    grid = data_prep.read_image_uint8(path)
    assert grid.shape == (2 * (16 + 2) + 2, 3 * (12 + 2) + 2, 3)  # 2 rows x 3 columns, 2-pixel padding
    for index, image in enumerate(images):
        row, column = divmod(index, 3)
        np.testing.assert_array_equal(grid[2 + 18 * row:2 + 18 * row + 16, 2 + 14 * column:2 + 14 * column + 12], image)
    assert (grid[2 + 18:, 2 + 14 * 2:] == 255).all()  # the sixth tile is empty


def test_save_grid_with_labels_adds_a_margin_and_keeps_the_tiles(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 12, 3), dtype=np.uint8)
    plain = data_prep.read_image_uint8(data_prep.save_grid(str(tmp_path / "plain.png"), images, columns=3))
    path = data_prep.save_grid(str(tmp_path / "labelled.png"), images, columns=3, row_labels=["young", "old"],
                               column_labels=["a", "b", "c"])
    grid = data_prep.read_image_uint8(path)
    left = grid.shape[1] - plain.shape[1]
    assert grid.shape[0] == plain.shape[0] + 16 and left > 7 * len("young")
    np.testing.assert_array_equal(grid[16:, left:], plain)
    assert (grid[16:, :left] < 255).any() and (grid[:16, left:] < 255).any()  # the labels were drawn


# ----------------------------------------------------------------------------------------------------------
# Command line


def run_script(*args):
    return subprocess.run([sys.executable, "data_prep.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = run_script("stats", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "grid.png"))
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: data directory not found: {tmp_path / 'nowhere'}"
    assert "Traceback" not in result.stdout + result.stderr


def test_run_cli_turns_bad_input_into_one_line_and_exit_2(tmp_path, capsys):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(data_prep.main, ["stats", "--data", str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    expected = f"error: no list_attr_celeba.txt or list_attr_celeba.csv in {tmp_path / 'empty'}\n"
    assert capsys.readouterr().err == expected


def test_cli_stats_prints_counts_and_frequencies_and_saves_a_grid(tiny_celeba, tmp_path):
    out = tmp_path / "examples.png"
    result = run_script("stats", "--data", tiny_celeba, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{tiny_celeba}: 200 images"
    assert lines[1] == "  train 160, validation 20, test 20"
    for name in ("Male", "Eyeglasses", "Young"):
        frequency = 100 * len(expected_files("all", {name: 1})) / TINY_COUNT
        assert any(line.split()[:2] == [name, f"{frequency:.1f}%"] for line in lines), name
    assert lines[-1] == f"saved 64 example faces to {out}"
    assert data_prep.read_image_uint8(str(out)).shape == (8 * 66 + 2, 8 * 66 + 2, 3)  # 8x8 tiles of 64


def test_cli_prepare_reports_the_rate_then_reuses_the_cache(tiny_celeba, tmp_path):
    flags = ("prepare", "--data", tiny_celeba, "--cache-dir", str(tmp_path / "cache"), "--filter", "Smiling")
    first, second = run_script(*flags), run_script(*flags)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    count = len(expected_files("train", {"Smiling": 1}))
    assert first.stdout.startswith(f"{count} images (64, 64, 3) -> {tmp_path / 'cache'}")
    assert "images/s)" in first.stdout and "reused the cache" not in first.stdout
    assert second.stdout.startswith(f"{count} images (64, 64, 3) -> ") and "(reused the cache)" in second.stdout


def test_a_seeded_subset_is_sorted_distinct_and_the_same_for_a_seed():
    chosen = data_prep.seeded_subset(10, 4, seed=3)
    assert len(chosen) == 4 and len(set(chosen.tolist())) == 4 and list(chosen) == sorted(chosen)
    assert all(0 <= index < 10 for index in chosen)
    np.testing.assert_array_equal(chosen, data_prep.seeded_subset(10, 4, seed=3))
    assert sorted(data_prep.seeded_subset(5, 9).tolist()) == [0, 1, 2, 3, 4]  # more than there are: all of them


def test_a_report_is_its_markdown_and_its_json(tmp_path):
    written = data_prep.write_report(str(tmp_path / "out" / "scores"), "| a |\n", {"rows": [1, 2]})
    assert written == (str(tmp_path / "out" / "scores.md"), str(tmp_path / "out" / "scores.json"))
    assert (tmp_path / "out" / "scores.md").read_text() == "| a |\n"
    assert json.loads((tmp_path / "out" / "scores.json").read_text()) == {"rows": [1, 2]}
