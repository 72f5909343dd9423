"""makeover.py on the tiny CelebA: a 40x32 makeover crop (image size 32), 4 filters, a few steps per epoch.

The tiny CelebA draws Male as a blue face and not Male as an orange one, so populations can be checked by pixel.
"""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import skimage.data

import data_prep
import runs
import scores
import evaluate
import encoder
import makeover
import keras  # after runs (through makeover), which chooses the TensorFlow backend
from conftest import tiny_celeba_rows

REPO = os.path.dirname(os.path.abspath(makeover.__file__))


def tiny_flags(data_dir, runs_dir, name, *extra):
    return ["--data", str(data_dir), "--image-size", "32", "--filters", "4", "--batch-size", "8",
            "--steps-per-epoch", "3", "--source", "Male", "--target", "-Male", "--grid-count", "4",
            "--anneal-start", "2", "--anneal-steps", "2", "--runs-dir", str(runs_dir), "--name", name,
            "--cache-dir", str(runs_dir / "cache"), "--precision", "float32", *extra]


@pytest.fixture(scope="module")
def trained_run(tiny_celeba, tmp_path_factory):
    """A two-epoch run shared by the tests that only read its artifacts."""
    runs = tmp_path_factory.mktemp("makeover-runs")
    makeover.main(tiny_flags(tiny_celeba, runs, "tiny", "--epochs", "2"))
    return runs / "tiny"


