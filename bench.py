"""Measure the DCGAN trainer, the generator and the input pipeline on this machine, against its own peak.

Every figure is the median of several timed windows after a warm-up. Training is counted in images per second
at the paper's size (64x64, filters 64, batch 64) with 4x4 and 5x5 kernels, in float32 and mixed bfloat16; the
FLOPs of one training step are counted from the layer shapes and compared with the machine's practical peak,
measured with a large matrix multiply. With PyTorch installed (peers/requirements.txt), PyTorch's reference DCGAN
step (peers/torch_dcgan.py, 4x4 kernels) is timed right after ours in the same precision and sizes, and the
ratio of the two printed; without it, its row says how to get it.

Usage:
    python bench.py                       # the full table in the precision dcgan.py picks here, bench.json
    python bench.py --precisions float32,mixed_bfloat16   # both precisions side by side (about twice as long)
    python bench.py --with-tests          # also time the test suite (about 5 more minutes)
    python bench.py --tiny --out /tmp/b.json   # seconds: small shapes, for the tests
    python bench.py editor --run runs/demo --seconds 30 --clients 8   # the face editor under load
    python bench.py profile --precision mixed_bfloat16   # oneDNN's log of our step and PyTorch's, per primitive
"""

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

import data_prep
import dcgan
import makeover
import runs

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

TARGETS = {  # the speed targets for a 2-core machine
    "train_kernel4_images_per_second": 110.0,
    "train_kernel5_images_per_second": 75.0,
    "generate_images_per_second": 1500.0,
    "jpeg_prepare_images_per_second": 3000.0,
}
PIPELINE_COST_TARGET_PERCENT = 3.0
STEP_FRACTION_TARGET = 0.8  # projection's and the makeover step's fraction of peak over the DCGAN step's, at least
TRAINING_WINDOW_SECONDS = 20.0  # timed training per figure before it stops at a whole window (three at least)
PEER_ROUNDS = 4  # timings of ours and the peer's, alternating: the ratio is their median
PEER_ROUND_SECONDS = 8.0  # timed windows per side in the rounds after the first


# ----------------------------------------------------------------------------------------------------------
# FLOPs and peak


def layer_flops(layer):
    """Forward multiply-adds x 2 for one image through a Dense, Conv2D or Conv2DTranspose layer."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        height, width, channels = layer.input.shape[1:]
        return 2 * height * width * channels * np.prod(layer.kernel_size) * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        height, width, channels = layer.output.shape[1:]
        return 2 * height * width * channels * np.prod(layer.kernel_size) * layer.input.shape[-1]
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def model_flops(model):
    return int(sum(layer_flops(layer) for layer in model.layers))


def training_step_flops(generator, discriminator):
    """FLOPs per image of one step of dcgan.DCGAN: G forward once, D forward three times (real, fake for D,
    fake for G), a backward pass costing twice its forward for D three times and G once: 3 F_G + 9 F_D."""
    return 3 * model_flops(generator) + 9 * model_flops(discriminator)


def timed_windows(function, *, windows=5, warmup=1):
    """Median seconds of `function()` over `windows` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(windows):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def matmul_peak(dtype, *, size=2048, repeats=8, windows=5):
    """Practical peak GFLOP/s of a large matrix multiply in `dtype`."""
    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size), stddev=size ** -0.5), dtype)  # keeps a chain's scale steady

    @tf.function
    def multiply():
        # A chain, each product feeding the next, so that no product can be skipped or computed only once.
        product = a
        for _ in range(repeats):
            product = tf.matmul(product, b)
        return tf.reduce_sum(tf.cast(product, tf.float32))

    seconds = timed_windows(lambda: multiply().numpy(), windows=windows)
    return 2 * size ** 3 * repeats / seconds / 1e9


# ----------------------------------------------------------------------------------------------------------
# Training, generation and input


class StepTimer(keras.callbacks.Callback):
    """The end time of every step; once `min_windows` windows of `window` steps after `warmup` are timed and
    `max_seconds` have passed since the warm-up, it ends the fit at the next whole window, so that a slow machine
    times fewer windows instead of taking longer (the figure is stable by then; the spread says how stable)."""

    def __init__(self, *, warmup=1, window=1, min_windows=3, max_seconds=None):
        super().__init__()
        for name, value in (("warmup", warmup), ("window", window), ("min_windows", min_windows)):
            if value < 1:
                raise ValueError(f"StepTimer's {name} must be 1 or more, got {value}")
        self.times = []
        self.warmup, self.window, self.min_windows, self.max_seconds = warmup, window, min_windows, max_seconds

    def on_train_batch_end(self, step, logs=None):
        self.times.append(time.perf_counter())
        timed = len(self.times) - self.warmup
        if (self.max_seconds is not None and timed >= self.min_windows * self.window and timed % self.window == 0
                and self.times[-1] - self.times[self.warmup - 1] > self.max_seconds):
            self.model.stop_training = True


