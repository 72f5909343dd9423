"""dcgan.py on a tiny CelebA: 32x32 images, 8 filters, a few steps per epoch."""

import os
import shutil
import signal
import subprocess
import sys
import time

import json

import numpy as np
import pytest

import augmentations
import data_prep
import dcgan
import evaluate
import runs
import keras  # after dcgan, which chooses the TensorFlow backend
import tensorflow as tf

REPO = os.path.dirname(os.path.abspath(dcgan.__file__))


def tiny_flags(data_dir, runs_dir, name, *extra):
    return ["--data", str(data_dir), "--image-size", "32", "--filters", "8", "--batch-size", "16",
            "--steps-per-epoch", "3", "--runs-dir", str(runs_dir), "--name", name,
            "--cache-dir", str(runs_dir / "cache"), "--precision", "float32", *extra]


@pytest.fixture(scope="module")
def trained_run(tiny_celeba, tmp_path_factory):
    """A two-epoch run shared by the tests that only read its artifacts."""
    runs = tmp_path_factory.mktemp("runs")
    dcgan.main(tiny_flags(tiny_celeba, runs, "tiny", "--epochs", "2"))
    return runs / "tiny"


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_builders_match_image_size(image_size):
    generator = dcgan.build_generator(image_size=image_size, filters=4, kernel_size=4)
    discriminator = dcgan.build_discriminator(image_size=image_size, filters=4, kernel_size=4)
    assert generator.output_shape == (None, image_size, image_size, 3)
    assert discriminator.output_shape == (None, 1)
    # The paper's 64x64 generator starts from 4x4x(8 * filters).
    assert generator.get_layer("project").units == 4 * 4 * 4 * 2 ** (dcgan.number_of_blocks(image_size) - 1)


def test_initial_weights_follow_the_seed():
    def build(seed):
        keras.utils.set_random_seed(seed)
        return (dcgan.build_generator(image_size=32, filters=4, kernel_size=4),
                dcgan.build_discriminator(image_size=32, filters=4, kernel_size=4))

    def weights(models):
        return [array for model in models for array in model.get_weights()]

    first, again, other = build(0), build(0), build(1)
    assert all(np.array_equal(a, b) for a, b in zip(weights(first), weights(again)))
    assert not np.array_equal(weights(first)[0], weights(other)[0])  # the projection's kernel
    # Layers of the same shape start apart: G's first batch norm and D's last both have 16 channels.
    generator, discriminator = first
    gamma_g = generator.get_layer("project_bn").gamma.numpy()
    gamma_d = discriminator.get_layer("down3_bn").gamma.numpy()
    assert gamma_g.shape == gamma_d.shape and not np.array_equal(gamma_g, gamma_d)


def test_run_writes_every_artifact(trained_run):
    config = runs.read_config(trained_run)
    assert config["seed"] == 0 and config["image_size"] == 32 and "tensorflow" in config["versions"]
    assert np.load(trained_run / "d_losses.npy").shape == (2,)
    assert np.load(trained_run / "g_losses.npy").shape == (2,)
    steps = runs.read_step_log(trained_run)
    assert list(steps.columns) == ["epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"]
    assert len(steps) == 6 and steps["epoch"].tolist() == [1, 1, 1, 2, 2, 2]
    assert ((steps["d_real"] > 0) & (steps["d_real"] < 1)).all()
    for epoch in (1, 2):
        grid = data_prep.read_image_uint8(str(trained_run / "samples" / f"epoch_{epoch:03d}.png"))
        assert grid.shape == (8 * 34 + 2, 8 * 34 + 2, 3)  # 8x8 tiles of 32 pixels with 2-pixel padding
    assert runs.saved_epochs(trained_run) == [1, 2]
    assert (trained_run / "checkpoints" / "last.npz").is_file()
    generator = dcgan.load_generator(trained_run)
    assert generator.output_shape == (None, 32, 32, 3)
    assert (trained_run / "discriminator.keras").is_file()
    assert np.load(trained_run / "fixed_z.npy").shape == (64, 100)


