"""facemath.py: exact arithmetic on known codes, directions on constructed data, and every command on a tiny run
(32x32, 8 filters, z of 8, one epoch of three steps) with a tiny attribute CNN."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import skimage.data

import data_prep
from conftest import train_settled_tiny_run
import dcgan
import directions
import evaluate
import runs
import scores
import facemath
import keras  # after dcgan, which chooses the TensorFlow backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LATENT = 8
TEST_FACES = ["000181.jpg", "000182.jpg", "000183.jpg"]  # the tiny CelebA's test split is 000181 to 000200
QUICK = ["--method", "optimize", "--steps", "3"]  # projection with a few steps: the tiny run has no encoder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("facemath")


@pytest.fixture(scope="module")
def tiny_run(tiny_celeba, workspace):
    """A one-epoch GAN with z of 8 whose batch norm is settled, so that G(z) depends on z."""
    return train_settled_tiny_run(tiny_celeba, workspace, latent_dim=LATENT)


def cli(argv, run, out, classifier=None):
    """facemath.main (scores.main for the scores) with the tiny run's flags; flags in argv come later, so they win."""
    flags = ["--run", run, "--out", str(out), "--fit-limit", "160", *QUICK,
             *(["--classifier", str(classifier)] if classifier else [])]
    if argv[0] in scores.FACE_MATH:
        return scores.main([argv[0], *flags, *argv[1:]])
    if argv[0] in facemath.SUBCOMMANDS:
        return facemath.main([argv[0], *flags, *argv[1:]])
    return facemath.main([*flags, *argv])


def cli_error(argv, capsys):
    """The one line that `python facemath.py ...` prints for bad input (it must exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(facemath.main, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def planted_codes(count=3000, latent_dim=16, seed=0):
    """Gaussian codes whose Smiling faces are shifted by 1.5 along a known unit direction; other labels random."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((count, 40)) < 0.4).astype(np.float32)
    labels[:, directions.attribute_index("Wavy_Hair")] = 0  # never present: no direction
    planted = rng.standard_normal(latent_dim)
    planted /= np.linalg.norm(planted)
    codes = rng.standard_normal((count, latent_dim)) + 1.5 * labels[:, [directions.attribute_index("Smiling")]] * planted
    return codes.astype(np.float32), labels, planted


# ----------------------------------------------------------------------------------------------------------
# Arithmetic on known codes


def test_analogy_grid_has_a_b_c_and_c_plus_b_minus_a_at_its_corners():
    rng = np.random.default_rng(1)
    a, b, c = rng.standard_normal((3, LATENT)).astype(np.float32)
    for spherical in (True, False):
        grid = facemath.analogy_grid(a, b, c, size=5, spherical=spherical)
        assert grid.shape == (5, 5, LATENT)
        assert np.array_equal(grid[0, 0], a) and np.array_equal(grid[0, -1], b) and np.array_equal(grid[-1, 0], c)
        assert np.array_equal(grid[-1, -1], (c + b - a).astype(np.float32))


def test_linear_grid_is_bilinear_and_slerp_keeps_the_norm_between_orthogonal_codes():
    a, b, c = np.eye(3, dtype=np.float32) * 2.0
    grid = facemath.analogy_grid(a, b, c, size=3, spherical=False)
    assert np.allclose(grid[1, 1], a + 0.5 * (b - a) + 0.5 * (c - a))
    strip = facemath.interpolation_strip(a, b, steps=5, spherical=True)
    assert np.array_equal(strip[0], a) and np.array_equal(strip[-1], b)
    assert np.allclose(np.linalg.norm(strip, axis=1), 2.0)
    linear = facemath.interpolation_strip(a, b, steps=5, spherical=False)
    assert np.linalg.norm(linear[2]) == pytest.approx(np.sqrt(2.0))


def test_mean_difference_and_boundary_recover_a_planted_direction():
    codes, labels, planted = planted_codes()
    fitted = directions.fit_directions(codes, labels, seed=0)
    smiling = directions.attribute_index("Smiling")
    mean = fitted.mean[smiling]
    assert mean @ planted / np.linalg.norm(mean) > 0.97
    assert np.linalg.norm(mean) == pytest.approx(1.5, abs=0.15)
    assert fitted.normals[smiling] @ planted > 0.9
    assert fitted.accuracy[smiling] > fitted.majority[smiling] + 0.1
    # A random attribute has no direction worth the name, and an absent one has none at all.
    male = directions.attribute_index("Male")
    assert abs(fitted.mean[male] @ planted) / np.linalg.norm(fitted.mean[male]) < 0.5
    assert not fitted.varying[directions.attribute_index("Wavy_Hair")]


