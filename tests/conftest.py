"""Shared fixtures: a tiny CelebA written in the original layout, without the synthetic renderer."""

import os
import shutil
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import data_prep  # noqa: E402

TINY_COUNT = 200


def tiny_partition(index, count=TINY_COUNT):
    """The split code of the 1-based image `index`: the first 80% train, the next 10% validation, the rest test."""
    return 0 if index <= 0.8 * count else (1 if index <= 0.9 * count else 2)


def tiny_celeba_rows(*, count=TINY_COUNT, seed=0):
    """The ground truth of the tiny CelebA: (file name, 40 attribute values of 1/-1 in CelebA's order, background
    colour) per face. Tests compare the loader against this, not against the loader's own reading."""
    rng = np.random.default_rng(seed)
    for index in range(1, count + 1):
        values = rng.choice([-1, 1], size=40)
        background = rng.integers(40, 200, 3)
        yield f"{index:06d}.jpg", values, background


def appearances(dataset, images):
    """How many times each of `images` appears in one pass over `dataset` (uint8 batches, no flips), found by
    exact pixels; every face of the tiny CelebA has its own background colour, so no two are equal."""
    index = {image.tobytes(): number for number, image in enumerate(np.asarray(images))}
    counts = np.zeros(len(index), int)
    for batch in dataset:
        for image in np.asarray(batch):
            counts[index[image.tobytes()]] += 1
    return counts


def tiny_men(split=0):
    """For each face of a split of the tiny CelebA, in file order: whether its ground truth says Male."""
    male = data_prep.CELEBA_ATTRIBUTES.index("Male")
    return np.array([values[male] == 1 for index, (_, values, _) in enumerate(tiny_celeba_rows(), 1)
                     if tiny_partition(index) == split])


