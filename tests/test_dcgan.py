"""dcgan.py on a tiny CelebA: 32x32 images, 8 filters, a few steps per epoch."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import data_prep
import dcgan
import keras  # after dcgan, which chooses the TensorFlow backend

REPO = os.path.dirname(os.path.abspath(dcgan.__file__))


def tiny_flags(data_dir, runs_dir, name, *extra):
    return ["--data", str(data_dir), "--image-size", "32", "--filters", "8", "--batch-size", "16",
            "--steps-per-epoch", "3", "--runs-dir", str(runs_dir), "--name", name,
            "--cache-dir", str(runs_dir / "cache"), *extra]


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
    config = dcgan.read_config(trained_run)
    assert config["seed"] == 0 and config["image_size"] == 32 and "tensorflow" in config["versions"]
    assert np.load(trained_run / "d_losses.npy").shape == (2,)
    assert np.load(trained_run / "g_losses.npy").shape == (2,)
    steps = dcgan.read_step_log(trained_run)
    assert list(steps.columns) == ["epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"]
    assert len(steps) == 6 and steps["epoch"].tolist() == [1, 1, 1, 2, 2, 2]
    assert ((steps["d_real"] > 0) & (steps["d_real"] < 1)).all()
    # The epoch loss is the mean of that epoch's steps.
    np.testing.assert_allclose(np.load(trained_run / "d_losses.npy")[0], steps["d_loss"][:3].mean(), rtol=1e-3)
    for epoch in (1, 2):
        grid = data_prep.read_image_uint8(str(trained_run / "samples" / f"epoch_{epoch:03d}.png"))
        assert grid.shape == (8 * 34 + 2, 8 * 34 + 2, 3)  # 8x8 tiles of 32 pixels with 2-pixel padding
    assert dcgan.saved_epochs(trained_run) == [1, 2]
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
    config = dcgan.read_config(copy)
    dcgan.main(["--resume", "--runs-dir", str(tmp_path / "runs"), "--name", "tiny", "--epochs", "3",
                "--cache-dir", str(tmp_path / "cache")])
    after = np.load(copy / "d_losses.npy")
    assert after.shape == (3,)
    np.testing.assert_array_equal(after[:2], before)
    np.testing.assert_array_equal(np.load(copy / "fixed_z.npy"), fixed_z)
    assert dcgan.read_step_log(copy)["epoch"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    gan = dcgan.build_gan(config)
    gan.load_state_arrays(dcgan.load_checkpoint(copy)[0])
    assert int(gan.d_optimizer.iterations) == 9 and int(gan.g_optimizer.iterations) == 9


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
    log = tmp_path / "killed" / "log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and any(line.startswith("2,") for line in log.read_text().splitlines()):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert np.load(tmp_path / "killed" / "d_losses.npy").shape == (1,)
    assert len(dcgan.load_checkpoint(tmp_path / "killed")[1]["d_losses"]) == 1
    dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "killed", "--epochs", "2",
                "--steps-per-epoch", "3"])
    assert np.load(tmp_path / "killed" / "d_losses.npy").shape == (2,)
    assert dcgan.read_step_log(tmp_path / "killed")["epoch"].max() == 2


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
    dcgan.main(["baseline", "--kind", kind, "--runs-dir", str(tmp_path), "--image-size", "32", "--filters", "8",
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
    before, _ = dcgan.load_checkpoint(tmp_path / "frozen")
    dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "frozen", "--epochs", "2",
                "--cache-dir", str(tmp_path / "cache")])
    after, _ = dcgan.load_checkpoint(tmp_path / "frozen")
    gan = dcgan.build_gan(dcgan.read_config(tmp_path / "frozen"))
    generator_count = len(gan.generator.weights)
    discriminator_count = len(gan.discriminator.weights)
    d_slice = slice(generator_count, generator_count + discriminator_count)
    for old, new in zip(before[d_slice], after[d_slice]):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(old, new) for old, new in zip(before[:generator_count], after[:generator_count]))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_celeba, tmp_path, monkeypatch, capsys):
    dcgan.main(tiny_flags(tiny_celeba, tmp_path, "nan", "--epochs", "1"))
    good = dcgan.load_checkpoint(tmp_path / "nan")[0]
    monkeypatch.setattr(dcgan.DCGAN, "_average", staticmethod(lambda per_example: per_example[0] * np.nan))
    with pytest.raises(SystemExit) as exit_info:
        dcgan.main(["--resume", "--runs-dir", str(tmp_path), "--name", "nan", "--epochs", "2"])
    assert exit_info.value.code == 1
    assert "non-finite loss at epoch 2, step 1" in capsys.readouterr().err
    assert np.load(tmp_path / "nan" / "d_losses.npy").shape == (1,)
    for old, new in zip(good, dcgan.load_checkpoint(tmp_path / "nan")[0]):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
    (["--image-size", "48"], "image size must be a power of two"),
    (["--filter", "Eyeglass"], "did you mean 'Eyeglasses'"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
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