def test_partial_effect_leaves_out_what_a_correlated_attribute_adds():
    # Goatee only on men (half of whom have one); a man's code moves by 2 along e0, a goatee's by 1 along e1. The
    # mean difference of Goatee carries the Male shift: 2 * (P(male | goatee) - P(male | no goatee)) = 2 * (1 - 1/3)
    # along e0. The partial effect is Goatee's own shift: e1.
    rng = np.random.default_rng(0)
    count, labels = 6000, np.zeros((6000, 40), np.float32)
    male, goatee = directions.attribute_index("Male"), directions.attribute_index("Goatee")
    labels[:, male] = rng.random(count) < 0.5
    labels[:, goatee] = labels[:, male] * (rng.random(count) < 0.5)
    codes = 0.1 * rng.standard_normal((count, 4)) + 2.0 * labels[:, [male]] * np.eye(4)[0] \
        + labels[:, [goatee]] * np.eye(4)[1]
    fitted = directions.fit_directions(codes.astype(np.float32), labels)
    np.testing.assert_allclose(fitted.mean[goatee], [4 / 3, 1, 0, 0], atol=0.05)
    np.testing.assert_allclose(fitted.partial[goatee], [0, 1, 0, 0], atol=0.02)
    np.testing.assert_allclose(fitted.partial[male], [2, 0, 0, 0], atol=0.02)
    unit = directions.direction_unit(fitted, goatee, kind="partial")
    np.testing.assert_allclose(unit, [0, 1, 0, 0], atol=0.02)
    # Strength 1 is the groups' distance with Male held: the goatee's own shift of 1.
    np.testing.assert_allclose(directions.edit_vector(fitted, goatee, kind="partial"), [0, 1, 0, 0], atol=0.02)


def test_partial_edit_adds_the_attribute_even_when_a_correlated_one_pulls_the_other_way():
    # Goatee's own shift is +1 along e0, Male's -3 along e0, and goatees only on men: the plain groups' distance
    # along e0 is 1 - 3 * (1 - 1/3) = -1, so scaling the unit vector by it would take the goatee away.
    rng = np.random.default_rng(1)
    labels = np.zeros((6000, 40), np.float32)
    male, goatee = directions.attribute_index("Male"), directions.attribute_index("Goatee")
    labels[:, male] = rng.random(6000) < 0.5
    labels[:, goatee] = labels[:, male] * (rng.random(6000) < 0.5)
    codes = 0.1 * rng.standard_normal((6000, 3)) + (labels[:, [goatee]] - 3.0 * labels[:, [male]]) * np.eye(3)[0]
    fitted = directions.fit_directions(codes.astype(np.float32), labels)
    assert fitted.mean[goatee][0] == pytest.approx(-1.0, abs=0.05)
    np.testing.assert_allclose(directions.edit_vector(fitted, goatee, kind="partial"), [1, 0, 0], atol=0.02)


def test_directions_have_one_row_per_attribute_and_unit_normals():
    codes, labels, _ = planted_codes(count=400, latent_dim=LATENT)
    fitted = directions.fit_directions(codes, labels)
    for matrix in (fitted.mean, fitted.normals, fitted.mean_with, fitted.mean_without,
                   fitted.partial):
        assert matrix.shape == (40, LATENT)
    assert fitted.accuracy.shape == fitted.varying.shape == (40,)
    assert fitted.correlation.shape == (40, 40)
    assert np.allclose(np.linalg.norm(fitted.normals[fitted.varying], axis=1), 1.0, atol=1e-5)
    wavy = directions.attribute_index("Wavy_Hair")
    assert np.isnan(fitted.accuracy[wavy]) and not fitted.normals[wavy].any()


def test_conditional_direction_is_orthogonal_to_the_ones_it_leaves_alone():
    codes, labels, _ = planted_codes(count=600, latent_dim=LATENT)
    fitted = directions.fit_directions(codes, labels)
    smiling, male, glasses = (directions.attribute_index(name) for name in ("Smiling", "Male", "Eyeglasses"))
    unit = directions.direction_unit(fitted, smiling, kind="boundary", conditions=[male, glasses])
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    assert abs(unit @ fitted.normals[male]) < 1e-5 and abs(unit @ fitted.normals[glasses]) < 1e-5
    assert unit @ fitted.normals[smiling] > 0  # still the target's side
    default = directions.direction_unit(fitted, smiling, kind="conditional")
    for condition in directions.correlated_attributes(fitted, smiling):
        assert abs(default @ fitted.normals[condition]) < 1e-5


def test_strength_one_is_the_group_distance_along_the_direction():
    codes, labels, _ = planted_codes(count=600, latent_dim=LATENT)
    fitted = directions.fit_directions(codes, labels)
    smiling = directions.attribute_index("Smiling")
    assert np.allclose(directions.edit_vector(fitted, smiling, kind="mean"), fitted.mean[smiling], atol=1e-5)
    boundary = directions.edit_vector(fitted, smiling, kind="boundary")
    normal = fitted.normals[smiling]
    assert np.allclose(boundary, (fitted.mean[smiling] @ normal) * normal, atol=1e-5)
    step = facemath.edit_step([(smiling, None, 2.0), (smiling, None, -0.5)], fitted, kind="mean")
    assert np.allclose(step, 1.5 * fitted.mean[smiling], atol=1e-5)