def training_rate(*, kernel, precision, image_size=64, filters=64, batch_size=64, steps=45, warmup=5,
                  window=8, dataset=None, max_seconds=None, gan=None):
    """Median images/s of DCGAN training steps (windows of `window` steps after `warmup` steps, at most `steps`
    in all, fewer once `max_seconds` of timed windows are spent but never under three windows), the model, and
    the slowest and fastest window's images/s (the spread the median hides). Pass the returned `gan` back to time
    the same model again without building and tracing it anew."""
    if gan is None:
        config = {"image_size": image_size, "filters": filters, "kernel": kernel, "latent_dim": 100,
                  "latent_distribution": "normal", "g_steps": 1, "label_smoothing": 0.0, "seed": 0,
                  "learning_rate": 2e-4, "beta1": 0.5}
        with runs.dtype_policy(precision):
            gan = dcgan.build_gan(config)
    if dataset is None:  # one batch held in memory: the model's speed without any input cost
        batch = tf.random.uniform((batch_size, image_size, image_size, 3), -1.0, 1.0)
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
    timer = StepTimer(warmup=warmup, window=window, max_seconds=max_seconds)
    gan.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    rate, spread = window_rates(timer.times, warmup=warmup, window=window, batch_size=batch_size)
    return rate, gan, spread


PEER_HINT = "pip install -r peers/requirements.txt adds PyTorch's reference step beside ours"


def window_rates(times, *, warmup, window, batch_size):
    """(median images/s, (slowest, fastest) window's images/s) from the times at which each step ended."""
    durations = np.diff(np.asarray(times)[warmup - 1:])
    windows = [durations[start:start + window].sum() for start in range(0, len(durations) - window + 1, window)]
    rates = batch_size * window / np.asarray(windows)
    return batch_size * window / float(np.median(windows)), (float(rates.min()), float(rates.max()))


def peer_step(*, precision, image_size=64, filters=64, batch_size=64):
    """PyTorch's reference DCGAN step (peers/torch_dcgan.py: pytorch/examples' model, 4x4 kernels) as a function of
    no arguments: channels-last tensors, bfloat16 autocast for mixed_bfloat16, one batch held in memory. None where
    PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
    import torch_dcgan

    settings = {"seed": 0, "latent_dim": 100, "image_size": image_size, "filters": filters, "beta1": 0.5,
                "learning_rate": 2e-4}
    generator, discriminator, g_optimizer, d_optimizer = torch_dcgan.build_peer(settings)
    generator, discriminator = (net.to(memory_format=torch.channels_last) for net in (generator, discriminator))
    real = (torch.rand(batch_size, 3, image_size, image_size) * 2 - 1).to(memory_format=torch.channels_last)
    noise = torch.randn(batch_size, 100, 1, 1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "mixed_bfloat16"):
            torch_dcgan.train_step(generator, discriminator, g_optimizer, d_optimizer, real, noise)
    return step


def peer_training_rate(*, precision, image_size=64, filters=64, batch_size=64, steps=45, warmup=5, window=8,
                       max_seconds=None, step=None):
    """PyTorch's reference step (peer_step, or the `step` it returned) timed as training_rate times ours. Returns
    (median images/s, (slowest, fastest) window), or None where PyTorch is not installed."""
    step = step or peer_step(precision=precision, image_size=image_size, filters=filters, batch_size=batch_size)
    if step is None:
        return None
    times, started = [], None
    for number in range(steps):
        step()
        times.append(time.perf_counter())
        if number == warmup - 1:
            started = times[-1]
        timed_windows = (number + 1 - warmup) // window
        if max_seconds and started and timed_windows >= 3 and times[-1] - started > max_seconds:
            break
    return window_rates(times, warmup=warmup, window=window, batch_size=batch_size)


def generation_rate(generator, *, batch_size=256, windows=5):
    z = tf.random.normal((batch_size, generator.input_shape[-1]))
    predict = tf.function(lambda codes: generator(codes, training=False))
    return batch_size / timed_windows(lambda: predict(z).numpy(), windows=windows)


def edit_milliseconds(generator, *, windows=20):
    """Milliseconds of one interactive face-math edit: a known code plus a direction, through G, written as a PNG
    (edit_to_png)."""
    code, direction = dcgan.latent_for_seed(0, 2, generator.input_shape[-1])
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "edit.png")
        return 1000 * timed_windows(lambda: edit_to_png(generator, code, direction, 1.5, path),
                                    windows=windows, warmup=3)


def projection_figures(*, kernel, precision, image_size=64, filters=64, batch_size=64, steps=10, peak):
    """Projection by optimisation (encoder.project): image-steps/s on one batch, and its fraction of `peak`. A step
    is G and D forward, then the gradient back to z only (no weight gradients): about 2 (F_G + F_D) per image.
    Also E's forward pass (encoder.build_encoder), images/s at batch 256."""
    import encoder  # here: bench's own figures start without the encoder stack

    with runs.dtype_policy(precision):
        generator = dcgan.build_generator(image_size=image_size, filters=filters, kernel_size=kernel)
        discriminator = dcgan.build_discriminator(image_size=image_size, filters=filters, kernel_size=kernel)
        network = encoder.build_encoder(image_size=image_size, filters=filters, kernel_size=kernel)
    images = np.random.default_rng(0).integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
    seconds = timed_windows(lambda: encoder.project(generator, discriminator, images, steps=steps,
                                                    batch_size=batch_size, progress=False), windows=3)
    rate = batch_size * steps / seconds
    achieved = rate * 2 * (model_flops(generator) + model_flops(discriminator)) / 1e9
    batch = tf.constant(images[:1].repeat(256 if batch_size >= 64 else batch_size, axis=0), tf.float32) / 127.5 - 1
    forward = tf.function(lambda x: network(x, training=False))
    encode_rate = len(batch) / timed_windows(lambda: forward(batch).numpy(), windows=5)
    return {"projection_image_steps_per_second": rate, "projection_fraction_of_peak": achieved / peak,
            "encoder_images_per_second": encode_rate}