def test_resume_continues_epochs_losses_and_optimizer(trained_run, tmp_path):
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, copy)
    before = np.load(copy / "d_losses.npy")
    fixed_z = np.load(copy / "fixed_z.npy")
    config = runs.read_config(copy)
    dcgan.main(["--resume", "--runs-dir", str(tmp_path / "runs"), "--name", "tiny", "--epochs", "3",
                "--cache-dir", str(tmp_path / "cache")])
    after = np.load(copy / "d_losses.npy")
    assert after.shape == (3,)
    np.testing.assert_array_equal(after[:2], before)
    np.testing.assert_array_equal(np.load(copy / "fixed_z.npy"), fixed_z)
    assert runs.read_step_log(copy)["epoch"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    gan = dcgan.build_gan(config)
    runs.load_checkpoint(copy, gan.state_variables())
    assert int(gan.d_optimizer.iterations) == 9 and int(gan.g_optimizer.iterations) == 9
    resumed = runs.read_config(copy)
    assert resumed["versions"] == config["versions"] and len(resumed["resumed_with"]) == 1
    assert resumed["resume"] is True and resumed["epochs"] == 3


def test_config_holds_every_flag_and_absolute_paths(trained_run):
    config = runs.read_config(trained_run)
    flags = set(vars(dcgan.training_parser().parse_args([])))
    assert flags <= set(config), flags - set(config)
    assert config["name"] == "tiny" and config["resume"] is False
    assert os.path.isabs(config["data"]) and os.path.isabs(config["cache_dir"])
    assert config["compute_precision"] == "float32"


def test_load_run_gives_config_and_both_networks_final_or_per_epoch(trained_run):
    run = dcgan.load_run(str(trained_run))
    assert run.config["filters"] == 8 and run.epoch is None
    assert run.generator.output_shape == (None, 32, 32, 3) and run.discriminator.output_shape == (None, 1)
    first = dcgan.load_run(str(trained_run), epoch=1)
    assert runs.saved_epochs(trained_run, "discriminator") == [1, 2]
    assert not np.array_equal(first.discriminator.get_weights()[0], run.discriminator.get_weights()[0])
    features = dcgan.discriminator_features(run.discriminator, layer="down2_features")
    assert features.output_shape == (None, 8, 8, 16)  # 32 -> 16 -> 8 pixels; 8 then 16 filters
    assert dcgan.discriminator_features(run.discriminator).output_shape == (None, 4, 4, 32)
    with pytest.raises(ValueError, match="feature layers: down1_features, down2_features, down3_features"):
        dcgan.discriminator_features(run.discriminator, layer="down9")
    with pytest.raises(ValueError, match="has no generator for epoch 7"):
        dcgan.load_run(str(trained_run), epoch=7)


def test_load_run_refuses_a_baseline(tmp_path):
    baseline = evaluate.write_baseline(str(tmp_path / "noise"), kind="noise", image_size=32, count=2)
    with pytest.raises(ValueError, match="noise baseline, not a trained run"):
        dcgan.load_run(baseline)


def test_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(runs, "native_bfloat16", lambda: (True, "CPU with amx_bf16"))
    assert runs.resolve_precision("auto") == ("mixed_bfloat16", "CPU with amx_bf16")
    monkeypatch.setattr(runs, "native_bfloat16", lambda: (False, "CPU without AVX512_BF16 or AMX"))
    assert runs.resolve_precision("auto")[0] == "float32"
    assert runs.resolve_precision("mixed_bfloat16")[0] == "mixed_bfloat16"


def test_minibatch_std_appends_the_batch_spread():
    # Two images of one pixel and two channels: [1, 2] and [3, 6]. Spread per channel (population): 1 and 2.
    inputs = np.array([[[[1.0, 2.0]]], [[[3.0, 6.0]]]], np.float32)
    outputs = keras.ops.convert_to_numpy(dcgan.MinibatchStdDev()(inputs))
    assert outputs.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(outputs[..., :2], inputs)
    np.testing.assert_allclose(outputs[..., 2], 1.5)  # the mean of 1 and 2, the same for every image


def test_spectral_norm_bounds_every_discriminator_matrix_by_one():
    # SN-GAN: after training-mode calls (one power iteration each) every kernel, as a (fan_in, out) matrix, has
    # largest singular value 1, whatever scale it started at; D's batch norm is gone; feature names are kept.
    discriminator = dcgan.build_discriminator(image_size=16, filters=4, kernel_size=4, spectral_norm=True)
    assert not [layer for layer in discriminator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    wrappers = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert [layer.name for layer in wrappers] == ["down1", "down2", "logit"]
    for layer in wrappers:
        layer.kernel.assign(layer.kernel * 50.0)  # far from norm 1, so doing nothing would show
    images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    for _ in range(30):
        discriminator(images, training=True)
    for layer in wrappers:
        matrix = keras.ops.convert_to_numpy(layer.kernel).reshape(-1, layer.kernel.shape[-1])
        assert np.linalg.svd(matrix, compute_uv=False)[0] == pytest.approx(1.0, abs=0.02), layer.name
    assert dcgan.discriminator_features(discriminator, layer="down2_features").output.shape[1:] == (4, 4, 8)


def test_minibatch_std_has_a_finite_gradient_for_a_batch_of_one():
    # One image: the spread is 0, where std's gradient is infinite; projecting one photo through D must not get NaN.
    image = tf.Variable(np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        output = tf.reduce_sum(dcgan.MinibatchStdDev()(image))
    gradient = tape.gradient(output, image).numpy()
    assert np.all(np.isfinite(gradient))


def test_importing_the_scripts_prints_no_tensorflow_start_up_lines():
    # Importing loads TensorFlow quietly and queries no device; a command's first operation prints nothing either
    # (runs.run_cli makes the device query, whose CUDA probe lines a machine without a GPU would show, quietly).
    code = ("import sys, evaluate, bench, runs; print('imported', file=sys.stderr, flush=True); "
            "runs.run_cli(lambda argv: print(float((runs.tf.zeros(1) + 1)[0]), file=sys.stderr), [])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "imported\n1.0\n", result.stderr[-500:]


def test_resume_refuses_to_change_the_architecture(trained_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(dcgan.main, ["--resume", "--runs-dir", str(trained_run.parent), "--name", "tiny",
                                       "--filters", "16"])
    assert exit_info.value.code == 2
    assert "--filters cannot change when resuming" in capsys.readouterr().err


def test_killed_run_loses_at_most_the_epoch_in_progress(tiny_celeba, tmp_path):
    flags = tiny_flags(tiny_celeba, tmp_path, "killed", "--epochs", "3")
    flags[flags.index("--steps-per-epoch") + 1] = "400"
    process = subprocess.Popen([sys.executable, "dcgan.py", *flags], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    losses = tmp_path / "killed" / "d_losses.npy"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not losses.is_file():
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2, whose 400 steps take several seconds
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert np.load(losses).shape == (1,)
    assert runs.read_step_log(tmp_path / "killed")["epoch"].tolist() == [1] * 400  # log.csv: finished epochs only
    assert len(runs.read_checkpoint(tmp_path / "killed")[1]["d_losses"]) == 1
    dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "killed", "--epochs", "2",
                "--steps-per-epoch", "3"])
    assert np.load(tmp_path / "killed" / "d_losses.npy").shape == (2,)
    assert runs.read_step_log(tmp_path / "killed")["epoch"].max() == 2


def test_plot_and_sample_write_their_files(trained_run, tmp_path):
    plot = tmp_path / "losses.png"
    dcgan.main(["plot", str(trained_run), str(trained_run), "--out", str(plot)])
    assert data_prep.read_image_uint8(str(plot)).shape[1] > 800
    dcgan.main(["sample", str(trained_run), "--count", "10", "--seed", "3", "--interpolate", "1", "2",
                "--steps", "5", "--npy", "--outdir", str(tmp_path / "gen")])
    samples = np.load(tmp_path / "gen" / "seed0003.npy")
    assert samples.shape == (10, 32, 32, 3) and samples.dtype == np.uint8
    strip = data_prep.read_image_uint8(str(tmp_path / "gen" / "interpolate_1_2.png"))
    assert strip.shape[0] == 2 * 34 + 2  # a linear row and a spherical row
    # The same seed gives the same faces.
    sampler = dcgan.make_sampler(str(trained_run))
    np.testing.assert_allclose(data_prep.to_uint8(sampler(10, 3)), samples, atol=1)


def test_slerp_keeps_the_norm_of_orthogonal_codes():
    start, end = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    middle = dcgan.slerp(start, end, 0.5)
    assert np.linalg.norm(middle) == pytest.approx(1.0)
    assert np.linalg.norm(0.5 * start + 0.5 * end) == pytest.approx(np.sqrt(0.5))


@pytest.mark.parametrize("kind", ["noise", "untrained"])
def test_baselines_write_grid_and_samples(kind, tmp_path):
    evaluate.main(["baseline", "--kind", kind, "--runs-dir", str(tmp_path), "--image-size", "32", "--filters", "8",
                "--count", "20"])
    run = tmp_path / f"baseline-{kind}"
    samples = np.load(run / "samples.npy")
    assert samples.shape == (20, 32, 32, 3) and samples.dtype == np.uint8
    assert samples.std() > 1  # not a constant image
    assert (run / "samples" / "grid.png").is_file()
    if kind == "noise":  # uniform noise: every pixel value equally likely
        assert abs(samples.mean() - 127.5) < 3


def test_freezing_d_leaves_its_weights_unchanged(tiny_celeba, tmp_path):
    dcgan.main(tiny_flags(tiny_celeba, tmp_path, "frozen", "--epochs", "1", "--freeze-d-after", "1"))
    before, _ = runs.read_checkpoint(tmp_path / "frozen")
    dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "frozen", "--epochs", "2",
                "--cache-dir", str(tmp_path / "cache")])
    after, _ = runs.read_checkpoint(tmp_path / "frozen")
    gan = dcgan.build_gan(runs.read_config(tmp_path / "frozen"))
    generator_count = len(gan.generator.weights)
    discriminator_count = len(gan.discriminator.weights)
    d_slice = slice(generator_count, generator_count + discriminator_count)
    for old, new in zip(before[d_slice], after[d_slice]):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(old, new) for old, new in zip(before[:generator_count], after[:generator_count]))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_celeba, tmp_path, monkeypatch, capsys):
    dcgan.main(tiny_flags(tiny_celeba, tmp_path, "nan", "--epochs", "1"))
    good = runs.read_checkpoint(tmp_path / "nan")[0]
    monkeypatch.setattr(dcgan.DCGAN, "_average", staticmethod(lambda per_example: per_example[0] * np.nan))
    with pytest.raises(SystemExit) as exit_info:
        dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "nan", "--epochs", "2"])
    assert exit_info.value.code == 1
    assert "non-finite loss at epoch 2, step 1" in capsys.readouterr().err
    assert np.load(tmp_path / "nan" / "d_losses.npy").shape == (1,)
    for old, new in zip(good, runs.read_checkpoint(tmp_path / "nan")[0]):
        np.testing.assert_array_equal(old, new)