def test_local_direction_keeps_the_quarter_of_positions_where_the_maps_differ_most(monkeypatch):
    # Maps of 2x2 positions and two channels are the codes themselves. The Smiling faces' maps average to the
    # difference below (half and one and a half times it); the other faces' maps are zero.
    difference = np.array([[2, 0], [1.5, 1.5], [0, 1], [0, 0]], np.float32)  # (position, channel)
    codes = np.concatenate([np.stack([0.5 * difference, 1.5 * difference] * 2).reshape(4, -1), np.zeros((4, 8))])
    monkeypatch.setattr(dcgan, "generator_maps", lambda generator, z: np.asarray(z).reshape(-1, 2, 2, 2))
    labels = np.zeros((8, 40), np.float32)
    smiling = directions.attribute_index("Smiling")
    labels[:4, smiling] = [1.0, 0.9, 0.6, 1.0]  # read as present (> 0.5), not as weights
    labels[4:, smiling] = [0.0, 0.2, 0.4, 0.0]
    varying = np.zeros(40, bool)
    varying[smiling] = True
    local = directions.fit_local(None, codes.astype(np.float32), labels, varying, batch_size=3)  # three batches
    # Squared norms over the channels: 4, 4.5, 1, 0. Only the second position is kept, with both channels (a mask
    # per position and channel would keep the single largest value, 2, instead).
    np.testing.assert_allclose(local[smiling].reshape(4, 2), [[0, 0], [1.5, 1.5], [0, 0], [0, 0]], atol=1e-6)
    assert not local[directions.attribute_index("Male")].any()  # not varying: no direction
    labels = (labels > 0.5).astype(np.float32)
    fitted = directions.fit_directions(codes, labels, min_group=2)
    fitted.local = local
    vector = directions.edit_vector(fitted, smiling, kind="local")
    # Strength 1 moves by the groups' mean distance along the vector: difference . v / |v| = |v| (4.5 / 4.5 ** 0.5).
    assert vector.shape == (2, 2, 2) and float(vector.reshape(-1) @ difference.reshape(-1)) == pytest.approx(4.5)
    assert np.allclose(facemath.edit_step([(smiling, None, 1.5)], fitted, kind="local"), 1.5 * vector)
    with pytest.raises(data_prep.DataError, match="no conditions"):
        directions.edit_vector(fitted, smiling, kind="local", conditions=[directions.attribute_index("Male")])
    fitted.local = None
    with pytest.raises(data_prep.DataError, match="8x8 feature maps"):
        directions.edit_vector(fitted, smiling, kind="local")


def test_description_scores_are_zero_midway_and_a_half_at_the_group_mean():
    codes, labels, _ = planted_codes(count=600, latent_dim=LATENT)
    fitted = directions.fit_directions(codes, labels)
    smiling = directions.attribute_index("Smiling")
    probes = np.stack([fitted.mean_with[smiling], 0.5 * (fitted.mean_with[smiling]
                                                              + fitted.mean_without[smiling])])
    scores = facemath.attribute_scores(fitted, probes)
    assert scores[:, smiling] == pytest.approx([0.5, 0.0], abs=1e-4)
    assert np.isnan(scores[0, directions.attribute_index("Wavy_Hair")])
    assert facemath.top_attributes(scores[:1], count=5).shape == (1, 5)


def test_edit_and_direction_parsing():
    assert directions.parse_edit("smiling=1.5") == (directions.attribute_index("Smiling"), None, 1.5)
    target, conditions, strength = directions.parse_edit("Smiling|Male,Eyeglasses=-2")
    assert conditions == [directions.attribute_index("Male"), directions.attribute_index("Eyeglasses")]
    assert strength == -2.0
    with pytest.raises(ValueError, match="did you mean 'Eyeglasses'"):
        directions.parse_edit("Eyeglases=1")
    with pytest.raises(ValueError, match="not a number"):
        directions.parse_edit("Smiling=lots")


def test_projector_export_has_codes_labels_sprite_and_config(tmp_path):
    codes = np.arange(12, dtype=np.float32).reshape(3, 4)
    labels = np.zeros((3, 40), np.float32)
    labels[1, 20] = 1
    facemath.write_projector(str(tmp_path), codes, ["a.jpg", "b.jpg", "c.jpg"], labels,
                             np.zeros((3, 8, 8, 3), np.uint8))
    rows = (tmp_path / "tensors.tsv").read_text().splitlines()
    assert [list(map(float, row.split("\t"))) for row in rows] == codes.tolist()
    metadata = (tmp_path / "metadata.tsv").read_text().splitlines()
    assert metadata[0].split("\t") == ["name", *data_prep.CELEBA_ATTRIBUTES] and metadata[2].split("\t")[21] == "1"
    assert cv2.imread(str(tmp_path / "sprite.png")).shape == (16, 16, 3)  # 2 x 2 thumbnails of 8
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "tensors.tsv"' in config and "single_image_dim: 8" in config