def write_tiny_celeba(root, *, count=TINY_COUNT, seed=0):
    """178x218 JPEGs whose content follows three attributes (Male: blue face, Eyeglasses: a dark band over the
    eyes, Smiling: a bright mouth), with CelebA's attribute, partition and landmark files."""
    os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
    names = list(data_prep.CELEBA_ATTRIBUTES)
    attribute_lines, partition_lines, landmark_lines = [], [], []
    for index, (name, values, background) in enumerate(tiny_celeba_rows(count=count, seed=seed), start=1):
        male, glasses, smiling = (values[names.index(name)] == 1 for name in ("Male", "Eyeglasses", "Smiling"))
        image = np.full((218, 178, 3), background, np.uint8)
        cv2.ellipse(image, (89, 125), (42, 56), 0, 0, 360, (200, 120, 60) if male else (90, 150, 220), -1)
        if glasses:
            image[103:120, 55:123] = 20
        if smiling:
            image[145:158, 70:108] = 250
        cv2.imwrite(os.path.join(root, "img_align_celeba", name), image)
        # Values padded to two characters, so runs of spaces separate them as in the real file.
        attribute_lines.append(name + " " + " ".join(f"{value:2d}" for value in values))
        partition_lines.append(f"{name} {tiny_partition(index, count)}")
        landmark_lines.append(name + "  69  111  108  111   88  135   72  152  105  152")
    with open(os.path.join(root, "list_attr_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(names)} \n" + "\n".join(attribute_lines) + "\n")
    with open(os.path.join(root, "list_eval_partition.txt"), "w") as handle:
        handle.write("\n".join(partition_lines) + "\n")
    with open(os.path.join(root, "list_landmarks_align_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(data_prep.LANDMARK_COLUMNS)}\n" + "\n".join(landmark_lines) + "\n")
    return root


def _read_whitespace_table(path, header_lines):
    """(column names or None, [[file, value, ...], ...]) of one of CelebA's .txt tables."""
    with open(path) as handle:
        lines = handle.read().splitlines()
    names = lines[1].split() if header_lines == 2 else None
    return names, [line.split() for line in lines[header_lines:] if line.strip()]


def write_csv_layout(txt_root, csv_root):
    """Convert a CelebA in the original .txt layout into the Kaggle CSV variant: list_attr_celeba.csv,
    list_eval_partition.csv, list_landmarks_align_celeba.csv and images under img_align_celeba/img_align_celeba/."""
    image_dir = os.path.join(csv_root, "img_align_celeba", "img_align_celeba")
    os.makedirs(image_dir, exist_ok=True)
    source_images = os.path.join(txt_root, "img_align_celeba")
    for name in sorted(os.listdir(source_images)):
        shutil.copy2(os.path.join(source_images, name), os.path.join(image_dir, name))
    tables = (("list_attr_celeba", 2, None), ("list_eval_partition", 0, ["partition"]),
              ("list_landmarks_align_celeba", 2, None))
    for stem, header_lines, fixed_names in tables:
        source = os.path.join(txt_root, f"{stem}.txt")
        if not os.path.isfile(source):
            continue
        names, rows = _read_whitespace_table(source, header_lines)
        with open(os.path.join(csv_root, f"{stem}.csv"), "w") as handle:
            handle.write(",".join(["image_id", *(names or fixed_names)]) + "\n")
            handle.write("".join(",".join(row) + "\n" for row in rows))
    return csv_root


@pytest.fixture(scope="session")
def tiny_celeba(tmp_path_factory):
    """A tiny CelebA in the original .txt layout (200 faces, 160/20/20 split); treat it as read-only."""
    return str(write_tiny_celeba(str(tmp_path_factory.mktemp("tiny-celeba"))))


def train_tiny_classifier(tiny_celeba, out, *, crop="dcgan"):
    """The attribute CNN of the tiny CelebA at 32 pixels wide (8 and 16 filters, four epochs through the CLI), for
    the tests of the scripts that measure with one. Returns its directory."""
    import evaluate

    evaluate.main(["classifier", "--data", tiny_celeba, "--crop", crop, "--image-size", "32", "--filters", "8", "16",
                   "--epochs", "4", "--batch-size", "32", "--learning-rate", "0.01",
                   "--cache-dir", str(out / "cache"), "--out", str(out / "classifier")])
    return out / "classifier"


@pytest.fixture(scope="session")
def classifier_dir(tiny_celeba, tmp_path_factory):
    """The tiny CelebA's attribute CNN of the DCGAN crop (a pathlib.Path); treat it as read-only."""
    return train_tiny_classifier(tiny_celeba, tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="session")
def makeover_classifier(tiny_celeba, tmp_path_factory):
    """The tiny CelebA's attribute CNN of the makeover crop (a pathlib.Path); treat it as read-only."""
    return train_tiny_classifier(tiny_celeba, tmp_path_factory.mktemp("makeover-classifier"), crop="makeover")


def train_settled_tiny_run(tiny_celeba, workspace, *, latent_dim=8):
    """A one-epoch GAN (32x32, 8 filters, z of `latent_dim`, three steps) whose batch norm is settled on 20 batches
    of samples, so that G(z) depends on z; for the tests of the scripts that stand on a run. Returns its path."""
    import dcgan
    import runs

    runs_root = workspace / "runs"
    dcgan.main(["--data", tiny_celeba, "--image-size", "32", "--filters", "8", "--batch-size", "16",
                "--steps-per-epoch", "3", "--epochs", "1", "--latent-dim", str(latent_dim), "--runs-dir", str(runs_root),
                "--name", "tiny", "--cache-dir", str(workspace / "cache"), "--precision", "float32"])
    generator = dcgan.load_generator(str(runs_root / "tiny"))
    for index in range(20):
        generator(dcgan.latent_for_seed(100 + index, 64, latent_dim), training=True)
    runs.save_model_atomic(generator, str(runs_root / "tiny" / "generator.keras"))
    return str(runs_root / "tiny")

