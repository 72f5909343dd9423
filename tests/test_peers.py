"""peers/torch_dcgan.py, PyTorch's reference DCGAN as a peer: its architecture against pytorch/examples' hand counts,
a tiny run at 32x32 on the tiny CelebA, exact resumption, and clean errors. PyTorch is optional
(peers/requirements.txt): without it these tests are skipped, except the check that no main script imports it."""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data_prep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_SCRIPTS = ("data_prep.py", "synthetic_celeba.py", "dcgan.py", "evaluate.py", "bench.py", "encoder.py",
                "facemath.py", "makeover.py")


def imported_at_load(path):
    """The modules a script imports when it is loaded: every import outside a function or class body."""
    def walk(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from (alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield node.module.split(".")[0]
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from walk(ast.iter_child_nodes(node))

    yield from walk(ast.parse(open(path).read(), filename=path).body)


def test_no_main_script_imports_torch_when_it_loads():
    # evaluate.py's optional FID network imports torch inside FidInception, only when --features fid is asked for.
    scripts = [name for name in MAIN_SCRIPTS if os.path.isfile(os.path.join(ROOT, name))]
    assert "evaluate.py" in scripts and "dcgan.py" in scripts
    for name in scripts:
        assert "torch" not in set(imported_at_load(os.path.join(ROOT, name))), name
    loaded = subprocess.run([sys.executable, "-c", "import sys, evaluate, bench, facemath; print('torch' in sys.modules)"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert loaded.stdout.strip() == "False", loaded.stderr[-500:]


sys.path.insert(0, os.path.join(ROOT, "peers"))
try:
    import torch
    import torch_dcgan
except ImportError:  # PyTorch is not installed: CI installs only requirements.txt
    torch = torch_dcgan = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is optional and not installed; "
                                 "`pip install -r peers/requirements.txt` runs the peer's tests")

BATCH = 16


@pytest.fixture
def like_run(tiny_celeba, tmp_path):
    """A stand-in for a dcgan.py run at 32x32 on the tiny CelebA that trained 3 steps of 16 (its config.json and
    log.csv are all the peer reads)."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    config = {"data": tiny_celeba, "filter": None, "image_size": 32, "crop_size": 108, "limit": None,
              "cache_dir": str(tmp_path / "cache"), "flip": True, "batch_size": BATCH, "kernel": 4}
    (run / "config.json").write_text(json.dumps(config))
    (run / "log.csv").write_text("epoch,step,d_loss,g_loss,d_real,d_fake\n" + "1,1,1,1,0.5,0.5\n" * 3)
    return run


def peer(like_run, out, *extra):
    torch_dcgan.main(["--like", str(like_run), "--out", str(out), "--filters", "8", "--batch-size", str(BATCH),
                      "--threads", "1", "--quiet", *extra])
    return out


@needs_torch
def test_the_64x64_networks_have_pytorch_examples_shapes_and_parameter_counts():
    generator = torch_dcgan.build_generator(image_size=64)
    discriminator = torch_dcgan.build_discriminator(image_size=64)
    # By hand: G's transposed convolutions 100*512*16 + 512*256*16 + 256*128*16 + 128*64*16 + 64*3*16 = 3,574,784
    # and batch norms 2 * (512 + 256 + 128 + 64) = 1,920; D's convolutions 3*64*16 + 64*128*16 + 128*256*16
    # + 256*512*16 + 512*16 = 2,763,776 and batch norms 2 * (128 + 256 + 512) = 1,792.
    assert sum(p.numel() for p in generator.parameters()) == 3_576_704
    assert sum(p.numel() for p in discriminator.parameters()) == 2_765_568
    images = generator(torch.randn(2, 100, 1, 1))
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    assert discriminator(images).shape == (2,)
    assert all(module.bias is None for module in [*generator.modules(), *discriminator.modules()]
               if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))


@needs_torch
def test_weights_start_as_the_paper_says():
    generator, discriminator, _, _ = torch_dcgan.build_peer({"seed": 0, "latent_dim": 100, "image_size": 64,
                                                            "filters": 64, "beta1": 0.5, "learning_rate": 2e-4})
    convolution = discriminator[2].weight.detach()
    assert float(convolution.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(convolution.std()) == pytest.approx(0.02, rel=0.02)
    scale = generator[1].weight.detach()
    assert float(scale.mean()) == pytest.approx(1.0, abs=0.005) and float(generator[1].bias.detach().abs().max()) == 0.0


@needs_torch
def test_a_tiny_run_trains_as_many_image_steps_as_the_run_it_copies_and_writes_samples(like_run, tmp_path):
    out = peer(like_run, tmp_path / "peer", "--samples", "10")
    config = json.loads((out / "config.json").read_text())
    assert config["image_steps"] == 3 * BATCH and config["steps"] == 3 and config["finished"]
    assert config["image_size"] == 32 and config["flip"] is True and config["train_images"] == 160
    assert config["threads"] == 1 and config["versions"]["torch"] == torch.__version__ and config["train_seconds"] > 0
    log = (out / "log.csv").read_text().splitlines()
    assert log[0] == "step,d_loss,g_loss,d_real,d_fake" and len(log) == 4
    assert all(np.isfinite([float(value) for value in line.split(",")]).all() for line in log[1:])
    samples = sorted(os.listdir(out / "samples"))
    assert samples == [f"{index:06d}.png" for index in range(10)]
    assert data_prep.read_image_uint8(str(out / "samples" / samples[0])).shape == (32, 32, 3)
    assert data_prep.read_image_uint8(str(out / "grid.png")).shape[0] > 32
    # The same sample seed gives the same images: the PNGs are what sample() makes.
    generator = torch_dcgan.build_generator(image_size=32, filters=8)
    generator.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["generator"])
    again = torch_dcgan.sample(generator, count=10, seed=0)
    np.testing.assert_array_equal(again[3], data_prep.read_image_uint8(str(out / "samples" / samples[3])))


@needs_torch
def test_samples_as_npy_for_evaluate(like_run, tmp_path):
    out = peer(like_run, tmp_path / "peer", "--image-steps", str(BATCH), "--samples", "5", "--format", "npy")
    array = np.load(out / "samples.npy")
    assert array.dtype == np.uint8 and array.shape == (5, 32, 32, 3) and not (out / "samples").exists()


@needs_torch
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(like_run, tmp_path):
    # 160 images in batches of 16: 10 steps an epoch, so 12 steps cross into a second epoch's shuffle.
    whole = peer(like_run, tmp_path / "whole", "--image-steps", str(12 * BATCH), "--samples", "0")
    halves = peer(like_run, tmp_path / "halves", "--image-steps", str(7 * BATCH), "--samples", "0")
    peer(like_run, halves, "--image-steps", str(12 * BATCH), "--samples", "0", "--resume")
    first, second = (torch.load(path / "checkpoint.pt", weights_only=True) for path in (whole, halves))
    assert first["step"] == second["step"] == 12
    for key, value in first["generator"].items():
        torch.testing.assert_close(second["generator"][key], value, rtol=1e-5, atol=1e-6)
    assert (whole / "log.csv").read_text().splitlines()[1:8] == (halves / "log.csv").read_text().splitlines()[1:8]
    assert len((halves / "log.csv").read_text().splitlines()) == 13


@needs_torch
def test_batches_cover_each_epoch_once_and_reshuffle():
    first = [torch_dcgan.batch_indices(step, count=50, batch_size=16, seed=0) for step in range(3)]
    assert len(np.unique(np.concatenate(first))) == 48  # 3 whole batches, the last 2 images dropped
    assert not np.array_equal(torch_dcgan.batch_indices(3, count=50, batch_size=16, seed=0), first[0])


@needs_torch
def test_bad_input_is_a_clean_error(like_run, tmp_path, capsys):
    baseline = tmp_path / "noise"
    baseline.mkdir()
    (baseline / "config.json").write_text(json.dumps({"kind": "noise", "image_size": 32}))
    cases = [(["--like", str(baseline), "--out", str(tmp_path / "a")], "noise baseline"),
             (["--like", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")], "no config.json"),
             (["--like", str(like_run), "--out", str(tmp_path / "c"), "--image-steps", "3"], "at least one batch"),
             (["--like", str(like_run), "--out", str(tmp_path / "d"), "--resume"], "no checkpoint.pt")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            data_prep.run_cli(torch_dcgan.main, argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and message in error, (argv, error)


@needs_torch
def test_a_second_run_into_the_same_folder_is_refused(like_run, tmp_path):
    out = peer(like_run, tmp_path / "peer", "--image-steps", str(BATCH), "--samples", "0")
    with pytest.raises(ValueError, match="already holds a peer run"):
        peer(like_run, out, "--image-steps", str(BATCH))