# ----------------------------------------------------------------------------------------------------------
# The commands on a tiny run


def test_analogy_of_data_faces_writes_grid_codes_and_gif(tiny_run, tmp_path):
    stem = cli(["--analogy", *TEST_FACES, "--size", "4"], tiny_run, tmp_path)
    archive = np.load(stem + ".npz")
    assert archive["grid"].shape == (4, 4, LATENT)
    assert np.array_equal(archive["d"], archive["c"] + archive["b"] - archive["a"])
    assert [str(name) for name in archive["names"]] == TEST_FACES and str(archive["method"]) == "optimize"
    assert cv2.imread(stem + ".png") is not None and os.path.getsize(stem + ".gif") > 0
    record = json.loads(open(stem + ".json").read())
    assert record["run"] == os.path.abspath(tiny_run) and record["seed"] == 0 and record["inputs"] == TEST_FACES


def test_analogy_examples_pick_faces_by_their_labels(tiny_run, tmp_path):
    stem = cli(["--analogy", "--examples", "--size", "3"], tiny_run, tmp_path)
    names = json.loads(open(stem + ".json").read())["inputs"]
    config = runs.read_config(tiny_run)
    table = data_prep.read_celeba(config["data"]).attributes
    assert [int(table.loc[name, "Male"]) for name in names] == [1, 1, -1]
    assert [int(table.loc[name, "Eyeglasses"]) for name in names] == [-1, 1, -1]


