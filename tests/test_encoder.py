"""encoder.py on a tiny CelebA: a one-epoch 32x32 GAN with 8 filters, E and a VAE trained for a few steps."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import skimage.data

import complete
import data_prep
import dcgan
import runs
import scores
import vae
import encoder
import evaluate
import keras  # after dcgan, which chooses the TensorFlow backend

TINY = ["--image-size", "32", "--filters", "8", "--batch-size", "16", "--steps-per-epoch", "3",
        "--precision", "float32"]


@pytest.fixture(scope="module")
def gan_run(tiny_celeba, tmp_path_factory):
    """A one-epoch tiny GAN run (treat as read-only; copy it to change it)."""
    runs = tmp_path_factory.mktemp("runs")
    dcgan.main(["--data", tiny_celeba, *TINY, "--epochs", "1", "--runs-dir", str(runs), "--name", "gan",
                "--cache-dir", str(runs / "cache")])
    settle_batch_norm(str(runs / "gan"))
    return str(runs / "gan")


def settle_batch_norm(run_dir, *, passes=40):
    """Three training steps leave G's batch-norm statistics near their start (mean 0, variance 1), where G(z) is
    almost the same grey for every z; forward passes in training mode settle them, so that G(z) depends on z as
    a trained G's does and a code can be told from another by its image."""
    generator = dcgan.load_generator(run_dir)
    for index in range(passes):
        generator(dcgan.latent_for_seed(100 + index, 64, 100), training=True)
    runs.save_model_atomic(generator, os.path.join(run_dir, "generator.keras"))


@pytest.fixture(scope="module")
def encoded_run(gan_run, tmp_path_factory):
    """A copy of the GAN run with E trained for two epochs of three steps."""
    copy = str(tmp_path_factory.mktemp("encoded") / "gan")
    shutil.copytree(gan_run, copy)
    encoder.main(["train", "--run", copy, "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16"])
    return copy


@pytest.fixture(scope="module")
def vae_run(gan_run, tmp_path_factory):
    """A VAE trained with the GAN run's data, sizes and image-steps (one epoch of three steps of 16)."""
    runs = tmp_path_factory.mktemp("vae")
    vae.main(["--name", "vae", "--runs-dir", str(runs), "--like", gan_run])
    return str(runs / "vae")


@pytest.fixture(scope="module")
def vae_gan_run(gan_run, tmp_path_factory):
    """A VAE-GAN (vae.py --gan) with the GAN run's data, sizes and image-steps."""
    runs = tmp_path_factory.mktemp("vae-gan")
    vae.main(["--name", "vae-gan", "--runs-dir", str(runs), "--like", gan_run, "--gan"])
    return str(runs / "vae-gan")


@pytest.fixture(scope="module")
def test_faces(gan_run):
    config = runs.read_config(gan_run)
    return data_prep.load_split(config["data"], split="test", image_size=32, cache_dir=config["cache_dir"],
                                progress=False).images[:4]


