"""Faces in user photos: MTCNN detection, alignment to CelebA's template, and the training crops.

MTCNN loads TensorFlow once (a few seconds); each astronaut detection then takes ~0.2 s on a CPU.
"""

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import (ALIGNED_HEIGHT, ALIGNED_WIDTH, CELEBA_TEMPLATE_LANDMARKS, DataError, align_face,
                       centre_crop_aligned, crop_output_shape, detect_faces, load_face)

EYE_TOLERANCE = 4.0  # pixels in the 178x218 aligned image; MTCNN's own landmark noise is ~1-2 px


def write_rgb(path, image):
    """Write an RGB (or grey) uint8 image with OpenCV, which expects BGR."""
    cv2.imwrite(str(path), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()  # (512, 512, 3) uint8, one face about 85 px wide


@pytest.fixture(scope="module")
def astronaut_landmarks(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    return faces[0]["landmarks"]


def test_detect_faces_lists_landmarks_in_template_order(astronaut, astronaut_landmarks):
    face = detect_faces(astronaut)[0]
    x, y, width, height = face["box"]
    assert face["landmarks"].shape == (5, 2) and face["confidence"] > 0.9
    left_eye, right_eye, nose, mouth_left, mouth_right = astronaut_landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # image-left first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert x < left_eye[0] and right_eye[0] < x + width and y < left_eye[1] < y + height


@pytest.mark.parametrize("factor", [4, 0.25])
def test_detect_faces_maps_large_and_tiny_photos_back_to_full_resolution(astronaut, astronaut_landmarks, factor):
    resized = cv2.resize(astronaut, None, fx=factor, fy=factor,
                         interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
    landmarks = detect_faces(resized)[0]["landmarks"]
    # cv2.resize maps pixel centres: x' = (x + 0.5) * factor - 0.5
    expected = (astronaut_landmarks + 0.5) * factor - 0.5
    assert np.abs(landmarks - expected).max() < 3 * max(factor, 1)


@pytest.mark.parametrize("name, grey", [("astronaut.png", False), ("astronaut.jpg", False),
                                        ("astronaut-grey.png", True)])
def test_load_face_puts_the_eyes_on_celebas_template(tmp_path, astronaut, name, grey):
    image = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY) if grey else astronaut
    face, details = load_face(write_rgb(tmp_path / name, image), return_details=True)
    aligned = details["aligned"]
    assert aligned.shape == (ALIGNED_HEIGHT, ALIGNED_WIDTH, 3) and aligned.dtype == np.uint8
    assert details["faces_found"] == 1 and not details["fallback"]
    eyes = detect_faces(aligned)[0]["landmarks"][:2]  # re-detected in the aligned image
    assert np.linalg.norm(eyes - CELEBA_TEMPLATE_LANDMARKS[:2], axis=1).max() < EYE_TOLERANCE
    assert face.shape == (64, 64, 3) and face.dtype == np.float32
    assert face.min() >= -1 and face.max() <= 1 and face.std() > 0.2


@pytest.mark.parametrize("crop, image_size", [("dcgan", 32), ("dcgan", 128), ("makeover", 64)])
def test_load_face_returns_the_training_crops_shape(tmp_path, astronaut, crop, image_size):
    face = load_face(write_rgb(tmp_path / "astronaut.png", astronaut), crop=crop, image_size=image_size)
    assert face.shape == (*crop_output_shape(crop, image_size), 3)
    assert face.dtype == np.float32 and -1 <= face.min() and face.max() <= 1


def test_align_face_with_template_landmarks_is_the_identity():
    image = np.random.default_rng(0).integers(0, 256, (ALIGNED_HEIGHT, ALIGNED_WIDTH, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, CELEBA_TEMPLATE_LANDMARKS), image)


def test_align_face_shrinks_a_large_photo_without_shifting_it(astronaut, astronaut_landmarks):
    aligned = align_face(astronaut, astronaut_landmarks).astype(np.float32)
    large = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    aligned_from_large = align_face(large, (astronaut_landmarks + 0.5) * 4 - 0.5).astype(np.float32)
    assert np.abs(aligned_from_large - aligned)[20:-20, 20:-20].mean() < 2  # ~0.8; half a pixel off gives ~3.5


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_photo_without_a_face_raises_a_data_error_naming_it(tmp_path, kind):
    image = np.full((300, 400, 3), 128, np.uint8)
    if kind == "noise":
        image = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    path = write_rgb(tmp_path / f"{kind}.png", image)
    with pytest.raises(DataError, match="no face found") as error:
        load_face(path)
    assert path in str(error.value) and "--center-crop" in str(error.value) and "\n" not in str(error.value)


def test_fallback_uses_the_centre_crop_when_no_face_is_found(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    face, details = load_face(write_rgb(tmp_path / "noise.png", image), fallback=True, return_details=True)
    assert face.shape == (64, 64, 3) and face.dtype == np.float32 and -1 <= face.min() and face.max() <= 1
    assert details["fallback"] and details["faces_found"] == 0 and details["landmarks"] is None
    assert np.array_equal(details["aligned"], centre_crop_aligned(image))


@pytest.mark.parametrize("height, width", [(300, 400), (600, 200), (436, 356)])
def test_centre_crop_aligned_keeps_celebas_aspect_and_centre(height, width):
    image = np.zeros((height, width, 3), np.uint8)
    image[height // 2 - 5:height // 2 + 5, width // 2 - 5:width // 2 + 5] = 255  # a dot at the centre
    crop = centre_crop_aligned(image)
    assert crop.shape == (ALIGNED_HEIGHT, ALIGNED_WIDTH, 3)
    rows, columns = np.nonzero(crop[..., 0] > 128)
    assert abs(rows.mean() - ALIGNED_HEIGHT / 2) < 2 and abs(columns.mean() - ALIGNED_WIDTH / 2) < 2


def test_several_faces_use_the_largest_and_say_so(tmp_path, capsys, astronaut):
    canvas = np.full((512, 768, 3), 90, np.uint8)
    canvas[:, :512] = astronaut[:, ::-1]  # mirrored, so the large face sits near the canvas's middle
    canvas[128:384, 512:] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    path = write_rgb(tmp_path / "two.png", canvas)
    _, details = load_face(path, return_details=True)
    assert details["faces_found"] == 2
    assert details["landmarks"][:, 0].max() < 512  # the full-size astronaut, not the small one on the right
    assert f"note: 2 faces in {path}; using the largest" in capsys.readouterr().err


@pytest.mark.parametrize("name, data", [("empty.jpg", b""), ("corrupt.jpg", b"\xff\xd8\xff not really a jpeg")])
def test_unreadable_photo_raises_a_data_error_naming_it(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=name):
        load_face(str(path))


def test_tiny_lfw_faces_are_found():
    faces = (skimage.data.lfw_subset()[:10] * 255).round().astype(np.uint8)  # (10, 25, 25) grey faces
    found = sum(len(detect_faces(face)) > 0 for face in faces)
    assert found >= 9