def test_analogy_of_three_real_photos(tiny_run, tmp_path):
    paths = [str(tmp_path / "astronaut.jpg"), str(tmp_path / "lfw0.jpg"), str(tmp_path / "lfw1.jpg")]
    cv2.imwrite(paths[0], cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    faces = skimage.data.lfw_subset()
    for path, face in zip(paths[1:], faces[:2]):
        cv2.imwrite(path, np.round(255 * face).astype(np.uint8))
    stem = cli(["--analogy", *paths, "--size", "3", "--linear"], tiny_run, tmp_path / "out")
    assert os.path.basename(stem).startswith("analogy-astronaut-lfw0-lfw1-optimize-linear")
    assert cv2.imread(stem + "-inputs.png") is not None


def test_edit_writes_one_row_per_edit_and_a_sweep(tiny_run, tmp_path):
    stem = cli(["--edit", TEST_FACES[0], "--add", "Smiling=1.5", "--add", "Eyeglasses=-1", "--add",
                "Smiling|Male=2", "--sweep", "Smiling"], tiny_run, tmp_path)
    grid = cv2.imread(stem + ".png")
    sweep = cv2.imread(stem + "-sweep.png")
    assert grid is not None and sweep is not None
    assert grid.shape[0] > 4 * 32 and sweep.shape[1] > 7 * 32  # three edits and "all together"; seven strengths
    record = json.loads(open(stem + ".json").read())
    assert record["edits"] == ["Smiling=1.5", "Eyeglasses=-1", "Smiling|Male=2"] and record["kind"] == "mean"


def test_generator_split_at_its_8x8_maps_draws_the_same_faces_and_adds_map_steps(tiny_run):
    generator = dcgan.load_generator(tiny_run)
    z = dcgan.latent_for_seed(3, 4, LATENT)
    maps = dcgan.generator_maps(generator, z)
    batch_norm = keras.Model(generator.input, generator.get_layer("up1_bn").output)
    np.testing.assert_allclose(maps, np.asarray(batch_norm(z)), atol=1e-5)  # after the batch norm, before its ReLU
    assert maps.shape[1:3] == (8, 8) and maps.min() < 0
    np.testing.assert_allclose(dcgan.generate_from_maps(generator, maps), dcgan.generate(generator, z), atol=1e-5)
    step = np.zeros(maps.shape[1:], np.float32)
    step[2:4, 2:4] = 3.0
    edited = dcgan.generate(generator, z, maps_offsets=step)
    np.testing.assert_allclose(edited, dcgan.generate_from_maps(generator, maps + step), atol=1e-5)
    assert np.abs(edited - dcgan.generate(generator, z)).max() > 1e-3
    plain = keras.Sequential([keras.Input((LATENT,)), keras.layers.Dense(4, name="project")])
    with pytest.raises(data_prep.DataError, match="no up1_bn layer"):
        dcgan.generator_maps(plain, z)


def test_local_edits_and_analogies_on_the_feature_maps(tiny_run, classifier_dir, tmp_path, monkeypatch):
    stem = cli(["--edit", TEST_FACES[0], "--add", "Smiling=1.5", "--sweep", "Smiling", "--kind", "local"],
               tiny_run, tmp_path)
    record = json.loads(open(stem + ".json").read())
    assert record["kind"] == "local" and cv2.imread(stem + ".png") is not None
    assert cv2.imread(stem + "-sweep.png").shape[1] > 7 * 32
    stem = cli(["--analogy", *TEST_FACES, "--size", "3", "--space", "maps"], tiny_run, tmp_path)
    archive = np.load(stem + ".npz")
    maps = dcgan.generator_maps(dcgan.load_generator(tiny_run), np.stack([archive["a"], archive["b"], archive["c"]]))
    corners = maps.reshape(3, -1)
    assert archive["grid_maps"].shape == (3, 3, corners.shape[1]) and str(archive["space"]) == "maps"
    assert "grid" not in archive and "d" not in archive  # no array of maps under a name that holds codes elsewhere
    np.testing.assert_allclose(archive["a_maps"], corners[0], atol=1e-5)
    np.testing.assert_allclose(archive["d_maps"], corners[2] + corners[1] - corners[0], atol=1e-4)
    assert os.path.basename(stem).startswith("analogy-000181-000182-000183-optimize-maps-linear")
    flags = ["--test-limit", "20"]
    # The tiny CNN's features hardly move, so here they are the pixels: identity distance is how far a face moved.
    pixels = scores.cnn_outputs
    monkeypatch.setattr(scores, "cnn_outputs", lambda classifier, images: (pixels(classifier, images)[0],
                                                                           images.reshape(len(images), -1)))
    out = cli(["edits", "--count", "4", "--kinds", "mean,local", "--attributes", "Smiling", *flags],
              tiny_run, tmp_path / "scores", classifier_dir)
    rows = json.loads(open(os.path.join(out, "edit-scores.json")).read())["rows"]
    assert {row["kind"] for row in rows} == {"mean", "local"}
    unedited = [row for row in rows if row["strength"] == 0]  # a step of zero leaves every face as it was
    assert all(row["collateral"] < 1e-4 and row["identity_distance"] < 1e-3 for row in unedited)
    moved = {(row["sense"], row["strength"]): row["identity_distance"] for row in rows if row["kind"] == "local"}
    assert 0 < moved["add", 1.0] < moved["add", 2.0] < moved["add", 3.0]  # the local step reaches the images
    assert os.path.isfile(os.path.join(out, "edit-scores-examples-gan-local.png"))
    cli(["analogies", "--count", "5", "--space", "maps", *flags], tiny_run, tmp_path / "scores", classifier_dir)
    rows = json.loads(open(os.path.join(out, "analogy-scores-maps.json")).read())["rows"]
    assert rows and all(row["space"] == "maps" and 0 <= row["analogy_both"] <= 1 for row in rows)


def test_an_analogy_on_the_maps_whose_c_is_a_draws_b(tiny_run, monkeypatch):
    # A and C share one code, B has another: D's maps are C's + B's - A's = B's, so D is drawn as G(B) exactly
    # (the analogy on the codes gives the same, and a sign slip, A - B, would draw G(2A - B) instead).
    run = dcgan.load_run(tiny_run)
    a, b = dcgan.latent_for_seed(5, 2, LATENT)
    labels = np.zeros((3, 40), np.float32)
    labels[:2, directions.attribute_index("Male")] = 1
    labels[1, directions.attribute_index("Eyeglasses")] = 1  # face 0: A (a man), 1: B (with glasses), 2: C
    held = directions.Codes(np.stack([a, b, a]), ["a", "b", "c"], labels, "samples", "test", tiny_run)
    seen = []
    monkeypatch.setattr(evaluate, "predict_attributes", lambda classifier, images: seen.append(images)
                        or np.zeros((len(images), 40)))
    for space in facemath.SPACES:
        seen.clear()
        row, = scores.score_analogies(run, held, classifier=None, pairs=[("Male", "Eyeglasses")], count=3,
                                      space=space)
        np.testing.assert_allclose(seen[0], np.repeat(dcgan.generate(run.generator, b[None]), 3, axis=0), atol=1e-5)
        assert row["space"] == space and row["analogy_x"] == 1.0 and row["analogy_y"] == 0.0  # nothing said present


def test_edits_leave_the_local_kind_out_for_a_generator_without_8x8_maps(tiny_run, classifier_dir, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setattr(dcgan, "has_maps", lambda generator: False)  # as an 8-pixel run's generator
    flags = ["--test-limit", "20", "--count", "4", "--attributes", "Smiling"]
    out = cli(["edits", *flags], tiny_run, tmp_path, classifier_dir)
    assert "the local kind is left out" in capsys.readouterr().out
    rows = json.loads(open(os.path.join(out, "edit-scores.json")).read())["rows"]
    assert {row["kind"] for row in rows} == set(directions.KINDS)
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(scores.main, ["edits", "--run", tiny_run, "--out", str(tmp_path), *QUICK, *flags,
                                        "--classifier", str(classifier_dir), "--kinds", "mean,local"])
    assert exit_info.value.code == 2 and "leave local out of --kinds" in capsys.readouterr().err


def test_describe_average_and_interpolate_write_their_files(tiny_run, classifier_dir, tmp_path, capsys):
    stem = cli(["--describe", TEST_FACES[0]], tiny_run, tmp_path, classifier_dir)
    described = json.loads(open(stem + ".json").read())["described"][0]
    assert len(described["top"]) == 5 and len(described["cnn_top"]) == 5
    assert "the attribute CNN on the photo" in capsys.readouterr().out
    stem = cli(["--average", *TEST_FACES], tiny_run, tmp_path)
    archive = np.load(stem + ".npz")
    assert np.allclose(archive["average"], archive["codes"].mean(axis=0))
    stem = cli(["--interpolate", *TEST_FACES[:2], "--frames", "5"], tiny_run, tmp_path)
    codes = np.load(stem + ".npz")["codes"]
    assert codes.shape == (5, LATENT) and os.path.getsize(stem + ".gif") > 0


def test_map_writes_a_chart_and_a_projector(tiny_run, tmp_path):
    out = cli(["--map", "--limit", "20", "--color-by", "Male"], tiny_run, tmp_path)
    assert os.path.isfile(os.path.join(out, "map.png"))
    assert len(open(os.path.join(out, "projector", "tensors.tsv")).read().splitlines()) == 20
    assert os.path.isfile(os.path.join(out, "projector", "projector_config.pbtxt"))


def test_codes_are_cached_and_rebuilt_when_the_method_changes(tiny_run):
    run = dcgan.load_run(tiny_run)
    first = directions.dataset_codes(run, method="optimize", split="test", limit=5, steps=2)
    path = directions.codes_path(run, method="optimize", split="test", limit=5)
    modified = os.path.getmtime(path)
    again = directions.dataset_codes(run, method="optimize", split="test", limit=5, steps=2)
    assert os.path.getmtime(path) == modified and np.array_equal(first.codes, again.codes)
    assert again.labels.shape == (5, 40) and again.names == first.names
    directions.dataset_codes(run, method="optimize", split="test", limit=5, steps=3)  # other settings: rebuilt
    assert os.path.getmtime(path) != modified


def test_unsaved_codes_read_the_cache_but_write_nothing(tiny_run):
    run = dcgan.load_run(tiny_run)
    path = directions.codes_path(run, method="optimize", split="test", limit=4)
    unsaved = directions.dataset_codes(run, method="optimize", split="test", limit=4, steps=2, save=False)
    assert not os.path.exists(path) and not unsaved.from_cache and unsaved.codes.shape == (4, LATENT)
    saved = directions.dataset_codes(run, method="optimize", split="test", limit=4, steps=2)
    assert os.path.isfile(path) and not saved.from_cache
    cached = directions.dataset_codes(run, method="optimize", split="test", limit=4, steps=2, save=False)
    assert cached.from_cache and np.array_equal(cached.codes, saved.codes) and cached.names == saved.names


def test_score_commands_write_tables(tiny_run, classifier_dir, tmp_path):
    flags = ["--test-limit", "20"]
    out = cli(["edits", "--count", "4", "--kinds", "mean,conditional", "--attributes", "Male,Smiling", *flags],
              tiny_run, tmp_path, classifier_dir)
    payload = json.loads(open(os.path.join(out, "edit-scores.json")).read())
    assert {row["kind"] for row in payload["rows"]} == {"mean", "conditional"}
    assert {row["attribute"] for row in payload["rows"]} == {"Male", "Smiling"} and {row["strength"] for row in payload["rows"]} == {0, 0.5, 1, 2, 3}
    assert all(0 <= row["flip_rate"] <= 1 for row in payload["rows"])
    assert os.path.isfile(os.path.join(out, "edit-scores.png"))
    assert "| gan |" in open(os.path.join(out, "edit-scores.md")).read()
    assert payload["drawn"] == [] and "drawn" not in open(os.path.join(out, "edit-scores.md")).read()  # not rendered
    cli(["analogies", "--count", "5", *flags], tiny_run, tmp_path, classifier_dir)
    rows = json.loads(open(os.path.join(out, "analogy-scores.json")).read())["rows"]
    assert rows and all(0 <= row["analogy_both"] <= 1 and "drawn_both" not in row for row in rows)
    cli(["analogies", "--count", "5", "--exemplars", "2", *flags], tiny_run, tmp_path, classifier_dir)
    rows = json.loads(open(os.path.join(out, "analogy-scores-exemplars2.json")).read())["rows"]
    assert rows and all(row["exemplars"] == 2 for row in rows)
    cli(["descriptions", *flags], tiny_run, tmp_path, classifier_dir)
    result = json.loads(open(os.path.join(out, "description-scores.json")).read())
    assert result["faces"] == 20 and 0 <= result["precision"] <= 1 and len(result["most_frequent"]) == 5


def test_directions_from_generated_samples(tiny_run, classifier_dir, tmp_path):
    path = cli(["directions", "--method", "samples", "--fit-limit", "200"], tiny_run, tmp_path, classifier_dir)
    archive = np.load(path)
    assert archive["mean"].shape == (40, LATENT) and str(archive["method"]) == "samples"


def test_demo_trains_a_short_encoder_then_writes_an_analogy_and_a_sweep(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the demo adds an encoder; the shared run stays without one
    assert "did you mean 'Smiling'" in cli_error(["demo", "--run", str(run), "--sweep", "Smilling"], capsys)
    assert not (run / "encoder").exists()  # a bad attribute fails before anything is trained
    analogy, edit = facemath.main(["demo", "--run", str(run), "--encoder-epochs", "1", "--encoder-steps", "2",
                                   "--fit-limit", "160", "--steps", "3", "--sweep", "Smiling", "--sweep", "Male"])
    assert (run / "encoder" / "encoder.keras").is_file()
    assert json.loads(open(analogy + ".json").read())["method"] == "hybrid"  # the new E starts the projection
    assert cv2.imread(analogy + ".png").shape[1] > 8 * 32
    record = json.loads(open(edit + ".json").read())
    assert record["sweeps"] == ["Smiling", "Male"] and record["directions_from"] == "encoder"
    held_out_men = data_prep.run_split(runs.read_config(tiny_run), split="test", filter="Male").names
    assert record["inputs"][0] in held_out_men
    assert cv2.imread(edit + "-sweep.png").shape[1] > 7 * 32
    (run / "encoder" / "encoder.keras").unlink()  # an unfinished E of other settings is not the demo's to resume
    assert "holds another encoder training" in cli_error(["demo", "--run", str(run), "--seed", "1"], capsys)


def test_newest_run_is_used_without_run_and_a_missing_one_says_how_to_train(tiny_run, workspace, tmp_path, capsys):
    assert runs.newest_run(os.path.dirname(tiny_run)) == tiny_run
    error = cli_error(["--analogy", *TEST_FACES, "--runs-dir", str(tmp_path / "empty")], capsys)
    assert "no trained run" in error and runs.DEMO_COMMAND in error
    assert runs.DEMO_COMMAND in open(os.path.join(REPO, "README.md")).read()  # the line names the README's demo


def test_edit_pastes_the_edited_face_back_into_the_photo(tiny_run, tmp_path):
    photo = skimage.data.astronaut()
    path = str(tmp_path / "astronaut.png")
    cv2.imwrite(path, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    stem = cli(["--edit", path, "--add", "Smiling=2", "--paste"], tiny_run, tmp_path / "out")
    pasted = cv2.cvtColor(cv2.imread(stem + "-pasted.png"), cv2.COLOR_BGR2RGB)
    assert pasted.shape == photo.shape
    nose = data_prep.detect_faces(photo)[0]["landmarks"][2].round().astype(int)  # (x, y) of the nose tip
    around = (slice(nose[1] - 10, nose[1] + 10), slice(nose[0] - 10, nose[0] + 10))
    assert np.abs(pasted[around].astype(int) - photo[around]).mean() > 5  # the generated face is there
    assert np.array_equal(pasted[:60, -60:], photo[:60, -60:])  # far from the face the photo is untouched


def test_paste_needs_a_photo_with_a_detected_face(tiny_run, tmp_path, capsys):
    flags = ["--run", tiny_run, "--out", str(tmp_path), *QUICK]
    error = cli_error(["--edit", "--examples", "--add", "Smiling=2", "--paste", *flags], capsys)
    assert "--paste" in error and "--examples" in error
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line each


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path, capsys):
    base = ["--run", tiny_run, "--out", str(tmp_path), *QUICK]
    assert "did you mean 'Smiling'" in cli_error(["--edit", TEST_FACES[0], "--add", "Smilling=1", *base], capsys)
    assert "not a number" in cli_error(["--edit", TEST_FACES[0], "--add", "Smiling=big", *base], capsys)
    assert "exactly three faces" in cli_error(["--analogy", *TEST_FACES[:2], *base], capsys)
    assert "exactly three faces" in cli_error(["--analogy", *TEST_FACES, "000184.jpg", *base], capsys)
    assert "photo not found" in cli_error(["--describe", "nobody.jpg", *base], capsys)
    blank = str(tmp_path / "wall.jpg")
    cv2.imwrite(blank, np.full((120, 100, 3), 128, np.uint8))
    assert "no face found" in cli_error(["--describe", blank, *base], capsys)
    empty = tmp_path / "no-generator"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(runs.read_config(tiny_run)))
    assert "has no generator" in cli_error(["--analogy", *TEST_FACES, "--run", str(empty)], capsys)
    assert "did you mean 'Male'" in cli_error(["--map", "--color-by", "Mail", *base], capsys)
    assert "name no faces" in cli_error(["--edit", TEST_FACES[0], "--examples", "--sweep", "Smiling", *base], capsys)
    assert "--add ATTR=STRENGTH or --sweep" in cli_error(["--edit", TEST_FACES[0], *base], capsys)
    assert "local directions take no conditions" in cli_error(
        ["--edit", TEST_FACES[0], "--add", "Smiling|Male=2", "--kind", "local", *base], capsys)
    assert "python scores.py edits" in cli_error(["score-edits", *base], capsys)
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(scores.main, ["analogies", *base, "--exemplars", "0"])
    assert exit_info.value.code == 2 and "--exemplars must be at least 1, got 0" in capsys.readouterr().err


def test_one_edit_writes_a_png_and_bench_times_it(tmp_path):
    import bench

    generator = dcgan.build_generator(latent_dim=LATENT, image_size=32, filters=8, kernel_size=4)
    path = bench.edit_to_png(generator, np.zeros(LATENT, np.float32), np.ones(LATENT, np.float32), 1.5,
                             str(tmp_path / "edit.png"))
    assert cv2.imread(path).shape == (32, 32, 3)
    assert bench.edit_milliseconds(generator, windows=2) > 0


def test_analogy_exemplars_come_from_their_groups():
    labels = np.zeros((12, 40), np.float32)
    male, glasses = directions.attribute_index("Male"), directions.attribute_index("Eyeglasses")
    labels[0:4, male] = 1  # A: men without glasses (faces 0-3)
    labels[4:6, [male, glasses]] = 1  # B: men with glasses (faces 4 and 5); C: the rest (6-11)
    rows = scores.analogy_triples(labels, ("Male", "Eyeglasses"), count=20, seed=1, exemplars=3)
    assert rows.shape == (20, 7)
    assert set(rows[:, :3].ravel()) <= {0, 1, 2, 3} and all(len(set(row[:3])) == 3 for row in rows)  # distinct
    assert set(rows[:, 3:6].ravel()) == {4, 5}  # two faces for three places: repeats allowed
    assert set(rows[:, 6]) <= set(range(6, 12))
    single = scores.analogy_triples(labels, ("Male", "Eyeglasses"), count=20, seed=1)
    assert single.shape == (20, 3) and set(single[:, 1]) <= {4, 5}


def test_drawn_edits_redraw_the_held_out_faces_on_the_synthetic_celeba(classifier_dir, tmp_path):
    import synthetic_celeba
    from types import SimpleNamespace

    data = synthetic_celeba.render_synthetic_celeba(str(tmp_path / "synth"), count=60, seed=5, workers=1,
                                                    progress=False)
    celeba = data_prep.read_celeba(data)
    names = data_prep.select_files(celeba, split="all")
    labels = (celeba.attributes.loc[names].to_numpy() > 0).astype(np.float32)
    varying = np.zeros(40, bool)
    varying[[directions.attribute_index("Eyeglasses"), directions.attribute_index("Smiling")]] = True
    fitted, held = SimpleNamespace(varying=varying), SimpleNamespace(names=names, labels=labels, method="encoder")
    config = {"data": data, "image_size": 32, "crop_size": 108}
    classifier = evaluate.load_classifier(classifier_dir)
    drawn = []  # (face index, attribute) of every redrawn face, in order
    original = synthetic_celeba.draw_edit

    def recording(index, name, *, seed):
        assert seed == 5  # read back from the render's settings file
        drawn.append((index, name))
        return original(index, name, seed=seed)

    synthetic_celeba.draw_edit = recording
    try:
        rows = scores.drawn_edit_rows(config, fitted, held, classifier=classifier, count=7)
    finally:
        synthetic_celeba.draw_edit = original
    assert [row["attribute"] for row in rows] == ["Eyeglasses", "Smiling"]
    assert all(row["faces"] == 7 and row["identity_distance"] > 0 and 0 <= row["flip_rate"] <= 1 for row in rows)
    groups = scores.edit_groups(labels, fitted, count=7)  # the faces the models' rows add to, and only those
    for target, name in ((directions.attribute_index("Eyeglasses"), "Eyeglasses"),
                         (directions.attribute_index("Smiling"), "Smiling")):
        faces = groups[target]["add"]
        assert [index for index, drawn_name in drawn if drawn_name == name] == [int(names[face][:6]) - 1
                                                                               for face in faces]
        assert not labels[faces, target].any()  # every one without the attribute before it was drawn in
    held.names = [f"photo{index}.jpg" for index in range(len(names))]  # not the renderer's files: no ceiling
    assert scores.drawn_edit_rows(config, fitted, held, classifier=classifier, count=7) == []