@pytest.fixture(scope="module")
def astronaut_jpeg(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("photos") / "astronaut.jpg")
    cv2.imwrite(path, cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def cli_error(main_function, argv, capsys):
    """Run a CLI through data_prep.run_cli; return its one-line error (asserting exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(main_function, argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), error
    return error[0]


# ----------------------------------------------------------------------------------------------------------
# The networks


@pytest.mark.parametrize("training", [False, True])
def test_untrained_translator_returns_its_input(tiny_celeba, tmp_path, training):
    keras.utils.set_random_seed(0)
    translator = makeover.build_translator(image_shape=(40, 32), filters=8)
    faces = data_prep.load_split(tiny_celeba, split="validation", crop="makeover", image_size=32,
                                 cache_dir=str(tmp_path))[0]
    noise = np.random.default_rng(0).uniform(-1, 1, (4, 40, 32, 3)).astype(np.float32)
    for images in (data_prep.to_float(faces[:8]), noise):
        outputs = keras.ops.convert_to_numpy(translator(images, training=training))
        assert outputs.shape == images.shape and np.abs(outputs).max() < 1.0
        assert np.abs(outputs - images).max() < makeover.IDENTITY_TOLERANCE  # 0.01
    # The tolerance is not met by accident: the same network with ordinary (He) initial weights in its
    # near-zero convolutions is far from the identity.
    for layer in translator.layers:
        if layer.name.endswith("_conv2") or layer.name == "change":
            layer.kernel.assign(keras.initializers.HeNormal(seed=1)(layer.kernel.shape))
    outputs = keras.ops.convert_to_numpy(translator(noise, training=training))
    assert np.abs(outputs - noise).max() > 10 * makeover.IDENTITY_TOLERANCE


def test_translator_pools_twice_and_projections_start_near_the_identity():
    translator = makeover.build_translator(image_shape=(40, 32), filters=4)
    pools = [layer for layer in translator.layers if isinstance(layer, keras.layers.AveragePooling2D)]
    upsamplings = [layer for layer in translator.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert len(pools) == 2 and len(upsamplings) == 2
    assert translator.get_layer("pool2").output.shape[1:] == (10, 8, 8)  # 40x32 -> 20x16 -> 10x8, 2x filters
    projection = keras.ops.convert_to_numpy(translator.get_layer("encode2_projection").kernel)  # (1, 1, 4, 8)
    np.testing.assert_allclose(projection[0, 0], np.eye(4, 8), atol=0.01)
    discriminator = makeover.build_discriminator(image_shape=(40, 32), filters=4)
    assert discriminator.output_shape == (None, 5, 4, 1)  # one logit per patch
    with pytest.raises(ValueError, match="multiples of 4"):
        makeover.build_translator(image_shape=(42, 32))


@pytest.mark.parametrize("step, pixel, adversarial", [(0, 1.0, 0.0), (100, 1.0, 0.0), (200, 0.6, 0.4),
                                                      (250, 0.4, 0.6), (300, 0.2, 0.8), (5000, 0.2, 0.8)])
def test_loss_weights_anneal_from_pixel_to_adversarial(step, pixel, adversarial):
    # From step 100, over 200 steps, the adversarial weight rises to 0.8: at 200 it is 0.8 * 100 / 200.
    weights = makeover.loss_weights(step, anneal_start=100, anneal_steps=200, anneal_end=0.8)
    assert [float(weight) for weight in weights] == pytest.approx([pixel, adversarial])


def test_loss_weights_without_annealing_switch_at_the_start():
    assert [float(w) for w in makeover.loss_weights(0, anneal_start=0, anneal_steps=0, anneal_end=1.0)] == [0, 1]
    assert [float(w) for w in makeover.loss_weights(9, anneal_start=10, anneal_steps=0)] == [1, 0]
    assert [float(w) for w in makeover.loss_weights(10 ** 6, anneal_steps=100, anneal_end=0.0)] == [1, 0]


# ----------------------------------------------------------------------------------------------------------
# Populations


def test_filters_select_the_right_populations(tiny_celeba, tmp_path):
    config = {"data": tiny_celeba, "source": "Male", "target": "-Male,-Eyeglasses", "crop": "makeover",
              "image_size": 32, "crop_size": 108, "cache_dir": str(tmp_path)}
    names = list(data_prep.CELEBA_ATTRIBUTES)
    truth = [(values[names.index("Male")], values[names.index("Eyeglasses")])
             for index, (_, values, _) in enumerate(tiny_celeba_rows(), start=1) if index <= 160]  # training split
    source = makeover.population(config, split="train", which="source")
    target = makeover.population(config, split="train", which="target")
    assert len(source) == sum(male == 1 for male, _ in truth)
    assert len(target) == sum(male == -1 and glasses == -1 for male, glasses in truth)
    # The face's centre (x 89, y 125 in the aligned image) sits at (20, 14) of the 40x32 crop: blue for Male.
    centre = lambda images: images[:, 13:16, 19:22].mean((1, 2)).astype(int)  # noqa: E731
    assert (centre(source)[:, 2] > centre(source)[:, 0] + 50).all()
    assert (centre(target)[:, 0] > centre(target)[:, 2] + 50).all()
    assert scores.distinguishing_terms("Male,-Eyeglasses", "-Male,Attractive,-Eyeglasses") == [
        ("Male", False), ("Attractive", True)]


def test_overlapping_populations_are_an_error_unless_allowed(tiny_celeba):
    celeba = data_prep.read_celeba(tiny_celeba)
    names = list(data_prep.CELEBA_ATTRIBUTES)
    shared = sum(values[names.index("Smiling")] == 1 and values[names.index("Eyeglasses")] == 1
                 for _, values, _ in tiny_celeba_rows())
    with pytest.raises(data_prep.DataError, match=f"share {shared} of 200 images"):
        makeover.check_populations(celeba, source="Smiling", target="Eyeglasses")
    assert makeover.check_populations(celeba, source="Smiling", target="Eyeglasses", allow_overlap=True) == shared
    assert makeover.check_populations(celeba, source="Male", target="-Male") == 0


def test_cli_overlap_and_empty_filters_fail_in_one_line_without_a_run(tiny_celeba, tmp_path, capsys):
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "overlap", "--target", "Smiling"), capsys)
    assert "share" in error and "--allow-overlap" in error
    # A target that starts with '-' (deep-makeover's does) is read as the filter, not as a flag.
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "empty", "--target", "-Male,Male"), capsys)
    assert "keeps no image" in error and "-Male keeps" in error and "Male keeps" in error
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "typo", "--source", "Mael"), capsys)
    assert "unknown attribute 'Mael'" in error and "did you mean 'Male'" in error
    assert not (tmp_path / "overlap").exists() and not (tmp_path / "empty").exists()


# ----------------------------------------------------------------------------------------------------------
# A tiny run: evidence, annealing in force, resume


def test_run_writes_every_artifact(trained_run):
    config = runs.read_config(trained_run)
    flags = set(vars(makeover.training_parser().parse_args([])))
    assert flags <= set(config) and config["model"] == "makeover" and "tensorflow" in config["versions"]
    steps = runs.read_step_log(trained_run)
    assert list(steps.columns) == ["epoch", "step", *makeover.STEP_COLUMNS]
    assert steps["epoch"].tolist() == [1, 1, 1, 2, 2, 2]
    for name in makeover.HISTORY_NAMES.values():
        assert np.load(trained_run / f"{name}.npy").shape == (2,), name
    for epoch in (1, 2):  # 4 held-out faces, each input beside its output: 8 tiles of 32x40 in one row
        grid = data_prep.read_image_uint8(str(trained_run / "samples" / f"epoch_{epoch:03d}.png"))
        assert grid.shape == (40 + 4, 8 * 34 + 2, 3)
        np.testing.assert_array_equal(grid[2:42, 2:34], np.load(trained_run / "fixed_source.npy")[0])  # input
        for name in ("translator", "discriminator"):
            assert (trained_run / "checkpoints" / f"{name}_epoch_{epoch:03d}.weights.h5").is_file()
    assert np.load(trained_run / "fixed_source.npy").shape == (4, 40, 32, 3)
    assert (trained_run / "checkpoints" / "last.npz").is_file() and (trained_run / "discriminator.keras").is_file()
    assert makeover.load_translator(str(trained_run)).output_shape == (None, 40, 32, 3)


def test_annealing_takes_effect_and_is_logged_each_step(trained_run):
    # --anneal-start 2 --anneal-steps 2: steps 0..5 get adversarial weights 0, 0, 0, 0.5, 1, 1 (deep-makeover's
    # annealing never changed: its assign op was never run).
    steps = runs.read_step_log(trained_run)
    np.testing.assert_allclose(steps["adversarial_weight"], [0, 0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(steps["pixel_weight"], [1, 1, 1, 0.5, 0, 0])
    expected_g = steps["pixel_weight"] * steps["pixel_loss"] + steps["adversarial_weight"] * steps["adversarial_loss"]
    np.testing.assert_allclose(steps["g_loss"], expected_g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.load(trained_run / "adversarial_weights.npy"), [0, 1])  # at each epoch's end


def test_resume_keeps_epoch_count_loss_history_and_schedule(trained_run, tmp_path):
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, copy)
    before = {name: np.load(copy / f"{name}.npy") for name in ("d_losses", "g_losses", "pixel_losses")}
    stale = copy / "checkpoints" / "translator_epoch_003.tmp-4242.weights.h5"  # what a kill mid-write leaves
    stale.write_bytes(b"half")
    assert runs.saved_epochs(str(copy), "translator") == [1, 2]
    old_config = {key: value for key, value in runs.read_config(copy).items()  # as saved before these flags
                  if key not in ("keep_classifier", "keep_weight", "smooth_weight")}
    data_prep.write_json(str(copy / "config.json"), old_config)
    makeover.main(["--resume", "--runs-dir", str(tmp_path / "runs"), "--name", "tiny", "--epochs", "3",
                   "--cache-dir", str(tmp_path / "cache"), "--smooth-weight", "0", "--keep-weight", "0"])
    for name, values in before.items():
        after = np.load(copy / f"{name}.npy")
        assert after.shape == (3,)
        np.testing.assert_array_equal(after[:2], values)
    assert not stale.exists() and runs.saved_epochs(str(copy), "translator") == [1, 2, 3]
    steps = runs.read_step_log(copy)
    assert steps["epoch"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    np.testing.assert_allclose(steps["adversarial_weight"][6:], 1.0)  # the step counter was restored
    np.testing.assert_array_equal(np.load(copy / "fixed_source.npy"), np.load(trained_run / "fixed_source.npy"))
    config = runs.read_config(copy)
    gan = makeover.build_makeover(config)
    runs.load_checkpoint(copy, gan.state_variables())
    assert int(gan.g_optimizer.iterations) == 9 and len(config["resumed_with"]) == 1


def test_resume_refuses_to_change_the_architecture(trained_run, capsys):
    error = cli_error(makeover.main, ["--resume", "--runs-dir", str(trained_run.parent), "--name", "tiny",
                                     "--filters", "8"], capsys)
    assert "--filters cannot change when resuming" in error


def test_cycle_and_identity_losses_add_a_translator_back(tiny_celeba, tmp_path):
    makeover.main(tiny_flags(tiny_celeba, tmp_path, "cycle", "--epochs", "1", "--steps-per-epoch", "2",
                             "--cycle-weight", "10", "--identity-weight", "5"))
    steps = runs.read_step_log(tmp_path / "cycle")
    assert (steps["cycle_loss"] > 0).all() and (steps["identity_loss"] > 0).all()
    config = runs.read_config(tmp_path / "cycle")
    gan = makeover.build_makeover(config)
    assert [network.name for network in gan.generators] == ["translator", "back_translator"]
    assert len(runs.read_checkpoint(tmp_path / "cycle")[0]) == len(gan.state_variables())


def test_conditional_discriminator_adds_its_features_projected_on_the_labels_embedding():
    d = makeover.build_discriminator(image_shape=(40, 32), filters=4, conditions=3)
    parts = keras.Model(d.inputs[0], [d.get_layer("patch_features").output, d.get_layer("logits").output])
    embedding = np.arange(3 * 32, dtype=np.float32).reshape(3, 32) / 100.0  # 3 labels onto 32 = 4 * 2^3 channels
    d.get_layer("label_embedding").set_weights([embedding])
    images = np.random.default_rng(0).uniform(-1, 1, (2, 40, 32, 3)).astype(np.float32)
    labels = np.array([[1, -1, 1], [-1, -1, 1]], np.float32)
    features, logits = (keras.ops.convert_to_numpy(part) for part in parts(images, training=False))
    expected = logits + np.einsum("bhwc,bc->bhw", features, labels @ embedding)[..., None]  # (2, 5, 4, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d([images, labels], training=False)), expected,
                               rtol=1e-4, atol=1e-4)
    d.get_layer("label_embedding").set_weights([np.zeros_like(embedding)])  # no embedding: the plain PatchGAN
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d([images, labels], training=False)), logits, atol=1e-6)


def test_condition_attributes_are_those_the_target_population_shows_by_hand():
    import pandas as pd
    table = pd.DataFrame(-1, index=[f"{i:06d}.jpg" for i in range(200)], columns=data_prep.CELEBA_ATTRIBUTES)
    men = np.arange(200) % 2 == 0
    table.loc[men, "Male"] = 1
    table.loc[np.arange(200) % 4 < 2, "Smiling"] = 1  # half the men, half the women
    table.loc[men & (np.arange(200) % 3 == 0), "Goatee"] = 1  # men only: women never show it
    table.iloc[[1], table.columns.get_loc("Wearing_Lipstick")] = 1  # one woman in 100 (the 1% edge): kept
    table.iloc[[1, 3], table.columns.get_loc("Eyeglasses")] = 1  # named by the source filter
    table.loc[:, "Young"] = np.where(men, -1, 1)  # every woman young: the target shows no variation
    assert makeover.condition_attributes(table, "Male,-Eyeglasses", "-Male") == ["Smiling", "Wearing_Lipstick"]


def test_source_faces_are_paired_with_the_target_faces_nearest_in_labels_by_hand():
    source = np.array([[1, 1, -1], [-1, -1, -1]], np.float32)
    target = np.array([[1, 1, -1], [-1, -1, 1], [1, -1, -1], [-1, -1, -1]], np.float32)
    # differences from the first: 0, 3, 1, 2 labels; from the second: 2, 1, 1, 0 (ties in file order)
    assert makeover.nearest_by_labels(source, target, count=3).tolist() == [[0, 2, 3], [3, 1, 2]]
    assert makeover.nearest_by_labels(source, target, count=9).shape == (2, 4)  # never more than the targets
    rng = np.random.default_rng(0)
    source_labels, target_labels = rng.choice([-1.0, 1.0], (40, 6)), rng.choice([-1.0, 1.0], (30, 6))
    faces = lambda count: np.repeat(np.arange(count, dtype=np.uint8), 4 * 4 * 3).reshape(count, 4, 4, 3)  # noqa
    nearest = makeover.nearest_by_labels(source_labels, target_labels)
    pairs = makeover.matched_pairs(faces(40), source_labels, faces(30), target_labels, batch_size=8, flip=True,
                                   seed=0)
    seen = set()
    for (images, labels), (targets, matched_labels) in pairs.take(10):
        for image, label, matched, matched_label in zip(*(np.asarray(part) for part in (images, labels, targets,
                                                                                            matched_labels))):
            index, chosen = int(image[0, 0, 0]), int(matched[0, 0, 0])
            assert chosen in nearest[index] and (label == source_labels[index]).all()
            assert (matched_label == target_labels[chosen]).all()
            seen.add(index)
    assert len(seen) == 40  # ten batches of 8 go through the 40 source faces twice


def test_a_conditional_run_gives_d_each_face_s_labels(tiny_celeba, tmp_path, capsys):
    makeover.main(tiny_flags(tiny_celeba, tmp_path, "conditional", "--epochs", "1", "--steps-per-epoch", "2",
                             "--conditional"))
    config = runs.read_config(tmp_path / "conditional")
    table = data_prep.read_celeba(str(tiny_celeba)).attributes
    assert config["condition_attributes"] == makeover.condition_attributes(table, "Male", "-Male")
    assert len(config["condition_attributes"]) == 39  # the tiny CelebA's labels are coin flips: all but Male vary
    d = keras.saving.load_model(str(tmp_path / "conditional" / "discriminator.keras"), compile=False)
    assert [tuple(shape[1:]) for shape in (d.inputs[0].shape, d.inputs[1].shape)] == [(40, 32, 3), (39,)]
    assert np.isfinite(runs.read_step_log(tmp_path / "conditional")["d_loss"]).all()
    source, labels = makeover.population(config, split="train", which="source", labels=True)
    rows = {name: values for name, values, _ in tiny_celeba_rows()}
    names = data_prep.prepare_images(config["data"], split="train", filter="Male", crop=config["crop"],
                                     image_size=32, cache_dir=config["cache_dir"]).names
    column = data_prep.CELEBA_ATTRIBUTES.index(config["condition_attributes"][0])
    assert labels[:, 0].tolist() == [float(rows[name][column]) for name in names] and len(source) == len(names)
    makeover.main(tiny_flags(tiny_celeba, tmp_path, "matched", "--epochs", "1", "--steps-per-epoch", "2",
                             "--matched"))  # the same pairs, D seeing images only
    d = keras.saving.load_model(str(tmp_path / "matched" / "discriminator.keras"), compile=False)
    assert len(d.inputs) == 1 and runs.read_config(tmp_path / "matched")["condition_attributes"] == config[
        "condition_attributes"]
    capsys.readouterr()
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "both", "--conditional", "--cycle-weight",
                                                "1"), capsys)
    assert "--conditional and --cycle-weight" in error and not (tmp_path / "both").exists()


# ----------------------------------------------------------------------------------------------------------
# Apply, and paste back through the inverse warp


def test_output_to_photo_matrix_inverts_a_known_alignment():
    angle, scale = np.deg2rad(12.0), 0.7
    alignment = np.array([[scale * np.cos(angle), -scale * np.sin(angle), -40.0],
                          [scale * np.sin(angle), scale * np.cos(angle), 15.0]])  # photo -> aligned
    matrix = data_prep.output_to_photo_matrix(alignment, crop="makeover", image_size=32)
    # An output pixel (u, v) of the 40x32 output sits at x = 49 + (u + 0.5) * 2.5 - 0.5 of the aligned image.
    corners = np.array([[0.0, 0.0], [31.0, 0.0], [0.0, 39.0], [31.0, 39.0], [16.0, 20.0]])
    photo = corners @ matrix[:, :2].T + matrix[:, 2]
    aligned = photo @ alignment[:, :2].T + alignment[:, 2]
    np.testing.assert_allclose(aligned, np.column_stack([49 + (corners[:, 0] + 0.5) * 2.5 - 0.5,
                                                         90 + (corners[:, 1] + 0.5) * 2.5 - 0.5]), atol=1e-9)


@pytest.mark.parametrize("crop, image_size", [("makeover", 80), ("dcgan", 108)])
def test_paste_back_round_trips_a_known_warp(crop, image_size):
    photo = cv2.GaussianBlur(cv2.resize(skimage.data.astronaut(), (300, 260)), (0, 0), 2.0)
    angle, scale = np.deg2rad(-9.0), 1.15
    alignment = np.array([[scale * np.cos(angle), -scale * np.sin(angle), -60.0],
                          [scale * np.sin(angle), scale * np.cos(angle), 10.0]])
    aligned = cv2.warpAffine(photo, alignment, (178, 218), flags=cv2.INTER_CUBIC)
    face = data_prep.crop_and_resize(aligned, crop=crop, image_size=image_size)  # the box at its own size
    pasted = data_prep.paste_back(np.zeros_like(photo), face, alignment=alignment, crop=crop,
                                 image_size=image_size, feather=0.0)
    inside = cv2.erode((pasted.max(-1) > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inside.sum() > 5000  # the box covers thousands of photo pixels
    error = np.abs(pasted[inside].astype(int) - photo[inside].astype(int)).mean()
    assert error < 3.0, error  # two cubic resamplings of a smooth photo
    wrong = data_prep.paste_back(np.zeros_like(photo), face, alignment=np.linalg.inv(
        np.vstack([alignment, [0, 0, 1]]))[:2], crop=crop, image_size=image_size, feather=0.0)
    assert np.abs(wrong[inside].astype(int) - photo[inside].astype(int)).mean() > 10 * error + 10


def test_apply_writes_input_beside_output_and_pastes_into_the_photo(trained_run, astronaut_jpeg, tmp_path):
    written = makeover.apply_run(str(trained_run), [astronaut_jpeg], out_dir=str(tmp_path), paste=True)
    assert [os.path.basename(path) for path in written] == ["astronaut_makeover.png", "astronaut_pasted.png"]
    pair = data_prep.read_image_uint8(written[0])
    assert pair.shape == (2 * 40 + 4, 2 * 2 * 32 + 6, 3)  # two 2x-scaled 40x32 tiles, 2 px padding
    photo = data_prep.read_image_uint8(astronaut_jpeg)
    pasted = data_prep.read_image_uint8(written[1])
    assert pasted.shape == photo.shape
    changed = np.abs(pasted.astype(int) - photo.astype(int)).max(-1) > 0
    rows, columns = np.nonzero(changed)
    # Only the face changed: the region lies around MTCNN's face (near x 220, y 90 in the 512x512 photo).
    assert 0 < changed.mean() < 0.1 and 150 < columns.mean() < 300 and 30 < rows.mean() < 160


def test_untrained_translator_pasted_back_gives_the_photo(astronaut_jpeg):
    # An untrained translator returns its input, so the whole chain (detection, alignment, crop, translation,
    # inverse warp) must give back the photo, up to resampling: a misplaced face would not.
    keras.utils.set_random_seed(0)
    config = {"crop": "makeover", "image_size": 64, "crop_size": 108}
    translator = makeover.build_translator(image_shape=(80, 64), filters=4)
    result = makeover.makeover_photo(translator, astronaut_jpeg, config=config, paste=True)
    photo = data_prep.read_image_uint8(astronaut_jpeg)
    changed = np.abs(result["pasted"].astype(int) - photo.astype(int))
    assert changed.max(-1).astype(bool).mean() > 0.005  # the face was pasted ...
    assert changed.mean() < 0.5 and np.percentile(changed[changed.max(-1) > 0], 90) < 40  # ... where it was


def test_apply_bad_input_fails_in_one_line(trained_run, astronaut_jpeg, tmp_path, capsys):
    run = str(trained_run)
    error = cli_error(makeover.main, ["apply", "--run", str(tmp_path / "nothing"), astronaut_jpeg], capsys)
    assert "run not found" in error
    error = cli_error(makeover.main, ["apply", "--run", run, "--crop", "dcgan", astronaut_jpeg], capsys)
    assert "trained with the makeover crop, not dcgan" in error
    blank = str(tmp_path / "blank.png")
    cv2.imwrite(blank, np.full((200, 160, 3), 128, np.uint8))
    error = cli_error(makeover.main, ["apply", "--run", run, "--out", str(tmp_path / "out"), blank], capsys)
    assert "no face found" in error
    assert not (tmp_path / "out").exists()
    error = cli_error(makeover.main, ["apply", "--run", run, str(tmp_path / "missing.jpg")], capsys)
    assert "image not found" in error


# ----------------------------------------------------------------------------------------------------------
# Scores


def test_score_table_has_both_baselines_and_every_run(trained_run, makeover_classifier, tmp_path):
    other = tmp_path / "again"
    shutil.copytree(trained_run, other)
    scores.main(["makeover", "--run", str(trained_run), "--compare", str(other), "--classifier",
                 str(makeover_classifier), "--n", "8", "--out", str(tmp_path / "scores")])
    report = data_prep.read_image_uint8(str(tmp_path / "scores" / "grid.png"))
    assert report.shape[0] > 4 * 80  # rows: input, identity, mean target face, two runs (2x-scaled 40 px)
    with open(tmp_path / "scores" / "scores.json") as handle:
        table = json.load(handle)
    rows = {row["name"]: row for row in table["rows"]}
    assert list(rows) == ["identity (the input)", "mean target face", "tiny", "again"]
    identity, mean_face = rows["identity (the input)"], rows["mean target face"]
    assert identity["pixel_l1"] == 0 and identity["feature_distance"] == 0 and identity["collateral"] == 0
    assert mean_face["pixel_l1"] > 0.05 and mean_face["feature_distance"] > 0
    assert rows["tiny"]["target_rate"] == pytest.approx(rows["again"]["target_rate"])  # same run, same faces
    assert table["settings"]["terms"] == ["-Male"]
    assert "Male" not in table["settings"]["collateral_attributes"]
    assert {"Eyeglasses", "Smiling"} <= set(table["settings"]["collateral_attributes"])  # vary, not named
    assert "| mean target face |" in (tmp_path / "scores" / "scores.md").read_text()


def test_score_refuses_a_classifier_of_another_crop(trained_run, makeover_classifier, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    shutil.copytree(makeover_classifier, wrong)
    config = evaluate.classifier_config(str(wrong))
    data_prep.write_json(str(wrong / "classifier.json"), {**config, "crop": "dcgan"})
    error = cli_error(scores.main, ["makeover", "--run", str(trained_run), "--classifier", str(wrong)], capsys)
    assert "trained with crop makeover but the classifier with dcgan" in error



# ----------------------------------------------------------------------------------------------------------
# The keep loss: a frozen attribute CNN's view of the attributes no filter names


def fixed_keeper(scale=1.0):
    """A stand-in attribute CNN with known logits: the mean of each colour channel times a fixed weight (times
    `scale`) plus a bias."""
    image = keras.Input((40, 32, 3))
    logits = keras.layers.Dense(len(data_prep.CELEBA_ATTRIBUTES), name="logits")(
        keras.layers.GlobalAveragePooling2D()(image))
    keeper = keras.Model(image, logits)
    weights = np.zeros((3, 40), np.float32)
    weights[0, 5], weights[1, 7] = 2.0 * scale, -1.0 * scale  # attribute 5 follows red, 7 falls with green
    keeper.get_layer("logits").set_weights([weights, np.full(40, 0.5, np.float32)])
    return keeper


def test_keep_loss_is_the_bernoulli_divergence_of_the_kept_attributes():
    gan = makeover.Makeover(makeover.build_translator(image_shape=(40, 32), filters=4),
                            makeover.build_discriminator(image_shape=(40, 32), filters=4),
                            keepers=[fixed_keeper()], keep_columns=[5, 7], keep_weight=1.0)
    source = np.zeros((2, 40, 32, 3), np.float32)  # logits 0.5 for both kept attributes
    translated = np.zeros((2, 40, 32, 3), np.float32)
    translated[..., 0], translated[..., 1] = 0.5, 0.25  # attribute 5: 2 * 0.5 + 0.5 = 1.5; attribute 7: 0.25
    assert float(gan._keep_loss(source, source)) == pytest.approx(0.0, abs=1e-6)
    p, q5, q7 = 1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-1.5)), 1 / (1 + np.exp(-0.25))
    kl = lambda p, q: p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))  # noqa: E731
    assert float(gan._keep_loss(source, translated)) == pytest.approx((kl(p, q5) + kl(p, q7)) / 2, rel=1e-5)
    # Several keepers: their mean. One that sees no colour at all sees no change, so the loss halves.
    gan.keepers = [fixed_keeper(), fixed_keeper(scale=0.0)]
    assert float(gan._keep_loss(source, translated)) == pytest.approx((kl(p, q5) + kl(p, q7)) / 4, rel=1e-5)
    # Only the kept columns count: a change the keeper sees in attribute 6 alone costs nothing.
    gan.keep_columns = makeover.tf.constant([6], makeover.tf.int32)
    assert float(gan._keep_loss(source, translated)) == pytest.approx(0.0, abs=1e-6)


def test_smooth_loss_is_the_total_variation_of_the_change():
    source = np.zeros((1, 3, 3, 3), np.float32)
    speck = source.copy()
    speck[0, 1, 1, 0] = 1.0  # one pixel of one channel: 2 of the 18 differences down and 2 of the 18 across are 1
    assert float(makeover.Makeover._smooth_loss(source, speck)) == pytest.approx(4 / 18)
    assert float(makeover.Makeover._smooth_loss(source, source + 0.5)) == pytest.approx(0.0)  # a uniform change
    assert float(makeover.Makeover._smooth_loss(speck, speck + 0.5)) == pytest.approx(0.0)  # of the change only


def test_run_with_a_keep_loss_records_it_and_cannot_be_scored_by_its_own_keeper(
        tiny_celeba, makeover_classifier, tmp_path, capsys):
    makeover.main(tiny_flags(tiny_celeba, tmp_path, "keep", "--epochs", "1", "--keep-classifier",
                             str(makeover_classifier), "--keep-weight", "2", "--smooth-weight", "3"))
    run = tmp_path / "keep"
    config = runs.read_config(run)
    assert config["keep_classifier"] == [os.path.abspath(makeover_classifier)]
    assert config["keep_attributes"] == makeover.collateral_attributes(
        data_prep.read_celeba(tiny_celeba).attributes, "Male", "-Male")
    steps = runs.read_step_log(run)
    assert (steps["keep_loss"] > -1e-6).all() and (steps["keep_loss"] != 0).any()  # a divergence, rounded
    expected_g = (steps["pixel_weight"] * steps["pixel_loss"] + steps["adversarial_weight"] * steps["adversarial_loss"]
                  + 2 * steps["keep_loss"] + 3 * steps["smooth_loss"])
    np.testing.assert_allclose(steps["g_loss"], expected_g, rtol=1e-4, atol=1e-6)
    capsys.readouterr()  # the training's progress
    for scorer in (makeover_classifier, makeover_classifier / "classifier.keras"):  # its directory or its file
        error = cli_error(scores.main, ["makeover", "--run", str(run), "--classifier", str(scorer)], capsys)
        assert "would grade it on its own loss" in error
    other = tmp_path / "other-classifier"
    shutil.copytree(makeover_classifier, other)
    # Its keeper may look as a cross-check, beside the scoring CNN: a second table of the same outputs. A copy with
    # its logits negated sees every attribute the other way round: the same collateral (every prediction flips on
    # input and output alike) and, for -Male, the rate at which the scoring CNN sees Male.
    negated = tmp_path / "negated"
    shutil.copytree(makeover_classifier, negated)
    model = evaluate.load_classifier(str(negated))
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([-kernel, -bias])
    model.save(str(negated / "classifier.keras"))
    scores.main(["makeover", "--run", str(run), "--classifier", str(other), "--n", "4", "--out", str(tmp_path / "s"),
                 "--cross-check", str(makeover_classifier), str(negated), str(negated / "classifier.keras")])
    with open(tmp_path / "s" / "scores.json") as handle:
        table = json.load(handle)
    assert len(table["settings"]["cross_checks"]) == 2  # the .keras path names the same CNN as its directory
    for row in table["rows"]:
        same = row["cross_checks"][os.path.realpath(makeover_classifier)]  # a copy of the scoring CNN
        assert same["target_rate"] == row["target_rate"] and same["collateral"] == pytest.approx(row["collateral"])
        flipped = row["cross_checks"][os.path.realpath(negated)]
        assert flipped["collateral"] == pytest.approx(row["collateral"])
    identity = table["rows"][0]
    assert identity["cross_checks"][os.path.realpath(negated)]["target_rate"] == 1 - identity["target_rate"]
    assert identity["cross_checks"][os.path.realpath(makeover_classifier)]["collateral"] == 0
    assert "through other attribute CNNs" in (tmp_path / "s" / "scores.md").read_text()


def test_keep_loss_flags_fail_in_one_line(tiny_celeba, makeover_classifier, tmp_path, capsys):
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "nokeeper", "--keep-weight", "1"), capsys)
    assert "--keep-weight needs --keep-classifier" in error
    wrong = tmp_path / "wrong"
    shutil.copytree(makeover_classifier, wrong)
    data_prep.write_json(str(wrong / "classifier.json"), {**evaluate.classifier_config(str(wrong)), "image_size": 64})
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "wrongsize", "--keep-weight", "1",
                                                "--keep-classifier", str(wrong)), capsys)
    assert "image_size 32 but the classifier with 64" in error and "--keep-classifier DIR" in error
    error = cli_error(makeover.main, tiny_flags(tiny_celeba, tmp_path, "missing", "--keep-weight", "1",
                                                "--keep-classifier", str(tmp_path / "nothing")), capsys)
    assert "no attribute classifier" in error
    assert not any((tmp_path / name).exists() for name in ("nokeeper", "wrongsize", "missing"))


def test_a_run_saved_before_the_keep_loss_resumes_with_it_as_zero(tmp_path):
    old_columns = [name for name in makeover.STEP_COLUMNS if name != "keep_loss"]
    (tmp_path / "log.csv").write_text("epoch,step," + ",".join(old_columns) + "\n1,1," + ",".join(
        ["0.5"] * len(old_columns)) + "\n")
    history = {name: [1.0] for name in makeover.HISTORY_NAMES.values() if name != "keep_losses"}
    runs.add_missing_columns(str(tmp_path), history, history_names=makeover.HISTORY_NAMES.values(),
                             step_columns=makeover.STEP_COLUMNS)
    assert history["keep_losses"] == [0.0]
    steps = runs.read_step_log(str(tmp_path))
    assert list(steps.columns) == ["epoch", "step", *makeover.STEP_COLUMNS] and steps["keep_loss"].tolist() == [0]


def test_moved_score_commands_say_where_they_went(capsys):
    assert "python scores.py makeover" in cli_error(makeover.main, ["score", "--run", "runs/x"], capsys)
    assert "python scores.py encoders" in cli_error(encoder.main, ["compare", "--run", "runs/x"], capsys)


def test_drawn_translations_on_the_synthetic_celeba(tmp_path):
    import synthetic_celeba

    data = synthetic_celeba.render_synthetic_celeba(str(tmp_path / "synth"), count=30, seed=2, workers=1,
                                                    progress=False)
    celeba = data_prep.read_celeba(data)
    men = data_prep.select_files(celeba, split="all", filter="Male")[:4]
    config = {"data": data, "crop": "makeover", "image_size": 32, "crop_size": 108}
    rows = scores.drawn_translations(config, men, terms=[("Male", False)])
    assert [kind for _, kind, _ in rows] == ["baseline", "baseline"]
    assert all(images.shape == (4, 40, 32, 3) and images.min() >= -1 and images.max() <= 1 for _, _, images in rows)
    index = synthetic_celeba.face_index(men[0])
    fewest = data_prep.to_float(data_prep.crop_and_resize(synthetic_celeba.draw_other_sex(
        index, seed=2, minimal=True)[1], crop="makeover", image_size=32)[None])[0]
    assert np.array_equal(rows[1][2][0], fewest)
    assert scores.drawn_translations(config, men, terms=[("Male", False), ("Attractive", True)]) == []
    assert scores.drawn_translations(dict(config, data=str(tmp_path / "synth")), ["face.jpg"],
                                     terms=[("Male", False)]) == []