def edit_to_png(generator, code, vector, strength, path):
    """One interactive edit (timed by edit_milliseconds): G(code + strength x vector) written as a PNG."""
    image = dcgan.generate(generator, (np.asarray(code) + strength * np.asarray(vector))[None].astype(np.float32))
    data_prep.write_image(path, image[0])
    return path


def makeover_speed(*, crop="makeover", image_size=64, filters=64, batch_size=16, steps=20, warmup=3, apply_count=512,
          precision="float32", seed=0):
    """{"training_images_per_s", "apply_images_per_s", "gflop_per_image"}: source faces per second through
    train_step (D and G updated, default losses) and through the translator alone (batches of 256), on random uint8
    faces held in memory, each timed after `warmup` untimed steps (tracing); and the FLOPs of one training step per
    source face, counted as the DCGAN step's: the translator forward once and D three times, each backward twice
    its forward for D's two passes and the translator, 3 F_T + 9 F_D."""
    shape = data_prep.crop_output_shape(crop, image_size)
    config = {"crop": crop, "image_size": image_size, "filters": filters, "cycle_weight": 0.0,
              "identity_weight": 0.0, "anneal_start": 0, "anneal_steps": 2000, "anneal_end": 1.0,
              "learning_rate": 2e-4, "beta1": 0.5}
    keras.utils.set_random_seed(seed)
    faces = np.random.default_rng(seed).integers(0, 256, (2, batch_size, *shape, 3), dtype=np.uint8)
    pairs = tf.data.Dataset.from_tensors((faces[0], faces[1])).repeat()
    with runs.dtype_policy(precision):
        gan = makeover.build_makeover(config)
    gan.fit(pairs, epochs=1, steps_per_epoch=warmup, verbose=0)
    started = time.perf_counter()
    gan.fit(pairs, epochs=1, steps_per_epoch=steps, verbose=0)
    training = steps * batch_size / (time.perf_counter() - started)
    images = np.random.default_rng(seed + 1).integers(0, 256, (apply_count, *shape, 3), dtype=np.uint8)
    makeover.translate(gan.translator, images[:256])
    started = time.perf_counter()
    makeover.translate(gan.translator, images)
    return {"training_images_per_s": training, "apply_images_per_s": apply_count / (time.perf_counter() - started),
            "gflop_per_image": (3 * model_flops(gan.translator) + 9 * model_flops(gan.discriminator)) / 1e9}


def makeover_figures(*, precision, tiny, peak):
    """The makeover translator's training and apply images/s (makeover_speed, its default sizes), and its training
    step's fraction of `peak`."""
    sizes = {"image_size": 32, "filters": 8, "steps": 4, "apply_count": 64} if tiny else {}
    figures = makeover_speed(precision=precision, **sizes)
    return {"makeover_training_images_per_second": figures["training_images_per_s"],
            "makeover_apply_images_per_second": figures["apply_images_per_s"],
            "makeover_fraction_of_peak": figures["training_images_per_s"] * figures["gflop_per_image"] / peak}


def jpeg_rate(celeba, *, count=2000, workers=2, image_size=64):
    """Decode + crop + resize images/s of the shared loader on `count` JPEGs (page cache warm)."""
    names = list(celeba.attributes.index[:count])
    paths = [os.path.join(celeba.image_dir, name) for name in names]
    output = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    options = {"crop": "dcgan", "image_size": image_size, "crop_size": 108}
    seconds = timed_windows(lambda: data_prep.decode_files(paths, output, crop_options=options, workers=workers,
                                                           progress=False), windows=3)
    return len(paths) / seconds


def pipeline_rate(images, *, batch_size=64, batches=200):
    """Images/s that the cached tf.data pipeline delivers on its own."""
    dataset = data_prep.make_dataset(images, batch_size=batch_size, flip=True, scale=False).repeat()
    iterator = iter(dataset)

    def pull():
        for _ in range(batches):
            next(iterator)

    return batch_size * batches / timed_windows(pull, windows=3)


def startup_seconds(data_dir, *, image_size=64, filters=64):
    """Seconds from `python dcgan.py` to the end of its first training step (a one-step run, its saving
    included; the cache is warm)."""
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        subprocess.run([sys.executable, "dcgan.py", "--data", data_dir, "--epochs", "1", "--steps-per-epoch", "1",
                        "--image-size", str(image_size), "--filters", str(filters), "--kernel", "4",
                        "--runs-dir", runs], check=True, capture_output=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
        return time.perf_counter() - started


def test_suite_seconds():
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], capture_output=True,
                            cwd=os.path.dirname(os.path.abspath(__file__)))
    return time.perf_counter() - started, result.returncode == 0