def test_oversampling_shows_each_oversampled_face_its_number_of_times(tiny_celeba, tmp_path):
    from conftest import appearances, tiny_men

    men = tiny_men()
    args = dcgan.training_parser().parse_args(tiny_flags(tiny_celeba, tmp_path, "x", "--oversample", "Male=3"))
    config = {**vars(args), "steps_per_epoch": None, "batch_size": 1}
    dataset, faces, per_epoch = dcgan.train_dataset(config)
    assert 0 < men.sum() < len(men) and (faces, per_epoch) == (len(men), len(men) + 2 * men.sum())
    images = data_prep.run_split({**config, "data": tiny_celeba}, split="train").images
    np.testing.assert_array_equal(appearances(dataset, images), np.where(men, 3, 1))  # each man thrice, in place
    plain = dcgan.train_dataset({**config, "oversample": []})
    assert plain[1:] == (len(men), len(men))
    np.testing.assert_array_equal(appearances(plain[0], images), 1)


def test_a_run_resumes_with_its_oversampling_in_another_spelling_and_refuses_a_change(tiny_celeba, tmp_path, capsys):
    flags = tiny_flags(tiny_celeba, tmp_path, "over", "--epochs", "1", "--oversample", "Male=2",
                       "--oversample", "eyeglasses=3")
    dcgan.main(flags)
    assert runs.read_config(tmp_path / "over")["oversample"] == ["Male=2", "eyeglasses=3"]
    resumed = [flag for flag in flags if flag not in ("--oversample", "Male=2", "eyeglasses=3")]
    dcgan.main([*resumed, "--resume", "--epochs", "2", "--oversample", "Eyeglasses=3,Male=2"])
    assert np.load(tmp_path / "over" / "d_losses.npy").shape == (2,)
    with pytest.raises(SystemExit):
        data_prep.run_cli(dcgan.main, [*resumed, "--resume", "--epochs", "3", "--oversample", "Male=3"])
    assert "--oversample cannot change when resuming" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
    (["--image-size", "48"], "image size must be a power of two"),
    (["--filter", "Eyeglass"], "did you mean 'Eyeglasses'"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--diff-augment", "color,rotate"], "unknown DiffAugment transform 'rotate'"),
    (["--r1", "-1"], "--r1 must be 0 or more, got -1.0"),
    (["--r1-every", "0"], "--r1-every must be a positive integer, got 0"),
    (["--oversample", "Bald:3"], "--oversample 'Bald:3' is not ATTRIBUTE=N"),
    (["--oversample=-Bald=2"], "--oversample '-Bald=2' is not ATTRIBUTE=N"),
    (["--oversample", "Chubby=2,Baldd=2"], "--oversample 'Baldd=2': unknown attribute 'Baldd'; did you mean 'Bald'"),
])
def test_bad_flags_get_one_clear_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(dcgan.main, ["--runs-dir", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_mirrored_strategy_trains_on_two_logical_cpus(tiny_celeba, tmp_path):
    script = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "import dcgan, sys\n"
        "dcgan.main(sys.argv[1:])\n")
    flags = tiny_flags(tiny_celeba, tmp_path, "mirrored", "--epochs", "1", "--strategy", "mirrored")
    result = subprocess.run([sys.executable, "-c", script, *flags], cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "with 2 replica(s)" in result.stdout
    assert np.isfinite(np.load(tmp_path / "mirrored" / "d_losses.npy")).all()


TINY_GAN = {"image_size": 32, "filters": 4, "kernel": 4, "latent_dim": 8, "latent_distribution": "normal",
            "g_steps": 1, "label_smoothing": 0.0, "seed": 0, "learning_rate": 2e-4, "beta1": 0.5}


def softplus(x):
    return np.logaddexp(0.0, x)


class WeightSnapshots(keras.callbacks.Callback):
    """G's and D's weights before each step, and both after the last."""

    def __init__(self):
        super().__init__()
        self.before = []

    def on_train_batch_begin(self, step, logs=None):
        self.before.append((self.model.generator.get_weights(), self.model.discriminator.get_weights()))

    def on_train_end(self, logs=None):
        self.after = (self.model.generator.get_weights(), self.model.discriminator.get_weights())


def test_logged_step_losses_are_that_steps_losses(tmp_path):
    """log.csv's D and G losses of each step, against the losses computed by hand (softplus of the logits) from
    the weights that step started with and the fixed z and real batch it saw."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, 8)).astype(np.float32)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    gan = dcgan.build_gan(TINY_GAN)
    gan._latent = lambda batch_size: tf.constant(z)
    data_prep.atomic_write_bytes(str(tmp_path / "log.csv"), b"epoch,step,d_loss,g_loss,d_real,d_fake\n")
    history = {"d_losses": [], "g_losses": [], "d_real": [], "d_fake": []}
    snapshots = WeightSnapshots()
    recorder = dcgan.run_recorder(gan, str(tmp_path), fixed_z=z, history=history)
    gan.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=1, callbacks=[snapshots, recorder],
            verbose=0, shuffle=False)
    logged = runs.read_step_log(tmp_path)
    assert len(logged) == 3
    generator, discriminator = dcgan.build_network(TINY_GAN, "generator"), dcgan.build_network(TINY_GAN,
                                                                                              "discriminator")
    weights = snapshots.before + [snapshots.after]
    for step in range(3):
        generator.set_weights(weights[step][0])
        discriminator.set_weights(weights[step][1])
        fake = generator(z, training=True)
        real = data_prep.to_float(images[16 * step:16 * step + 16])
        real_logits = discriminator(real, training=True).numpy()[:, 0]
        fake_logits = discriminator(fake, training=True).numpy()[:, 0]
        d_loss = softplus(-real_logits).mean() + softplus(fake_logits).mean()
        discriminator.set_weights(weights[step + 1][1])  # G's loss is taken after D's update, on the same fakes
        g_loss = softplus(-discriminator(fake, training=True).numpy()[:, 0]).mean()
        np.testing.assert_allclose(logged["d_loss"][step], d_loss, rtol=1e-4)
        np.testing.assert_allclose(logged["g_loss"][step], g_loss, rtol=1e-4)
        np.testing.assert_allclose(logged["d_real"][step], (1 / (1 + np.exp(-real_logits))).mean(), rtol=1e-4)
    np.testing.assert_allclose(history["d_losses"][0], logged["d_loss"].mean(), rtol=1e-5)


def test_generator_average_follows_its_warmed_up_decay_each_step():
    # --ema 0.75, decay min(0.75, (1 + n) / (10 + n)) at the n-th update: 0.1, then 2/11. So after two steps the
    # trainable weights are 2/11 (0.1 w0 + 0.9 w1) + 9/11 w2 (w_t: G after step t); the average is what is sampled.
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    gan = dcgan.build_gan({**TINY_GAN, "ema": 0.75})
    assert gan.sampling_generator is gan.average_generator
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    snapshots = WeightSnapshots()
    gan.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=1, callbacks=[snapshots], verbose=0,
            shuffle=False)
    trainable = [index for index, weight in enumerate(gan.generator.weights) if weight.trainable]
    w0, w1, w2 = snapshots.before[0][0], snapshots.before[1][0], snapshots.after[0]
    averages = gan.average_generator.get_weights()
    for index in trainable:
        expected = 2 / 11 * (0.1 * w0[index] + 0.9 * w1[index]) + 9 / 11 * w2[index]
        np.testing.assert_allclose(averages[index], expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(averages[trainable[0]], w2[trainable[0]])  # the average lags the trained G


def test_average_generator_statistics_are_measured_on_its_own_outputs():
    # After the refresh, the first batch norm's moving variance is its input's variance over fresh codes (within
    # the noise of 64-image batches), not the 1.0 it started with: the projection, scaled by 30, makes it about
    # 8 x (0.02 x 30)^2 = 2.9.
    keras.mixed_precision.set_global_policy("float32")
    gan = dcgan.build_gan({**TINY_GAN, "ema": 0.9})
    average = gan.average_generator
    average.get_layer("project").kernel.assign(average.get_layer("project").kernel * 30.0)
    gan.refresh_average_statistics(batches=60, batch_size=64)
    probe = keras.Model(average.input, average.get_layer("project_bn").input)
    z = dcgan.latent_for_seed(123, 2048, TINY_GAN["latent_dim"])
    variance = keras.ops.convert_to_numpy(probe(z)).reshape(-1, probe.output.shape[-1]).var(axis=0)
    moving_variance = keras.ops.convert_to_numpy(average.get_layer("project_bn").moving_variance)
    assert variance.min() > 1.5  # far from the initial 1.0, so a missing refresh fails
    np.testing.assert_allclose(moving_variance, variance, rtol=0.2)


REPLICA_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras, dcgan, runs

config = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
z = tf.constant(rng.standard_normal((64, config["latent_dim"])).astype(np.float32))
images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
keras.utils.set_random_seed(0)
state = [keras.ops.convert_to_numpy(v) for v in dcgan.build_gan(config).state_variables()]


def latent(batch_size):  # each replica its own slice of one fixed global batch of z
    start = tf.distribute.get_replica_context().replica_id_in_sync_group * batch_size
    return tf.gather(z, tf.range(start, start + batch_size))


class Logs(keras.callbacks.Callback):
    def on_train_batch_end(self, step, logs=None):
        rows.append({name: float(logs[name]) for name in dcgan.STEP_COLUMNS})


results = {}
for name in ("none", "mirrored"):
    strategy = runs.make_strategy(name)
    with strategy.scope():
        gan = dcgan.build_gan(config, replicas=strategy.num_replicas_in_sync)
        for variable, value in zip(gan.state_variables(), state):
            variable.assign(value)
    gan._latent = latent
    rows = []
    gan.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=2, epochs=1, callbacks=[Logs()],
            verbose=0, shuffle=False)
    results[name] = {"replicas": strategy.num_replicas_in_sync, "steps": rows}
print(json.dumps(results))
"""


def test_losses_under_two_replicas_are_the_true_losses():
    """The same weights, z and global batch give the same logged losses on one replica and on two (each replica
    divides its loss by the global batch for the gradients; the log must not show that 1/R share)."""
    result = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, json.dumps(TINY_GAN)], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["none"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    for single, mirrored in zip(results["none"]["steps"], results["mirrored"]["steps"]):
        for name in dcgan.STEP_COLUMNS:
            np.testing.assert_allclose(mirrored[name], single[name], rtol=1e-4, err_msg=name)


def test_the_baseline_command_moved_to_evaluate(capsys):
    with pytest.raises(SystemExit):
        data_prep.run_cli(dcgan.main, ["baseline", "--kind", "noise"])
    assert "python evaluate.py baseline" in capsys.readouterr().err


class FixedLogits(keras.Model):
    """A stand-in D that returns the logits it is handed as the first pixel of each image."""

    def call(self, images, training=False):
        return images[:, 0, 0, :1]


def test_hinge_losses_match_hand_computed_values():
    gan = dcgan.DCGAN(keras.Sequential([keras.Input((1,))]), FixedLogits(), latent_dim=1, loss="hinge")
    real = tf.reshape(tf.constant([2.0, 0.5]), (2, 1, 1, 1))
    fake = tf.reshape(tf.constant([-2.0, 0.0]), (2, 1, 1, 1))
    d_losses, _, _ = gan._discriminator_losses(real, fake, training=True)
    # relu(1 - 2) + relu(1 - 2) = 0; relu(1 - 0.5) + relu(1 + 0) = 1.5
    np.testing.assert_allclose(d_losses.numpy(), [0.0, 1.5])
    np.testing.assert_allclose(gan._generator_losses(fake).numpy(), [2.0, 0.0])


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
    """D(x) = sum(w * x): grad_x D = w for every image, so the penalty is sum(w^2) = 1 + 4 + 9 = 14."""
    weights = tf.reshape(tf.constant([1.0, -2.0, 3.0]), (1, 1, 1, 3))
    linear = keras.Sequential([keras.Input((1, 1, 3)), keras.layers.Lambda(
        lambda x: tf.reduce_sum(x * weights, axis=[1, 2, 3])[:, None])])
    gan = dcgan.DCGAN(keras.Sequential([keras.Input((1,))]), linear, latent_dim=1, r1=2.0, r1_every=4)
    real = tf.random.normal((5, 1, 1, 3))
    np.testing.assert_allclose(gan._r1_penalty(real).numpy(), [14.0] * 5, rtol=1e-6)
    # lazily: gamma/2 * every * 14 = 56 on D step 0, nothing on D steps 1 to 3, again on step 4
    for step, expected in [(0, 56.0), (1, 0.0), (3, 0.0), (4, 56.0)]:
        gan.d_steps.assign(step)
        np.testing.assert_allclose(gan._lazy_r1(real).numpy(), [expected] * 5, rtol=1e-6)


def test_translation_moves_each_image_by_whole_pixels_with_zeros_coming_in():
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    moved = augmentations._shift_axis(tf.constant(image), tf.constant([1]), axis=1).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(moved, [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    moved = augmentations._shift_axis(tf.constant(image), tf.constant([-2]), axis=2).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(moved[0], [3, 4, 0, 0])


def test_cutout_zeroes_one_square_of_half_the_side_and_keeps_the_rest():
    images = tf.ones((64, 16, 16, 3))
    cut = augmentations.augment_cutout(images, keras.random.SeedGenerator(0)).numpy()
    holes = (cut[..., 0] == 0)
    for hole, image in zip(holes, cut):
        rows, columns = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
        assert len(rows) <= 8 and len(columns) <= 8  # clipped at the border, else 8 x 8
        assert hole.sum() == len(rows) * len(columns)  # one rectangle
        assert np.all(image[~hole] == 1.0)
    assert (holes.sum(axis=(1, 2)) == 64).mean() > 0.2  # squares well inside the image are whole


def test_diff_augment_passes_gradients_to_the_generated_images():
    images = tf.Variable(tf.random.uniform((4, 16, 16, 3), -1, 1))
    with tf.GradientTape() as tape:
        out = augmentations.diff_augment(images, augmentations.DIFF_AUGMENTS, keras.random.SeedGenerator(1))
        total = tf.reduce_sum(out)
    gradient = tape.gradient(total, images).numpy()
    assert out.shape == images.shape and np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_hinge_diff_augment_and_lazy_r1_train_and_resume(tiny_celeba, tmp_path):
    flags = tiny_flags(tiny_celeba, tmp_path, "tricks", "--loss", "hinge", "--diff-augment",
                       "color,translation,cutout", "--r1", "1", "--r1-every", "2")
    dcgan.main(flags + ["--epochs", "1"])
    dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "tricks", "--epochs", "2"])
    config = runs.read_config(tmp_path / "tricks")
    assert (config["loss"], config["diff_augment"], config["r1"], config["r1_every"]) == (
        "hinge", "color,translation,cutout", 1.0, 2)
    losses = np.load(tmp_path / "tricks" / "d_losses.npy")
    assert losses.shape == (2,) and np.isfinite(losses).all()


def test_fused_batch_norm_normalises_a_hand_computed_channel():
    # One channel holding 1 and 3 over a batch of two 1x1 images: mean 2, biased variance 1, so the batch's
    # outputs are -1 and +1 (over sqrt(1 + 1e-5)); the moving statistics move a tenth of the way: 0.2 and 0.9*1+0.1.
    layer = dcgan.FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    x = tf.constant([1.0, 3.0], shape=(2, 1, 1, 1))
    y = layer(x, training=True).numpy().ravel()
    np.testing.assert_allclose(y, [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.2], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [1.0], rtol=1e-6)  # 0.9 * 1 + 0.1 * 1
    np.testing.assert_allclose(layer(x, training=False).numpy().ravel(), (np.array([1.0, 3.0]) - 0.2) /
                               np.sqrt(1.0 + 1e-5), rtol=1e-6)


def test_fused_batch_norm_matches_keras_batch_norm_in_outputs_statistics_and_gradients():
    x = tf.constant(np.random.default_rng(0).normal(1.5, 2.0, (6, 5, 5, 4)), tf.float32)
    fused = dcgan.batch_norm("fused")
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="plain")
    fused.build(x.shape), plain.build(x.shape)
    plain.set_weights([w * 1.3 + 0.1 for w in fused.get_weights()])
    fused.set_weights(plain.get_weights())
    upstream = tf.constant(np.random.default_rng(1).normal(size=x.shape), tf.float32)
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)])
    for got, want in zip(*results):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_fused_batch_norm_keeps_bfloat16_and_has_a_second_derivative():
    with runs.dtype_policy("mixed_bfloat16"):
        layer = dcgan.batch_norm("bn")
    x = tf.random.normal((4, 3, 3, 2))
    assert layer(tf.cast(x, tf.bfloat16), training=True).dtype == tf.bfloat16
    layer32 = dcgan.batch_norm("bn32")
    with tf.GradientTape() as outer:  # R1's shape: the gradient of a gradient with respect to the weights
        with tf.GradientTape() as inner:
            inner.watch(x)
            out = tf.reduce_sum(tf.square(layer32(x, training=True)) * tf.range(2, dtype=tf.float32))
        penalty = tf.reduce_sum(tf.square(inner.gradient(out, x)))
    gradient = outer.gradient(penalty, layer32.gamma)
    assert gradient is not None and np.all(np.isfinite(gradient.numpy()))
