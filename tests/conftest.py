"""Shared fixtures: a tiny CelebA written in the original layout, without the synthetic renderer."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import data_prep  # noqa: E402

TINY_COUNT = 200


def write_tiny_celeba(root, *, count=TINY_COUNT, seed=0):
    """178x218 JPEGs whose content follows three attributes (Male: blue face, Eyeglasses: a dark band over the
    eyes, Smiling: a bright mouth), with CelebA's attribute, partition and landmark files."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
    names = list(data_prep.CELEBA_ATTRIBUTES)
    attribute_lines, partition_lines, landmark_lines = [], [], []
    for index in range(1, count + 1):
        values = rng.choice([-1, 1], size=40)
        male, glasses, smiling = (values[names.index(name)] == 1 for name in ("Male", "Eyeglasses", "Smiling"))
        image = np.full((218, 178, 3), rng.integers(40, 200, 3), np.uint8)
        cv2.ellipse(image, (89, 125), (42, 56), 0, 0, 360, (200, 120, 60) if male else (90, 150, 220), -1)
        if glasses:
            image[103:120, 55:123] = 20
        if smiling:
            image[145:158, 70:108] = 250
        name = f"{index:06d}.jpg"
        cv2.imwrite(os.path.join(root, "img_align_celeba", name), image)
        attribute_lines.append(name + " " + " ".join(f"{value:2d}" for value in values))
        partition_lines.append(f"{name} {0 if index <= 0.8 * count else (1 if index <= 0.9 * count else 2)}")
        landmark_lines.append(name + "  69  111  108  111   88  135   72  152  105  152")
    with open(os.path.join(root, "list_attr_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(names)} \n" + "\n".join(attribute_lines) + "\n")
    with open(os.path.join(root, "list_eval_partition.txt"), "w") as handle:
        handle.write("\n".join(partition_lines) + "\n")
    with open(os.path.join(root, "list_landmarks_align_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(data_prep.LANDMARK_COLUMNS)}\n" + "\n".join(landmark_lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_celeba(tmp_path_factory):
    """A tiny CelebA in the original .txt layout (200 faces, 160/20/20 split); treat it as read-only."""
    return str(write_tiny_celeba(str(tmp_path_factory.mktemp("tiny-celeba"))))