# ----------------------------------------------------------------------------------------------------------
# The whole bench


@contextlib.contextmanager
def timed_section(results, name):
    """Records the seconds a part of the bench took in results["section_seconds"], to see where its time goes."""
    started = time.perf_counter()
    yield
    results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)


def run_bench(*, data_dir=None, tiny=False, with_tests=False, precisions=("float32", "mixed_bfloat16"),
              log=print):
    """Measure everything; returns a dict of figures (the JSON that bench.py writes), with the seconds of each
    part in "section_seconds"."""
    sizes = {"image_size": 32, "filters": 8, "batch_size": 16, "steps": 14, "warmup": 2, "window": 4} if tiny \
        else {"image_size": 64, "filters": 64, "batch_size": 64, "steps": 45, "warmup": 5, "window": 8,
              "max_seconds": TRAINING_WINDOW_SECONDS}
    data_dir = data_prep.resolve_data_dir(data_dir)
    celeba = data_prep.read_celeba(data_dir)
    results = {"machine": machine_description(), "tiny": tiny, "data": data_dir, "training": {}}
    with timed_section(results, "matmul peak"):
        peaks = {"float32": matmul_peak(tf.float32, size=256 if tiny else 2048),
                 "mixed_bfloat16": matmul_peak(tf.bfloat16, size=256 if tiny else 2048)}
    results["peak_gflops"] = peaks
    log(f"matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['mixed_bfloat16']:.0f} GFLOP/s")
    with timed_section(results, "training"):
        bench_training(results, precisions, sizes, log=log)
    with timed_section(results, "generation and edit"):
        bench_generation(results, precisions, sizes, tiny=tiny, log=log)
    results["step_precision"] = precisions[0]  # projection's and the makeover's
    with timed_section(results, "projection and E"):
        bench_projection(results, precisions[0], sizes, tiny=tiny, log=log)
    with timed_section(results, "makeover"):
        results.update(makeover_figures(precision=precisions[0], tiny=tiny, peak=results["peak_gflops"][precisions[0]]))
    log(f"makeover translator, {precisions[0]}: training {results['makeover_training_images_per_second']:.1f} "
        f"images/s ({100 * results['makeover_fraction_of_peak']:.0f}% of peak, "
        f"{of_training(results, 'makeover_fraction_of_peak', precisions[0]):.2f} of the DCGAN step's fraction), "
        f"apply {results['makeover_apply_images_per_second']:.0f} images/s")
    with timed_section(results, "JPEG"):
        results["jpeg_prepare_images_per_second"] = jpeg_rate(celeba, count=min(len(celeba.attributes),
                                                                                200 if tiny else 2000))
    log(f"JPEG decode, crop, resize: {results['jpeg_prepare_images_per_second']:.0f} images/s")
    with timed_section(results, "input cost"):
        results.update(input_cost(data_dir, sizes, log=log))
    with timed_section(results, "start-up"):
        results["startup_seconds"] = startup_seconds(data_dir, image_size=sizes["image_size"],
                                                     filters=sizes["filters"])
    log(f"command to first training step: {results['startup_seconds']:.1f} s")
    if with_tests:
        results["test_suite_seconds"], results["test_suite_passed"] = test_suite_seconds()
        log(f"test suite: {results['test_suite_seconds']:.0f} s")
    results["targets"] = check_targets(results) if not tiny else {}
    return results


def bench_training(results, precisions, sizes, *, log=print):
    """Training images/s with 4x4 and 5x5 kernels in each precision, and their fraction of that precision's peak."""
    for kernel in (4, 5):
        for precision in precisions:
            rate, gan, spread = training_rate(kernel=kernel, precision=precision, **sizes)
            flops = training_step_flops(gan.generator, gan.discriminator)
            achieved = rate * flops / 1e9
            peak = results["peak_gflops"][precision]
            results["training"][f"kernel{kernel}_{precision}"] = {
                "images_per_second": rate, "gflop_per_image": flops / 1e9, "achieved_gflops": achieved,
                "fraction_of_peak": achieved / peak, "window_spread": spread}
            log(f"training kernel {kernel} {precision}: {rate:.1f} images/s (windows {spread[0]:.1f} to "
                f"{spread[1]:.1f}; {achieved:.0f} GFLOP/s, {100 * achieved / peak:.0f}% of peak)")
            if kernel == 4:  # the peer's model has 4x4 kernels: timed right after ours, nothing else running
                bench_peer(results, precision, sizes, ours=rate, gan=gan, flops=flops, log=log)