def cli_error(argv, capsys):
    """Run the CLI as `python encoder.py` does; return the one line it printed (it must exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(encoder.main, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_encoder_is_the_discriminators_stack_with_a_linear_head():
    discriminator = dcgan.build_discriminator(image_size=32, filters=8, kernel_size=5)
    network = encoder.build_encoder(latent_dim=20, image_size=32, filters=8, kernel_size=5)
    vae_encoder = vae.build_vae_encoder(latent_dim=20, image_size=32, filters=8, kernel_size=5)
    assert network.output_shape == (None, 20)
    assert [output.shape for output in vae_encoder.outputs] == [(None, 20), (None, 20)]
    for name in ("down1", "down2", "down3"):
        assert network.get_layer(name).kernel.shape == discriminator.get_layer(name).kernel.shape
    assert network.get_layer("z").activation.__name__ == "linear"


def test_kl_term_matches_the_hand_computed_value():
    mean = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
    log_variance = np.array([[0.0, np.log(2.0)], [0.0, 0.0]], np.float32)
    # Row 1: 0.5 * ((1 + 0 - 1 - 0) + (2 + 1 - 1 - ln 2)) = 1 - ln(2) / 2; row 2: the prior itself, 0.
    values = keras.ops.convert_to_numpy(vae.kl_divergence(mean, log_variance))
    np.testing.assert_allclose(values, [1.0 - np.log(2.0) / 2, 0.0], rtol=1e-6, atol=1e-7)


def test_masked_pixel_distance_counts_only_known_pixels():
    images = np.zeros((1, 4, 4, 3), np.float32)
    targets = np.zeros((1, 4, 4, 3), np.float32)
    targets[0, 0, 0] = 1.0  # one wrong pixel, known
    targets[0, 3, 3] = 5.0  # one very wrong pixel, masked out
    mask = np.ones((4, 4), np.float32)
    mask[3, 3] = 0.0
    l1 = encoder.pixel_distance(images, targets, loss="l1", mask=mask).numpy()
    np.testing.assert_allclose(l1, [3.0 / (15 * 3)])  # three channels off by 1 over 15 known pixels x 3
    pooled = encoder.pixel_distance(images, targets, loss="l2", lowres_factor=4).numpy()
    np.testing.assert_allclose(pooled, [((3.0 + 15.0) / 16 / 3) ** 2 * 3 / 3])


@pytest.mark.parametrize("name, known_fraction", [("center", 0.75), ("left", 0.5), ("grid", 1 / 16),
                                                  ("lowres", 0.0)])
def test_masks_keep_the_hand_computed_pixels(name, known_fraction):
    mask = complete.make_mask(name, 32)
    assert mask.shape == (32, 32) and mask.mean() == known_fraction
    if name == "center":
        assert mask[8:24, 8:24].sum() == 0 and mask[7, 7] == 1 and mask[24, 24] == 1
    if name == "left":
        assert mask[:, :16].sum() == 0 and mask[:, 16:].min() == 1
    if name == "grid":
        assert mask[0, 0] == 1 and mask[4, 8] == 1 and mask[1, 0] == 0 and mask[0, 3] == 0


def test_random_mask_drops_a_seeded_fifth():
    mask = complete.make_mask("random", 32, seed=3)
    expected = np.random.default_rng(3).random((32, 32)) >= 0.2
    np.testing.assert_array_equal(mask, expected.astype(np.float32))
    assert not np.array_equal(mask, complete.make_mask("random", 32, seed=4))
    with pytest.raises(ValueError, match="unknown mask 'square'"):
        complete.make_mask("square", 32)


def test_projection_recovers_an_image_made_from_a_known_z(gan_run):
    run = dcgan.load_run(gan_run)
    known_z = dcgan.latent_for_seed(7, 3, 100)
    target = dcgan.generate(run.generator, known_z)
    start = dcgan.generate(run.generator, dcgan.latent_for_seed(0, 3, 100))
    result = encoder.project(run.generator, run.discriminator, target, steps=150, lr=0.05, lambda_=0.0,
                             prior="none", seed=0, progress=False)
    before, after = encoder.pixel_mse(start, target), encoder.pixel_mse(result.images, target)
    assert result.codes.shape == (3, 100) and result.step_losses.shape == (150, 3)
    assert (result.step_losses[-1] < result.step_losses[0]).all()
    # The stated bound: the image is reproduced to a tenth of where it started and below 1e-4 in [0, 1] pixels.
    assert (after < 0.1 * before).all() and (after < 1e-4).all(), (before, after)


def test_a_second_projection_with_the_same_models_reuses_the_traced_step(gan_run):
    run = dcgan.load_run(gan_run)
    target = dcgan.generate(run.generator, dcgan.latent_for_seed(7, 2, 100))
    options = dict(steps=3, lr=0.05, lambda_=0.0, prior="none", progress=False)
    first = encoder.project(run.generator, run.discriminator, target, **options)
    _, step = encoder.projection_step(run.generator, run.discriminator, lr=0.05, loss="l2", lambda_=0.0,
                                      prior="none", prior_weight=0.01, lowres_factor=None, encoder=None,
                                      domain_weight=0.0, feature_weight=0.0)
    traced = step.experimental_get_tracing_count()
    second = encoder.project(run.generator, run.discriminator, target, **options)
    assert traced >= 1 and step.experimental_get_tracing_count() == traced
    np.testing.assert_array_equal(second.codes, first.codes)
    # Other options get a step of their own: a different lambda is a different objective.
    _, other = encoder.projection_step(run.generator, run.discriminator, lr=0.05, loss="l2", lambda_=0.5,
                                       prior="none", prior_weight=0.01, lowres_factor=None, encoder=None,
                                       domain_weight=0.0, feature_weight=0.0)
    assert other is not step


def test_realism_and_prior_terms_enter_the_objective(gan_run):
    run = dcgan.load_run(gan_run)
    z = dcgan.latent_for_seed(1, 2, 100)
    targets = dcgan.generate(run.generator, z)  # pixel loss 0, so only the other terms remain
    plain = encoder.projection_objective(run.generator, run.discriminator, lambda_=0.0, prior="none")
    both = encoder.projection_objective(run.generator, run.discriminator, lambda_=0.5, prior="gaussian",
                                        prior_weight=0.1)
    realism = encoder.realism_loss(run.discriminator, targets).numpy()
    np.testing.assert_allclose(plain(z, targets, None).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(both(z, targets, None).numpy(), 0.5 * realism + 0.1 * 0.5 * np.mean(z ** 2, axis=1),
                               rtol=1e-5)


def test_feature_term_is_zero_on_the_generators_own_image_and_linear_in_its_weight(gan_run):
    run = dcgan.load_run(gan_run)
    z = dcgan.latent_for_seed(1, 2, 100)
    own = dcgan.generate(run.generator, z)
    other = np.random.default_rng(0).uniform(-1, 1, own.shape).astype(np.float32)  # far from anything G draws
    objectives = {weight: encoder.projection_objective(run.generator, run.discriminator, lambda_=0.5, prior="none",
                                                       feature_weight=weight) for weight in (0.0, 1.0, 3.0)}
    # G(z) is its own target: pixels and features agree, and the realism term is the same by either path.
    np.testing.assert_allclose(objectives[3.0](z, own, None).numpy(), objectives[0.0](z, own, None).numpy(),
                               rtol=1e-5)
    base, once, thrice = (objectives[weight](z, other, None).numpy() for weight in (0.0, 1.0, 3.0))
    assert (once > base).all()
    np.testing.assert_allclose(thrice - base, 3 * (once - base), rtol=1e-2)  # small differences of large sums


def test_encoder_trained_on_generated_pairs_lowers_the_loss_on_z(gan_run):
    run = dcgan.load_run(gan_run)
    config = {"feature_layer": None, "latent_weight": 1.0, "pixel_weight": 0.0, "feature_weight": 0.0,
              "pixel_loss": "l2", "seed": 0, "learning_rate": 2e-3, "beta1": 0.5}
    trainer = encoder.make_encoder_trainer(run, config)
    z = dcgan.latent_for_seed(5, 64, 100)
    fakes = dcgan.generate(run.generator, z)

    def z_loss():
        return float(np.mean((encoder.encoder_codes(trainer.encoder, fakes) - z) ** 2))

    before = z_loss()
    images = keras.ops.convert_to_tensor(np.zeros((64, 32, 32, 3), np.float32))  # ignored: pixel, feature weights 0
    for _ in range(60):
        trainer.train_step(images)
    assert z_loss() < 0.85 * before  # measured: 1.02 -> 0.67


def test_training_writes_evidence_and_resume_continues(encoded_run, tmp_path):
    out = os.path.join(encoded_run, "encoder")
    config = runs.read_config(out)
    assert config["run"] == os.path.abspath(encoded_run) and config["epochs"] == 2 and config["latent_weight"] == 1.0
    for name in ("loss", "latent", "pixel", "feature", "validation"):
        assert np.load(os.path.join(out, f"{name}_losses.npy")).shape == (2,)
    grid = data_prep.read_image_uint8(os.path.join(out, "samples", "epoch_002.png"))
    assert grid.shape == (2 * 34 + 2, 8 + 7 * len("G(E(x))") + 8 * 34 + 2, 3)  # originals over reconstructions
    assert np.load(os.path.join(out, "fixed_images.npy")).shape == (8, 32, 32, 3)
    assert os.path.isfile(os.path.join(out, "encoder.keras"))
    copy = str(tmp_path / "gan")
    shutil.copytree(encoded_run, copy)
    before = np.load(os.path.join(copy, "encoder", "loss_losses.npy"))
    encoder.main(["train", "--run", copy, "--resume", "--epochs", "3"])
    after = np.load(os.path.join(copy, "encoder", "loss_losses.npy"))
    assert after.shape == (3,)
    np.testing.assert_array_equal(after[:2], before)
    run = dcgan.load_run(copy)
    trainer = encoder.make_encoder_trainer(run, runs.read_config(os.path.join(copy, "encoder")))
    runs.load_checkpoint(os.path.join(copy, "encoder"), trainer.state_variables())
    assert int(trainer.loss_optimizer.iterations) == 9
    assert os.path.isfile(os.path.join(copy, "encoder", "samples", "epoch_003.png"))


@pytest.mark.parametrize("method", encoder.METHODS)
def test_each_method_returns_codes_of_the_right_shape(encoded_run, test_faces, method):
    result = encoder.encode(encoded_run, test_faces, method=method, steps=3, progress=False)
    assert result.codes.shape == (4, 100) and result.reconstructions.shape == (4, 32, 32, 3)
    assert result.losses.shape == (4,) and result.kind == "gan" and result.method == method
    assert result.step_losses.shape == ((3, 4) if method in ("optimize", "hybrid") else (0, 4))
    np.testing.assert_allclose(result.losses, encoder.pixel_mse(result.reconstructions,
                                                                data_prep.to_float(test_faces)), rtol=1e-6)


def test_hybrid_starts_from_the_encoders_codes(encoded_run, test_faces):
    run = dcgan.load_run(encoded_run)
    codes = encoder.encoder_codes(encoder.load_encoder(run), data_prep.to_float(test_faces))
    hybrid = encoder.encode(run, test_faces, method="hybrid", steps=1, lr=1e-7, progress=False)
    optimize = encoder.encode(run, test_faces, method="optimize", steps=1, lr=1e-7, progress=False)
    np.testing.assert_allclose(hybrid.codes, codes, atol=1e-5)
    assert np.abs(optimize.codes - codes).max() > 0.1


def test_vae_trains_like_the_gan_and_its_codes_are_saved_the_same_way(gan_run, vae_run, test_faces, tmp_path):
    vae_dir = vae_run
    config = runs.read_config(vae_dir)
    assert config["kind"] == "vae" and config["image_size"] == 32 and config["filters"] == 8
    assert config["image_steps"] == config["gan_image_steps"] == 1 * 3 * 16
    assert np.load(os.path.join(vae_dir, "kl_losses.npy")).shape == (1,)
    assert dcgan.load_generator(vae_dir).output_shape == (None, 32, 32, 3)
    vae_codes = encoder.encode(vae_dir, test_faces, method="encoder", progress=False)
    assert vae_codes.kind == "vae" and vae_codes.codes.shape == (4, 100)
    gan_codes = encoder.encode(gan_run, test_faces, method="random", progress=False)
    names = [f"{index}.jpg" for index in range(4)]
    with np.load(encoder.save_codes(str(tmp_path / "vae.npz"), vae_codes, names)) as vae_file, \
            np.load(encoder.save_codes(str(tmp_path / "gan.npz"), gan_codes, names)) as gan_file:
        assert sorted(vae_file.files) == sorted(gan_file.files)
        assert str(vae_file["run"]) == os.path.abspath(vae_dir) and str(vae_file["kind"]) == "vae"
    with pytest.raises(ValueError, match="VAE run"):
        encoder.encode(vae_dir, test_faces, method="hybrid", progress=False)


def test_a_vae_like_an_oversampled_gan_learns_the_same_mix_for_as_many_images(gan_run, tmp_path):
    from conftest import appearances, tiny_men

    men = tiny_men()  # the training split's ground truth
    like = str(tmp_path / "oversampled")
    shutil.copytree(gan_run, like)
    gan = {**runs.read_config(gan_run), "oversample": ["Male=3"], "steps_per_epoch": None}
    data_prep.write_json(os.path.join(like, "config.json"), gan)
    argv = ["--name", "vae", "--runs-dir", str(tmp_path), "--like", like]
    config = vae.vae_config(vae.parse_args(argv), argv)
    assert config["oversample"] == ["Male=3"]
    assert 0 < men.sum() < len(men) and vae.epoch_length(config) == len(men) + 2 * men.sum()
    assert config["gan_image_steps"] == 1 * ((len(men) + 2 * men.sum()) // 16) * 16  # one epoch of the longer mix
    assert vae.epoch_length({**config, "oversample": None}) == len(men)
    faces = data_prep.run_split(config, split="train").images
    np.testing.assert_array_equal(appearances(vae.train_dataset({**config, "batch_size": 1}), faces),
                                  np.where(men, 3, 1))


def test_vae_gan_losses_by_hand():
    # Zero mean and log-variance heads: the posterior is the prior, KL 0. A zero logit layer: D says 1/2 of
    # everything, so D's loss is 3 ln 2 (real, reconstruction, sample) and G's 2 ln 2. A zero last layer of G: it
    # draws the all-zero image, as the real batch is, so their features are the same and the feature loss is 0.
    encoder_network = vae.build_vae_encoder(latent_dim=4, image_size=16, filters=4, kernel_size=4)
    generator = dcgan.build_generator(latent_dim=4, image_size=16, filters=4, kernel_size=4)
    discriminator = dcgan.build_discriminator(image_size=16, filters=4, kernel_size=4)
    for network, names in ((encoder_network, ("mean", "log_variance")), (generator, ("up2",)),
                           (discriminator, ("logit",))):
        for name in names:
            layer = network.get_layer(name)
            layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    model = vae.VAEGAN(encoder_network, generator, discriminator, beta=1.0, gamma=1.0, feature_layer="down2_features")
    losses, figures = model.losses_of(np.zeros((3, 16, 16, 3), np.float32))
    values = {name: float(value) for name, value in {**losses, **figures}.items()}
    assert values["kl"] == pytest.approx(0.0, abs=1e-6) and values["feature"] == pytest.approx(0.0, abs=1e-6)
    assert values["d_loss"] == pytest.approx(3 * np.log(2.0)) and values["g_loss"] == pytest.approx(2 * np.log(2.0))
    assert values["d_real"] == values["d_fake"] == pytest.approx(0.5)
    assert values["discriminator"] == pytest.approx(3 * np.log(2.0))  # D never sees the feature loss
    assert values["generator"] == pytest.approx(2 * np.log(2.0))  # gamma x 0 + the GAN loss


def test_vae_gan_trains_resumes_and_is_a_vae_run_for_every_later_script(vae_gan_run, vae_run, encoded_run,
                                                                         classifier_dir, test_faces, tmp_path):
    config = runs.read_config(vae_gan_run)
    assert config["kind"] == "vae" and config["gan"] and config["model"] == "vae-gan"
    assert (config["learning_rate"], config["beta1"]) == (2e-4, 0.5)  # the DCGAN's Adam, not the VAE's 1e-3
    for name in ("kl", "feature", "d_loss", "g_loss", "d_real", "d_fake"):
        assert np.load(os.path.join(vae_gan_run, f"{name}_losses.npy")).shape == (1,)
    assert os.path.isfile(os.path.join(vae_gan_run, "vae_gan_discriminator.keras"))
    codes = encoder.encode(vae_gan_run, test_faces, method="encoder", progress=False)
    assert codes.kind == "vae" and codes.codes.shape == (4, 100)
    copy = str(tmp_path / "vae-gan")
    shutil.copytree(vae_gan_run, copy)
    vae.main(["--name", "vae-gan", "--runs-dir", str(tmp_path), "--resume", "--epochs", "2"])
    assert np.load(os.path.join(copy, "g_loss_losses.npy")).shape == (2,)
    out = tmp_path / "compare"
    scores.main(["encoders", "--run", encoded_run, "--vae", vae_run, vae_gan_run, "--classifier",
                 str(classifier_dir), "--count", "4", "--steps", "1", "--out", str(out)])
    report = json.loads((out / "compare.json").read_text())
    assert [row["method"] for row in report["rows"]] == [*encoder.METHODS, "vae", "vae-gan"]


def test_vae_runs_are_scored_beside_the_gan_with_their_own_rows_and_chart(gan_run, vae_run, classifier_dir,
                                                                         tmp_path):
    out = tmp_path / "scores"
    evaluate.main(["score", gan_run, vae_run, "--classifier", str(classifier_dir), "--n", "20", "--kid-subsets", "5",
                   "--out", str(out)])
    rows = json.loads((out / "scores.json").read_text())["rows"]
    assert [row["kind"] for row in rows] == ["real", "trained", "vae", "untrained", "noise"]
    vae_row = rows[2]
    assert vae_row["d_accuracy"] is None and vae_row["d_accuracy_note"] == "not measured (a VAE run)"
    assert isinstance(vae_row["under_drawn"], list) and 0.0 <= vae_row["coverage"] <= 1.0
    assert data_prep.read_image_uint8(str(out / "scores.png")).shape[1] > 100
    assert "| vae | vae |" in (out / "scores.md").read_text()
    # A VAE trained on other data is refused, as a GAN is.
    elsewhere = {**runs.read_config(vae_run), "data": str(tmp_path)}
    with pytest.raises(ValueError, match="train a classifier with --data"):
        evaluate.check_config(elsewhere, evaluate.classifier_config(str(classifier_dir)), what="the VAE")


def test_vae_gan_refuses_a_missing_feature_layer_before_writing(gan_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(vae.main, ["--name", "bad", "--runs-dir", str(tmp_path), "--like", gan_run, "--gan",
                                     "--feature-layer", "down9_features"])
    assert exit_info.value.code == 2
    assert "--feature-layer" in capsys.readouterr().err and not os.path.exists(tmp_path / "bad")


def test_encode_cli_saves_codes_names_and_grid_for_a_split(encoded_run, tmp_path):
    encoder.main(["encode", "--run", encoded_run, "--method", "encoder", "--split", "test", "--limit", "5",
                  "--out", str(tmp_path)])
    with np.load(tmp_path / "encoder-test.npz") as codes:
        assert codes["codes"].shape == (5, 100) and codes["codes"].dtype == np.float32
        assert codes["names"].tolist() == [f"{index:06d}.jpg" for index in range(181, 186)]
        assert str(codes["method"]) == "encoder" and str(codes["run"]) == os.path.abspath(encoded_run)
        assert codes["loss"].shape == (5,) and codes["step_losses"].shape == (0, 5) and str(codes["kind"]) == "gan"
    assert data_prep.read_image_uint8(str(tmp_path / "encoder-test.png")).shape == (2 * 34 + 2, 8 * 34 + 2, 3)


def test_encode_cli_reads_a_photo_through_load_face(encoded_run, tmp_path):
    photo = str(tmp_path / "astronaut.jpg")
    cv2.imwrite(photo, cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    encoder.main(["encode", "--run", encoded_run, "--method", "optimize", "--steps", "2", photo,
                  "--out", str(tmp_path / "codes")])
    with np.load(tmp_path / "codes" / "optimize-photos.npz") as codes:
        assert codes["names"].tolist() == ["astronaut.jpg"] and codes["step_losses"].shape == (2, 1)


@pytest.mark.parametrize("blend", complete.BLENDS)
def test_completion_changes_pixels_only_inside_the_hole(gan_run, test_faces, blend):
    run = dcgan.load_run(gan_run)
    result = complete.complete(run.generator, run.discriminator, test_faces[:2], mask="center", blend=blend,
                              steps=3, progress=False)
    originals = data_prep.to_float(test_faces[:2])
    hole = complete.make_mask("center", 32) == 0
    np.testing.assert_array_equal(result.completed[:, ~hole], originals[:, ~hole])
    assert np.abs(result.completed[:, hole] - originals[:, hole]).mean() > 0.01
    np.testing.assert_array_equal(result.masked[:, hole], 0.0)
    assert result.projection.step_losses.shape == (3, 2)


def test_complete_cli_writes_original_masked_and_completed(gan_run, tmp_path):
    photo = str(tmp_path / "face.png")
    config = runs.read_config(gan_run)
    aligned = data_prep.read_image_uint8(os.path.join(config["data"], "img_align_celeba", "000190.jpg"))
    data_prep.write_image(photo, aligned)
    complete.main(["--run", gan_run, "--mask", "left", "--steps", "2", "--fallback-crop", photo,
                  "--out", str(tmp_path / "out")])
    triple = data_prep.read_image_uint8(str(tmp_path / "out" / "face_left.png"))
    assert triple.shape == (34 + 2, 3 * 34 + 2, 3)


def test_bad_input_is_one_line_and_nothing_is_written(gan_run, encoded_run, tmp_path, capsys):
    assert "not a run directory" in cli_error(["encode", "--run", str(tmp_path / "none"), "--split", "test"], capsys)
    with pytest.raises(SystemExit):
        data_prep.run_cli(complete.main, ["--run", gan_run, "--mask", "square", "x.jpg"])
    assert "unknown mask 'square'" in capsys.readouterr().err
    assert "python complete.py" in cli_error(["complete", "--run", gan_run], capsys)
    assert "invalid choice: 'magic'" in cli_error(["encode", "--run", gan_run, "--method", "magic", "x.jpg"], capsys)
    assert "expected a command" in cli_error(["fly"], capsys)
    assert "no trained encoder" in cli_error(["encode", "--run", gan_run, "--method", "encoder", "--split", "test",
                                              "--out", str(tmp_path / "a")], capsys)
    blank = str(tmp_path / "blank.jpg")
    cv2.imwrite(blank, np.full((120, 100, 3), 128, np.uint8))
    assert "no face found in" in cli_error(["encode", "--run", encoded_run, "--method", "encoder", blank,
                                            "--out", str(tmp_path / "b")], capsys)
    assert "photo not found" in cli_error(["encode", "--run", encoded_run, str(tmp_path / "gone.jpg"),
                                           "--out", str(tmp_path / "c")], capsys)
    assert not any(os.path.exists(tmp_path / name) for name in ("a", "b", "c"))
    assert "already holds a training" in cli_error(["train", "--run", encoded_run], capsys)
    fresh = str(tmp_path / "fresh")
    shutil.copytree(gan_run, fresh)
    assert "--min-delta must be 0 or more" in cli_error(["train", "--run", fresh, "--min-delta", "-0.1"], capsys)
    assert not os.path.exists(os.path.join(fresh, "encoder"))


def test_runs_without_a_network_or_with_anothers_encoder_are_refused(gan_run, encoded_run, tmp_path, capsys):
    no_d = str(tmp_path / "no-d")
    shutil.copytree(gan_run, no_d)
    os.remove(os.path.join(no_d, "discriminator.keras"))
    os.remove(os.path.join(no_d, "checkpoints", "discriminator_epoch_001.weights.h5"))
    assert "no discriminator in" in cli_error(["train", "--run", no_d], capsys)
    assert not os.path.exists(os.path.join(no_d, "encoder"))
    other = str(tmp_path / "other")
    shutil.copytree(encoded_run, other)
    generator = dcgan.load_generator(other)
    generator.set_weights([weight * 1.01 for weight in generator.get_weights()])
    runs.save_model_atomic(generator, os.path.join(other, "generator.keras"))
    assert "trained for another generator" in cli_error(["encode", "--run", other, "--method", "hybrid",
                                                         "--split", "test", "--limit", "2"], capsys)
    vae_like = str(tmp_path / "vae-like")
    shutil.copytree(gan_run, vae_like)
    data_prep.write_json(os.path.join(vae_like, "config.json"), {**runs.read_config(gan_run), "kind": "vae"})
    assert "is a VAE run" in cli_error(["train", "--run", vae_like], capsys)
    for main, argv in ((complete.main, ["--run", vae_like, "x.jpg"]), (scores.main, ["encoders", "--run", vae_like])):
        with pytest.raises(SystemExit):
            data_prep.run_cli(main, argv)
        assert "is a VAE run" in capsys.readouterr().err


def test_varying_attributes_and_perfect_reconstructions_score_as_hand_computed(classifier_dir, test_faces):
    labels = np.zeros((3, 40), np.float32)
    labels[0, 5] = labels[:, 7] = labels[1, 9] = 1.0  # attribute 7 always on: it does not vary
    assert np.flatnonzero(scores.varying_attributes(labels)).tolist() == [5, 9]
    classifier = evaluate.load_classifier(classifier_dir)
    images = data_prep.to_float(test_faces)
    same = scores.reconstruction_scores(images, images, classifier=classifier, varying=np.ones(40, bool))
    assert same["mse"] == 0 and same["ssim"] == pytest.approx(1.0) and same["feature_distance"] == 0
    assert same["attribute_agreement"] == 1.0 and same["psnr"] == pytest.approx(100.0)
    flipped = scores.reconstruction_scores(images, -images, classifier=classifier, varying=np.ones(40, bool))
    assert flipped["mse"] == pytest.approx(np.mean(images ** 2)) and flipped["feature_distance"] > 0


def test_compare_writes_one_row_per_method_and_the_vae(encoded_run, vae_run, classifier_dir, tmp_path):
    out = tmp_path / "compare"
    scores.main(["encoders", "--run", encoded_run, "--vae", vae_run, "--classifier", str(classifier_dir),
                 "--count", "4", "--steps", "2", "--out", str(out)])
    report = json.loads((out / "compare.json").read_text())
    assert [row["method"] for row in report["rows"]] == [*encoder.METHODS, "vae"]
    for row in report["rows"]:
        assert 0.0 <= row["attribute_agreement"] <= 1.0 and row["mse"] > 0 and row["seconds_per_image"] > 0
    assert report["settings"]["count"] == 4 and "| hybrid |" in (out / "compare.md").read_text()
    grid = data_prep.read_image_uint8(str(out / "compare.png"))
    assert grid.shape[0] == 6 * 34 + 2  # the originals, then a row per method and the VAE


def test_a_resumed_encoder_halves_its_learning_rate_when_the_validation_loss_stalls(gan_run, tmp_path, monkeypatch):
    copy = str(tmp_path / "gan")
    shutil.copytree(gan_run, copy)
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.5, 1.6])
    monkeypatch.setattr(encoder.EncoderTrainer, "validation_loss", lambda self, images, z: next(scripted))
    common = ["--steps-per-epoch", "2", "--batch-size", "16", "--patience", "4"]
    encoder.main(["train", "--run", copy, "--epochs", "3", *common])  # a constant rate, as E was trained before
    encoder.main(["train", "--run", copy, "--resume", "--epochs", "7", "--lr-patience", "2", *common])
    out = os.path.join(copy, "encoder")
    # after epoch 4 (2.5, 2.6 not below 2.0, the rate unchanged since epoch 1) the rate halves for epoch 5; 2.7
    # after one epoch at 1e-4 is no reason to halve again; 1.5 is a new low
    np.testing.assert_allclose(np.load(os.path.join(out, "learning_rate.npy")), [2e-4] * 4 + [1e-4] * 3, rtol=1e-6)
    assert json.loads(open(os.path.join(out, "config.json")).read())["lr_patience"] == 2


def test_validation_loss_stops_falling_by_hand():
    assert encoder.stopped_falling([5, 4, 3, 3.5, 3.2, 3.1], 3)  # 3.5, 3.2, 3.1: none below 3
    assert not encoder.stopped_falling([5, 4, 3, 3.5, 2.9], 3)  # 2.9 is below 4, the best before the last three
    assert not encoder.stopped_falling([5, 6, 7, 8], 0)  # patience 0: never
    assert not encoder.stopped_falling([5, 6], 3)  # too few epochs to tell


def test_a_fall_no_larger_than_min_delta_does_not_count_by_hand():
    # the best before the last three is 3.0; 2.95 is below it by 0.05
    assert not encoder.stopped_falling([5, 4, 3.0, 3.5, 3.2, 2.95], 3)
    assert encoder.stopped_falling([5, 4, 3.0, 3.5, 3.2, 2.95], 3, 0.1)  # 0.05 is not more than 0.1
    assert not encoder.stopped_falling([5, 4, 3.0, 3.5, 3.2, 2.85], 3, 0.1)  # 0.15 is
    # three epochs at one rate, the last three at most 0.05 under 2.0: halved with 0.1, held without
    assert encoder.next_learning_rate([3.0, 2.0, 1.97, 1.99, 1.95], [4.0] * 5, 3, min_delta=0.1) == 2.0
    assert encoder.next_learning_rate([3.0, 2.0, 1.97, 1.99, 1.95], [4.0] * 5, 3) == 4.0


def test_a_resumed_encoder_with_min_delta_stops_when_its_loss_only_creeps_down(gan_run, tmp_path, monkeypatch):
    copy = str(tmp_path / "gan")
    shutil.copytree(gan_run, copy)
    scripted = iter([3.0, 2.0, 1.99, 1.98, 1.97, 1.96])  # a new low every epoch, by 0.01 after the second
    monkeypatch.setattr(encoder.EncoderTrainer, "validation_loss", lambda self, images, z: next(scripted))
    common = ["--steps-per-epoch", "2", "--batch-size", "16", "--patience", "2"]
    encoder.main(["train", "--run", copy, "--epochs", "2", *common])
    encoder.main(["train", "--run", copy, "--resume", "--epochs", "6", "--min-delta", "0.1", *common])
    out = os.path.join(copy, "encoder")
    # epochs 3 and 4 fall by 0.01 and 0.02 below 2.0, not by more than 0.1: it stops after epoch 4, not 6
    np.testing.assert_allclose(np.load(os.path.join(out, "validation_losses.npy")), [3.0, 2.0, 1.99, 1.98], rtol=1e-6)
    assert json.loads(open(os.path.join(out, "config.json")).read())["min_delta"] == 0.1


def test_learning_rate_is_halved_after_patience_epochs_without_a_new_low_by_hand():
    # 2.5 and 2.6 are not below 2.0 and the rate has held for two epochs: halved
    assert encoder.next_learning_rate([3.0, 2.0, 2.5, 2.6], [4.0] * 4, 2) == 2.0
    assert encoder.next_learning_rate([3.0, 2.0, 2.5, 1.9], [4.0] * 4, 2) == 4.0  # 1.9 is a new low
    # no new low, but the rate changed one epoch ago: it waits for two epochs at the new rate
    assert encoder.next_learning_rate([3.0, 2.0, 2.5, 2.6, 2.7], [4.0] * 4 + [2.0], 2) == 2.0
    assert encoder.next_learning_rate([3.0, 2.0, 2.5, 2.6, 2.7, 2.8], [4.0] * 4 + [2.0] * 2, 2) == 1.0
    assert encoder.next_learning_rate([3.0, 2.0, 2.5, 2.6], [4.0] * 4, 0) == 4.0  # patience 0: constant


def test_early_stopping_keeps_the_epoch_with_the_lowest_validation_loss(gan_run, tmp_path, monkeypatch):
    copy = str(tmp_path / "gan")
    shutil.copytree(gan_run, copy)
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    monkeypatch.setattr(encoder.EncoderTrainer, "validation_loss", lambda self, images, z: next(scripted))
    encoder.main(["train", "--run", copy, "--epochs", "6", "--patience", "2", "--steps-per-epoch", "2",
                  "--batch-size", "16"])
    out = os.path.join(copy, "encoder")
    # epochs 3 and 4 (2.5, 2.6) are not below epoch 2's 2.0: it stops after epoch 4 and keeps epoch 2's E
    np.testing.assert_allclose(np.load(os.path.join(out, "validation_losses.npy")), [3.0, 2.0, 2.5, 2.6], rtol=1e-6)
    np.testing.assert_allclose(np.load(os.path.join(out, "learning_rate.npy")), [2e-4] * 4, rtol=1e-6)  # constant
    best = encoder.build_encoder(latent_dim=100, image_size=32, filters=8, kernel_size=5)
    best.load_weights(encoder.epoch_weights_path(out, 2))
    kept = keras.saving.load_model(os.path.join(out, "encoder.keras"), compile=False)
    for expected, weight in zip(best.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(expected, weight)
