"""bench.py in its tiny mode: every field is written; FLOPs are counted from the layer shapes."""

import json

import keras
import numpy as np
import pytest

import bench
import dcgan
import makeover


def test_flops_of_the_paper_model_match_the_hand_count():
    # 64x64, filters 64, kernel 4: D convs 6.3 + 3 x 67.1 MFLOP, G the mirror image; 3 F_G + 9 F_D per step.
    generator = dcgan.build_generator(image_size=64, filters=64, kernel_size=4)
    discriminator = dcgan.build_discriminator(image_size=64, filters=64, kernel_size=4)
    assert bench.model_flops(discriminator) == pytest.approx(2 * (32 * 32 * 64 * 16 * 3 + 3 * 67108864 / 2) + 2 * 8192,
                                                             rel=1e-6)
    assert bench.training_step_flops(generator, discriminator) / 1e9 == pytest.approx(2.5, abs=0.1)


def test_tiny_bench_writes_every_field(tiny_celeba, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--tiny", "--data", str(tiny_celeba), "--out", str(out), "--precisions", "float32,mixed_bfloat16"])
    results = json.loads(out.read_text())
    assert set(results["training"]) == {"kernel4_float32", "kernel4_mixed_bfloat16", "kernel5_float32",
                                        "kernel5_mixed_bfloat16"}
    for figures in results["training"].values():
        assert figures["images_per_second"] > 0 and 0 < figures["fraction_of_peak"] < 1.5
        low, high = figures["window_spread"]  # the median window lies between the slowest and the fastest
        assert low <= figures["images_per_second"] <= high
    for field in ("generate_images_per_second", "jpeg_prepare_images_per_second", "pipeline_images_per_second",
                  "train_from_pipeline_images_per_second", "train_from_memory_images_per_second",
                  "startup_seconds", "projection_image_steps_per_second", "encoder_images_per_second",
                  "makeover_training_images_per_second", "makeover_apply_images_per_second"):
        assert results[field] > 0, field
    # Signed: a few tiny timed steps can come out faster from the pipeline than from memory.
    expected_cost = 100 * (1 - results["train_from_pipeline_images_per_second"]
                           / results["train_from_memory_images_per_second"])
    assert results["input_cost_percent"] == pytest.approx(expected_cost, abs=1e-6)
    assert results["peak_gflops"]["float32"] > 0 and results["machine"]["cores"] >= 1
    assert "| generation, kernel 4, batch 256, float32" in results["table"]
    assert results["bench_seconds"] > results["startup_seconds"]  # the whole bench includes its one-step run
    assert "| this bench, start to end (s) |" in results["table"]
    assert 0 < results["projection_fraction_of_peak"] < 1.5 and 0 < results["makeover_fraction_of_peak"] < 1.5
    assert "| projection by optimisation, kernel 4, batch 64 (image-steps/s) |" in results["table"]
    parts = results["section_seconds"]
    assert {"training", "projection and E", "makeover", "input cost", "start-up"} <= set(parts)
    assert sum(parts.values()) <= results["bench_seconds"] + 1  # the parts are inside the whole
    assert "| its parts (s) | matmul peak" in results["table"]
    for precision in ("float32", "mixed_bfloat16"):  # PyTorch's row, or how to get it
        peer = results["peer"][precision]
        if "missing" in peer:
            assert "peers/requirements.txt" in peer["missing"] and "not installed" in results["table"]
        else:  # rounds alternating with ours, the first with ours' own figure; the ratio is their median
            rounds = peer["rounds"]
            assert len(rounds) == bench.PEER_ROUNDS
            assert rounds[0][0] == results["training"][f"kernel4_{precision}"]["images_per_second"]
            ratios = sorted(ours / theirs for ours, theirs in rounds)
            assert peer["ratio"] == pytest.approx((ratios[1] + ratios[2]) / 2)  # four rounds: the middle two
            assert tuple(peer["ratio_spread"]) == pytest.approx((ratios[0], ratios[-1]))
            assert f"| PyTorch peer training, kernel 4, {precision}" in results["table"]


def test_the_makeover_step_flops_are_counted_as_the_dcgan_step():
    # Tiny translator and D (32x32 crop, filters 8): 3 F_T + 9 F_D from bench.model_flops, whose own count the
    # paper-model test checks by hand.
    figures = bench.makeover_speed(crop="dcgan", image_size=32, filters=8, batch_size=2, steps=1, warmup=1,
                                   apply_count=4)
    translator = makeover.build_translator(image_shape=(32, 32), filters=8)
    discriminator = makeover.build_discriminator(image_shape=(32, 32), filters=8)
    expected = 3 * bench.model_flops(translator) + 9 * bench.model_flops(discriminator)
    assert figures["gflop_per_image"] == pytest.approx(expected / 1e9)
    # the stem alone: 32x32 outputs x 8 filters x (3x3x3) inputs, two FLOPs per multiply-add
    assert bench.layer_flops(translator.get_layer("stem")) == 2 * 32 * 32 * 8 * 27


def test_window_rates_by_hand():
    # Steps end at 0, 1, 3, 4 and 8 s; after one warm-up step, windows of two steps last 3 s and 5 s.
    rate, (low, high) = bench.window_rates([0, 1, 3, 4, 8], warmup=1, window=2, batch_size=10)
    assert rate == pytest.approx(20 / 4) and (low, high) == pytest.approx((20 / 5, 20 / 3))


def test_the_peer_is_timed_when_pytorch_is_installed():
    pytest.importorskip("torch", reason="optional: pip install -r peers/requirements.txt")
    rate, (low, high) = bench.peer_training_rate(precision="float32", image_size=32, filters=8, batch_size=16,
                                                 steps=14, warmup=2, window=4)
    assert 0 < low <= rate <= high


@pytest.mark.parametrize("max_seconds, steps_run", [(None, 40), (0.0, 2 + 3 * 4)])
def test_step_timer_ends_the_fit_after_three_whole_windows_once_its_time_is_spent(max_seconds, steps_run):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    timer = bench.StepTimer(warmup=2, window=4, max_seconds=max_seconds)
    model.fit(np.zeros((40, 2)), np.zeros((40, 1)), batch_size=1, epochs=1, verbose=0, callbacks=[timer])
    assert len(timer.times) == steps_run


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        bench.main(["--tiny", "--precisions", "fp8"])


def test_onednn_profile_counts_each_primitive_per_step_by_hand():
    # Two steps: a convolution ran twice a step (2, 4, 6 and 100 ms: the median 5 keeps the first step's 100 out),
    # a reorder once (1 and 3 ms). Lines of other kinds (create, info) and other programs are ignored.
    conv = ("onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,backward_weights,"
            "src:bf16::blocked:acdb::f0,,alg:convolution_direct,mb64_ic256oc512_ih8oh4kh4sh2dh0ph1_iw8ow4kw4sw2dw0pw1,")
    reorder = "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16 dst:bf16,,,64x3x4x4,"
    lines = [conv + "100", conv + "2", conv + "4", conv + "6", reorder + "1", reorder + "3",
             "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit,forward,src,,alg,mb1,0.5",
             "onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2", "profile-rate 100.0"]
    profile = bench.onednn_profile(lines, steps=2)
    assert set(profile) == {("convolution", "jit_bf16:avx512_core_bf16", "backward_weights",
                             "mb64_ic256oc512_ih8oh4kh4sh2dh0ph1_iw8ow4kw4sw2dw0pw1"),
                            ("reorder", "jit:uni", "undef", "64x3x4x4")}
    assert profile[("reorder", "jit:uni", "undef", "64x3x4x4")] == pytest.approx((1.0, 2.0, 2.0))
    count, median, per_step = profile[next(key for key in profile if key[0] == "convolution")]
    assert (count, median, per_step) == pytest.approx((2.0, 5.0, 10.0))