def bench_peer(results, precision, sizes, *, ours, gan, flops, rounds=PEER_ROUNDS, log=print):
    """The PyTorch peer's step in the same precision and sizes, timed in `rounds` that alternate with ours (the
    first pairs ours just timed with the peer's full timing, the others are shorter): on a shared 2-core machine
    the speed drifts by 10-20% within a minute, so one pair can tell a 0.8 from a 1.1. The ratio is the median of
    the rounds' ratios, shown with the lowest and highest."""
    step = peer_step(precision=precision, image_size=sizes["image_size"], filters=sizes["filters"],
                     batch_size=sizes["batch_size"])
    if step is None:
        results.setdefault("peer", {})[precision] = {"missing": PEER_HINT}
        log(f"PyTorch peer, kernel 4 {precision}: not installed ({PEER_HINT})")
        return
    rate, spread = peer_training_rate(precision=precision, step=step, **sizes)
    pairs = [(ours, rate)]
    short = {**sizes, "max_seconds": PEER_ROUND_SECONDS} if sizes.get("max_seconds") else sizes
    for _ in range(rounds - 1):
        again = training_rate(kernel=4, precision=precision, gan=gan, **short)[0]
        pairs.append((again, peer_training_rate(precision=precision, step=step, **short)[0]))
    ratios = [mine / theirs for mine, theirs in pairs]
    ratio, peer_rate = float(np.median(ratios)), float(np.median([theirs for _, theirs in pairs]))
    results.setdefault("peer", {})[precision] = {
        "images_per_second": peer_rate, "window_spread": spread, "ratio": ratio,
        "ratio_spread": (min(ratios), max(ratios)), "rounds": pairs,
        "fraction_of_peak": peer_rate * flops / 1e9 / results["peak_gflops"][precision]}
    log(f"PyTorch peer, kernel 4 {precision}: {peer_rate:.1f} images/s (median of {rounds} rounds alternating with "
        f"ours); ours / peer = {ratio:.2f} (rounds {min(ratios):.2f} to {max(ratios):.2f}; "
        + ", ".join(f"{mine:.0f}/{theirs:.0f}" for mine, theirs in pairs) + ")")


def bench_generation(results, precisions, sizes, *, tiny, log=print):
    """Generation images/s per precision, and one face-math edit's milliseconds (with the last generator)."""
    results["generation"] = {}
    for precision in precisions:
        with runs.dtype_policy(precision):
            generator = dcgan.build_generator(image_size=sizes["image_size"], filters=sizes["filters"], kernel_size=4)
        results["generation"][precision] = generation_rate(generator, batch_size=64 if tiny else 256)
        log(f"generation, kernel 4, {precision}: {results['generation'][precision]:.0f} images/s")
    results["generate_images_per_second"] = max(results["generation"].values())
    results["facemath_edit_ms"] = edit_milliseconds(generator)
    log(f"face-math edit, known code to PNG: {results['facemath_edit_ms']:.1f} ms")


def bench_projection(results, precision, sizes, *, tiny, log=print):
    """Projection's image-steps/s and fraction of peak beside training's (same kernel and precision), E forward."""
    results.update(projection_figures(kernel=4, precision=precision, image_size=sizes["image_size"],
                                      filters=sizes["filters"], batch_size=sizes["batch_size"],
                                      steps=3 if tiny else 10, peak=results["peak_gflops"][precision]))
    log(f"projection, kernel 4, {precision}: {results['projection_image_steps_per_second']:.1f} image-steps/s "
        f"({100 * results['projection_fraction_of_peak']:.0f}% of peak, "
        f"{of_training(results, 'projection_fraction_of_peak', precision):.2f} of the DCGAN step's fraction); "
        f"E forward {results['encoder_images_per_second']:.0f} images/s")


def of_training(results, field, precision):
    """A step's fraction of the peak over the DCGAN training step's (kernel 4, same precision): the speed targets
    ask projection and the makeover step for at least 0.8 of it."""
    return results[field] / results["training"][f"kernel4_{precision}"]["fraction_of_peak"]


def input_cost(data_dir, sizes, *, log=print):
    """Cached pipeline images/s, and the share of a training epoch that the pipeline costs (training fed by
    it against training on one batch held in memory), with the precision the README's demo uses."""
    prepared = data_prep.prepare_images(data_dir, split="train", image_size=sizes["image_size"], progress=False)
    pipeline = pipeline_rate(prepared.images, batch_size=sizes["batch_size"], batches=20 if sizes["steps"] < 20 else 200)
    log(f"cached input pipeline: {pipeline:.0f} images/s")
    dataset = data_prep.make_dataset(prepared.images, batch_size=sizes["batch_size"], flip=True, scale=False).repeat()
    fed = training_rate(kernel=4, precision="float32", dataset=dataset, **sizes)[0]
    held = training_rate(kernel=4, precision="float32", **sizes)[0]
    cost = 100.0 * (1.0 - fed / held)  # negative: the two runs differ by less than their noise
    log(f"training fed by the pipeline {fed:.1f} images/s, from memory {held:.1f}: input costs {cost:.1f}%")
    return {"pipeline_images_per_second": pipeline, "train_from_pipeline_images_per_second": fed,
            "train_from_memory_images_per_second": held, "input_cost_percent": cost}


def check_targets(results):
    best = {kernel: max(results["training"][f"kernel{kernel}_{precision}"]["images_per_second"]
                        for precision in ("float32", "mixed_bfloat16")
                        if f"kernel{kernel}_{precision}" in results["training"]) for kernel in (4, 5)}
    measured = {"train_kernel4_images_per_second": best[4], "train_kernel5_images_per_second": best[5],
                "generate_images_per_second": results["generate_images_per_second"],
                "jpeg_prepare_images_per_second": results["jpeg_prepare_images_per_second"]}
    targets = {name: {"target": target, "measured": measured[name], "met": measured[name] >= target}
               for name, target in TARGETS.items()}
    for field in ("projection_fraction_of_peak", "makeover_fraction_of_peak"):  # against the DCGAN step's
        precision = results["step_precision"]
        ratio = of_training(results, field, precision)
        targets[field.replace("fraction_of_peak", "of_training_fraction")] = {
            "target": STEP_FRACTION_TARGET, "measured": ratio, "met": ratio >= STEP_FRACTION_TARGET}
    targets["input_cost_percent"] = {"target": PIPELINE_COST_TARGET_PERCENT, "measured": results["input_cost_percent"],
                                     "met": results["input_cost_percent"] < PIPELINE_COST_TARGET_PERCENT}
    return targets


def machine_description():
    flags = ""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            info = handle.read()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
        flags = "avx512_bf16" if "avx512_bf16" in info else ("avx512f" if "avx512f" in info else "")
    else:
        model = platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "features": flags, "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def format_table(results):
    """The Markdown table that the README's Speed section shows."""
    lines = ["| what | figure |", "|---|---|"]
    for name, figures in results["training"].items():
        low, high = figures["window_spread"]
        lines.append(f"| training {name.replace('_', ', ', 1)} (images/s) | {figures['images_per_second']:.1f} "
                     f"(windows {low:.1f} to {high:.1f}; {100 * figures['fraction_of_peak']:.0f}% of the "
                     f"{name.split('_', 1)[1]} peak) |")
    for precision, figures in results.get("peer", {}).items():
        if "missing" in figures:
            lines.append(f"| PyTorch peer, kernel 4, {precision} | not installed: {figures['missing']} |")
            continue
        lowest, highest = figures["ratio_spread"]
        lines.append(f"| PyTorch peer training, kernel 4, {precision} (images/s) | {figures['images_per_second']:.1f} "
                     f"(ours / peer {figures['ratio']:.2f}, median of {len(figures['rounds'])} alternating rounds, "
                     f"{lowest:.2f} to {highest:.2f}) |")
    lines += [f"| generation, kernel 4, batch 256, {precision} (images/s) | {rate:.0f} |"
              for precision, rate in results["generation"].items()]
    if "facemath_edit_ms" in results:
        lines.append(f"| face-math edit: known code + direction, G, PNG written, one face (ms; target < 50) | "
                     f"{results['facemath_edit_ms']:.1f} |")
    lines += [
              f"| JPEG decode + crop + resize, 2 threads (images/s) | {results['jpeg_prepare_images_per_second']:.0f} |",
              f"| cached tf.data pipeline (images/s) | {results['pipeline_images_per_second']:.0f} |",
              f"| input pipeline's share of a training epoch | {results['input_cost_percent']:.1f}% |",
              f"| matmul peak float32 / bfloat16 (GFLOP/s) | {results['peak_gflops']['float32']:.0f} / "
              f"{results['peak_gflops']['mixed_bfloat16']:.0f} |",
              f"| command to first training step (s) | {results['startup_seconds']:.1f} |"]
    if "projection_image_steps_per_second" in results:
        lines += [f"| projection by optimisation, kernel 4, batch 64 (image-steps/s) | "
                  f"{results['projection_image_steps_per_second']:.1f} "
                  f"({100 * results['projection_fraction_of_peak']:.0f}% of peak) |",
                  f"| encoder E forward, batch 256 (images/s) | {results['encoder_images_per_second']:.0f} |",
                  f"| makeover translator training, batch 16 (images/s) | "
                  f"{results['makeover_training_images_per_second']:.1f} "
                  f"({100 * results['makeover_fraction_of_peak']:.0f}% of peak) |",
                  f"| makeover translator apply (images/s) | {results['makeover_apply_images_per_second']:.0f} |"]
    if "test_suite_seconds" in results:
        lines.append(f"| test suite (s) | {results['test_suite_seconds']:.0f} |")
    if "bench_seconds" in results:
        lines.append(f"| this bench, start to end (s) | {results['bench_seconds']:.0f} |")
    if "section_seconds" in results:
        lines.append("| its parts (s) | " + ", ".join(f"{name} {seconds:.0f}"
                                                   for name, seconds in results["section_seconds"].items()) + " |")
    for name, target in results.get("targets", {}).items():
        lines.append(f"| target {name}: {target['target']:g} | {'met' if target['met'] else 'missed'} "
                     f"({target['measured']:.{2 if target['target'] < 10 else 1}f}) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# The face editor under load: clients moving sliders through Gradio's HTTP API, as a browser's events do


LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def call(url, api_name, data, *, timeout=60.0):
    """One event through Gradio's REST API (POST /gradio_api/call/NAME, then read its event stream); returns
    the outputs, or raises RuntimeError with the server's message."""
    request = urllib.request.Request(f"{url}/gradio_api/call/{api_name}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with LOOPBACK.open(request, timeout=timeout) as response:
        event_id = json.load(response)["event_id"]
    with LOOPBACK.open(f"{url}/gradio_api/call/{api_name}/{event_id}", timeout=timeout) as response:
        stream = response.read().decode()
    event, payload = None, None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    if event != "complete":
        raise RuntimeError(f"{api_name}: {event} {payload}")
    return json.loads(payload)


def slider_count(url):
    """How many strengths the page's edit event takes (its parameters are the kind, then one per slider)."""
    with LOOPBACK.open(f"{url}/gradio_api/info", timeout=30) as response:
        info = json.load(response)
    return len(info["named_endpoints"]["/edit"]["parameters"]) - 1


def edit_and_fetch(url, strengths, kind="mean"):
    """One slider move as a browser makes it: the edit event, then the image it returns."""
    outputs = call(url, "edit", [kind, *strengths])
    with LOOPBACK.open(outputs[0]["url"], timeout=60) as response:
        image = response.read()
    if not image.startswith(b"\x89PNG"):
        raise RuntimeError("the edit returned something that is not a PNG")
    return len(image)


def load_test(url, *, clients=8, seconds=30.0, seed=0):
    """`clients` threads, each moving one random slider at a time as fast as the page answers, for `seconds`.
    Returns the count of responses, errors (with the first messages) and the latency percentiles in ms."""
    import directions  # here: bench's own figures start without the encoder stack

    count = slider_count(url)
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(number):
        rng = np.random.default_rng(seed + number)
        strengths = [0.0] * count
        while time.perf_counter() < deadline:
            strengths[int(rng.integers(count))] = round(float(rng.uniform(-3.0, 3.0)), 1)  # the sliders' range
            kind = str(rng.choice(directions.KINDS))
            started = time.perf_counter()
            try:
                edit_and_fetch(url, strengths, kind)
                with lock:
                    latencies.append(1000 * (time.perf_counter() - started))
            except Exception as error:  # every failure is counted and reported, none stops the test
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    percentiles = np.percentile(latencies, [50, 90, 99]) if latencies else [float("nan")] * 3
    return {"clients": clients, "seconds": round(elapsed, 1), "responses": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(percentiles[0]), 1), "p90_ms": round(float(percentiles[1]), 1),
            "p99_ms": round(float(percentiles[2]), 1), "max_ms": round(max(latencies, default=float("nan")), 1)}


def wait_for_page(url, process, *, timeout=300.0):
    """Poll until the page answers; fail at once if the server process has exited."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the editor exited with code {process.returncode} before serving")
        try:
            with LOOPBACK.open(url, timeout=5):
                return url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the editor did not answer at {url} within {timeout:.0f} s")


def free_port(host="127.0.0.1"):
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def run_editor_load(args):
    """`python bench.py editor`: start `python editor.py` for the run in a process of its own, load it for
    --seconds with --clients clients, stop it, print the figures (and write them to --out)."""
    if args.seconds <= 0 or args.clients < 1:
        raise data_prep.DataError("--seconds and --clients must be positive")
    port = free_port()
    command = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "editor.py"),
               "--port", str(port), "--steps", "5", "--fit-limit", str(args.fit_limit),
               "--classifier", args.classifier, "--method", args.method] + (["--run", args.run] if args.run else [])
    server = subprocess.Popen(command)
    try:
        url = wait_for_page(f"http://127.0.0.1:{port}", server)
        edit_and_fetch(url, [0.0] * slider_count(url))  # warm-up: the first event builds the compiled graph
        result = load_test(url, clients=args.clients, seconds=args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"load test, {result['clients']} clients for {result['seconds']} s on {url}: {result['responses']} "
          f"responses ({result['per_second']}/s), {result['errors']} errors; latency p50 {result['p50_ms']} ms, "
          f"p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    for message in result["first_errors"]:
        print(f"  error: {message}")
    if args.out:
        data_prep.write_json(args.out, result)
    return result


def editor_parser():
    parser = argparse.ArgumentParser(prog="bench.py editor", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="The face editor under load: latency percentiles of slider moves.")
    add = parser.add_argument
    add("--run", default=None, help="the run (GAN or VAE); default: the newest run in runs/ with a generator")
    add("--seconds", type=float, default=30.0, help="how long the clients edit")
    add("--clients", type=int, default=8, help="simultaneous clients")
    add("--fit-limit", type=int, default=4000, help="training faces (or samples) whose codes fit the directions")
    add("--classifier", default=os.path.join("runs", "classifier"), help="the attribute CNN's directory")
    add("--method", default="auto", help="how codes are found (facemath.py's --method)")
    add("--out", default=None, help="also write the figures to this JSON file")
    return parser


# ----------------------------------------------------------------------------------------------------------
# Where a training step's time goes: oneDNN's own log of every primitive, ours against the peer's


def profile_worker(args):
    """Run `--steps` training steps of ours or the peer's (4x4 kernels, batch 64, 64x64, one batch in memory) in a
    process started with ONEDNN_VERBOSE=1, then print the step rate; oneDNN prints a line per primitive run."""
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.worker == "ours":
        rate = training_rate(kernel=4, precision=args.precision, steps=args.steps, warmup=2, window=1)[0]
    else:
        rate = peer_training_rate(precision=args.precision, steps=args.steps, warmup=2, window=1)[0]
    print(f"profile-rate {rate:.2f}", flush=True)


def onednn_profile(log_lines, steps):
    """{(primitive, implementation, pass, problem): (runs per step, median ms, ms per step)} from oneDNN's verbose
    lines (`onednn_verbose,...,exec,cpu,<primitive>,<implementation>,<pass>,<formats>,<attributes>,<algorithm>,
    <problem>,<ms>`). The median over the runs keeps the first step's one-off costs out; per step it counts as often
    as the primitive ran per step."""
    runs_of = {}
    for line in log_lines:
        fields = line.strip().split(",")
        if len(fields) < 12 or fields[0] != "onednn_verbose" or "exec" not in fields[2:4]:
            continue
        start = fields.index("exec") + 2  # after "exec" and the engine
        key = (fields[start], fields[start + 1], fields[start + 2], fields[-2])
        runs_of.setdefault(key, []).append(float(fields[-1]))
    return {key: (len(times) / steps, float(np.median(times)), len(times) / steps * float(np.median(times)))
            for key, times in runs_of.items()}


def run_profile(args):
    """`python bench.py profile`: oneDNN's log of our step and of the peer's, each in a process of its own, summed
    per pass (forward, backward data, backward weights, batch norm, reorders) and listed per primitive."""
    precision = runs.resolve_precision(args.precision)[0]
    environment = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for worker in ("ours", "peer"):
        if worker == "peer" and importlib.util.find_spec("torch") is None:
            print(f"PyTorch peer: not installed ({PEER_HINT})")
            continue
        command = [sys.executable, os.path.abspath(__file__), "profile", "--worker", worker, "--precision", precision,
                   "--steps", str(args.steps), "--inter-op-threads", str(args.inter_op_threads)]
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode:
            last = (finished.stderr.strip().splitlines() or ["no message"])[-1]
            raise data_prep.DataError(f"the profiled {worker} step failed: {last}")
        output = finished.stdout
        rate = next(float(line.split()[1]) for line in output.splitlines() if line.startswith("profile-rate"))
        profile = onednn_profile(output.splitlines(), args.steps)
        total = sum(per_step for _, _, per_step in profile.values())
        print(f"\n{worker}, {precision}: {rate:.1f} images/s under the log ({64000 / rate:.0f} ms a step); oneDNN's "
              f"primitives {total:.0f} ms a step, summed over the threads that ran them")
        by_pass = {}
        for (primitive, _, stage, _), (_, _, per_step) in profile.items():
            name = primitive if primitive in ("reorder", "batch_normalization") else f"{primitive} {stage}"
            by_pass[name] = by_pass.get(name, 0.0) + per_step
        print("  " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(by_pass.items(), key=lambda x: -x[1])))
        for (primitive, implementation, stage, problem), (count, median, per_step) in sorted(
                profile.items(), key=lambda item: -item[1][2])[:args.top]:
            print(f"  {per_step:7.1f} ms/step  {count:4.1f} x {median:6.2f} ms  {primitive} {stage} "
                  f"{implementation} {problem}")


def profile_parser():
    parser = runs.OneLineParser(prog="bench.py profile", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Where the DCGAN step's time goes: oneDNN's log, ours against PyTorch's.")
    add = parser.add_argument
    add("--precision", default="auto", choices=runs.PRECISIONS, help="the dtype policy of both steps")
    add("--steps", type=int, default=20, help="training steps of each (two more are untimed warm-up)")
    add("--inter-op-threads", type=int, default=0, help="TensorFlow's inter-op threads for our step (0: its default)")
    add("--top", type=int, default=12, help="primitives listed per step")
    add("--worker", choices=("ours", "peer"), default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None, help="CelebA directory for the JPEG and pipeline figures "
                                                     "(default: the synthetic CelebA)")
    parser.add_argument("--out", default="bench.json", help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="small shapes and few steps (for tests)")
    parser.add_argument("--with-tests", action="store_true", help="also time the test suite")
    parser.add_argument("--precisions", default="auto",
                        help="comma-separated dtype policies to time training and generation in: float32, "
                             "mixed_bfloat16, or auto (the one dcgan.py picks on this machine)")
    parser.add_argument("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "editor":
        return run_editor_load(editor_parser().parse_args(argv[1:]))
    if argv and argv[0] == "profile":
        args = profile_parser().parse_args(argv[1:])
        return profile_worker(args) if args.worker else run_profile(args)
    args = parse_args(argv)
    precisions = []
    for name in (name.strip() for name in args.precisions.split(",") if name.strip()):
        if name not in runs.PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(runs.PRECISIONS)}")
        policy, why = runs.resolve_precision(name)
        if name == "auto":
            print(f"precision auto: {policy} ({why})")
        precisions = [*precisions, policy] if policy not in precisions else precisions
    precisions = tuple(precisions)
    started = time.perf_counter()
    results = run_bench(data_dir=args.data, tiny=args.tiny, with_tests=args.with_tests, precisions=precisions)
    results["bench_seconds"] = time.perf_counter() - started  # the whole bench, so its own cost is on record
    table = format_table(results)
    print(table)
    data_prep.write_json(args.out, {**results, "table": table})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    runs.run_cli(main)
