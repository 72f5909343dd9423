"""PyTorch's reference DCGAN as a peer: the same faces, the same number of image-steps, scored on our instrument.

Written for this repository from Radford, Metz and Chintala 2015 ("Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks") and the published settings of pytorch/examples dcgan/main.py:
z of 100 from N(0, 1) reshaped to 1x1, ngf = ndf = 64, 4x4 kernels with stride 2 and padding 1 (the first
generator layer and the last discriminator layer 4x4 with stride 1 and no padding), no biases, batch norm in G
everywhere but the output and in D everywhere but the input, ReLU in G and LeakyReLU 0.2 in D, tanh output,
weights from N(0, 0.02) and batch-norm scales from N(1, 0.02), Adam 2e-4 with betas (0.5, 0.999), batch 64,
binary cross-entropy; per batch one D step on the real and the (detached) fake batch, then one G step through
the same fake batch with real labels. The only changes: the loss is computed from D's logits
(`BCEWithLogitsLoss`, the same loss as Sigmoid + `BCELoss` without its clamping), every epoch drops its last
partial batch (as `dcgan.py` does, so image-steps are equal), and sizes other than 64 add or remove blocks.

It trains on the very uint8 cache a `dcgan.py` run trained on (`--like runs/NAME` reads its config.json: data,
filter, crop size, image size, limit, cache, flips), for as many image-steps as that run trained unless
`--image-steps` says otherwise, then writes `--samples` images (PNGs in <out>/samples/, or a .npy) for
`python evaluate.py score runs/NAME --images <out>/samples`. PyTorch is optional (peers/requirements.txt);
no main script imports it.

Usage:
    pip install -r peers/requirements.txt                                 # torch 2.13.0, CPU
    python peers/torch_dcgan.py --like runs/ref --out runs/peer-torch     # as many image-steps as runs/ref
    python peers/torch_dcgan.py --like runs/ref --out runs/peer-torch --resume --image-steps 200000
    python peers/torch_dcgan.py --like runs/demo --out runs/peer-tiny --image-steps 640 --filters 16 --samples 200
    python evaluate.py score runs/ref --images runs/peer-torch/samples
"""

import argparse
import csv
import io
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's data_prep

import data_prep  # noqa: E402  (imports no TensorFlow)
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

LATENT_DIM = 100  # pytorch/examples' nz
FILTERS = 64  # ngf = ndf
KERNEL = 4
BATCH_SIZE = 64
LEARNING_RATE = 2e-4
BETA1 = 0.5
CHECKPOINT_EVERY = 100  # steps between resumable checkpoints
LOG_COLUMNS = ("step", "d_loss", "g_loss", "d_real", "d_fake")


# ----------------------------------------------------------------------------------------------------------
# Model builders


def number_of_blocks(image_size):
    """Stride-2 blocks between 4x4 and image_size: 4 for 64 (pytorch/examples), 3 for 32."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image size must be a power of two of at least 8, got {image_size}")
    return image_size.bit_length() - 3


def build_generator(*, latent_dim=LATENT_DIM, image_size=64, filters=FILTERS):
    """z (batch, latent_dim, 1, 1) -> 4x4 transposed convolution -> stride-2 transposed convolutions -> tanh."""
    channels = filters * 2 ** (number_of_blocks(image_size) - 1)  # 512 for 64x64
    layers = [nn.ConvTranspose2d(latent_dim, channels, KERNEL, 1, 0, bias=False),  # (batch, 512, 4, 4)
              nn.BatchNorm2d(channels), nn.ReLU(True)]
    while channels > filters:
        layers += [nn.ConvTranspose2d(channels, channels // 2, KERNEL, 2, 1, bias=False),  # doubles the size
                   nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
        channels //= 2  # (batch, 64, size/2, size/2) after the last of these
    layers += [nn.ConvTranspose2d(filters, 3, KERNEL, 2, 1, bias=False), nn.Tanh()]  # (batch, 3, size, size)
    return nn.Sequential(*layers)


def build_discriminator(*, image_size=64, filters=FILTERS):
    """Images (batch, 3, size, size) -> stride-2 convolutions, LeakyReLU 0.2 -> one logit per image (batch,)."""
    blocks = number_of_blocks(image_size)
    layers = [nn.Conv2d(3, filters, KERNEL, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]  # (batch, 64, size/2, ..)
    for block in range(1, blocks):
        channels = filters * 2 ** block
        layers += [nn.Conv2d(channels // 2, channels, KERNEL, 2, 1, bias=False), nn.BatchNorm2d(channels),
                   nn.LeakyReLU(0.2, True)]  # (batch, 64 * 2^block, size / 2^(block+1), ...)
    layers += [nn.Conv2d(filters * 2 ** (blocks - 1), 1, KERNEL, 1, 0, bias=False), nn.Flatten(0)]  # (batch,)
    return nn.Sequential(*layers)


def initialize_weights(module):
    """pytorch/examples' weights_init: convolutions N(0, 0.02), batch-norm scales N(1, 0.02) and shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_peer(settings):
    """(generator, discriminator, G's optimizer, D's optimizer) from the peer's config, seeded."""
    torch.manual_seed(settings["seed"])
    generator = build_generator(latent_dim=settings["latent_dim"], image_size=settings["image_size"],
                                filters=settings["filters"])
    discriminator = build_discriminator(image_size=settings["image_size"], filters=settings["filters"])
    generator.apply(initialize_weights)
    discriminator.apply(initialize_weights)
    betas = (settings["beta1"], 0.999)
    return (generator, discriminator, torch.optim.Adam(generator.parameters(), settings["learning_rate"], betas=betas),
            torch.optim.Adam(discriminator.parameters(), settings["learning_rate"], betas=betas))


# ----------------------------------------------------------------------------------------------------------
# The data of a dcgan.py run


def like_run_settings(run_dir):
    """What the peer copies from a trained dcgan.py run: its data, crop and cache settings, flips, and the
    image-steps it trained (the rows of its log.csv times its global batch)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"--like {run_dir}: not a run directory (no config.json)")
    with open(path) as handle:
        config = json.load(handle)
    if config.get("kind", "trained") != "trained":
        raise ValueError(f"--like {run_dir}: the {config['kind']} baseline, not a trained run")
    if not config.get("data") or not config.get("image_size"):
        raise ValueError(f"--like {run_dir}: its config.json names no data directory or image size")
    log = os.path.join(run_dir, "log.csv")
    steps = 0
    if os.path.isfile(log):
        with open(log) as handle:
            steps = max(sum(1 for line in handle if line.strip()) - 1, 0)
    return {"like": os.path.abspath(run_dir), "data": config["data"], "filter": config.get("filter"),
            "image_size": config["image_size"], "crop_size": config.get("crop_size", 108),
            "limit": config.get("limit"), "cache_dir": config.get("cache_dir") or data_prep.DEFAULT_CACHE_DIR,
            "flip": bool(config.get("flip", False)), "like_image_steps": steps * config.get("batch_size", BATCH_SIZE)}


def training_images(settings, *, progress=True):
    """The run's prepared uint8 training images (n, size, size, 3), from the shared cache (made if absent)."""
    prepared = data_prep.prepare_images(settings["data"], split="train", filter=settings["filter"], crop="dcgan",
                                        image_size=settings["image_size"], crop_size=settings["crop_size"],
                                        limit=settings["limit"], cache_dir=settings["cache_dir"], progress=progress)
    return np.asarray(prepared.images)


def batch_indices(step, *, count, batch_size, seed):
    """The images of global step `step`: epoch e shuffles with its own seed and drops its last partial batch, so
    a resumed run sees exactly the batches an uninterrupted one would."""
    steps_per_epoch = count // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[position * batch_size:(position + 1) * batch_size]


def real_batch(images, indices, *, flip, seed, step):
    """uint8 NHWC -> float32 NCHW in [-1, 1], with seeded horizontal flips when the run used them."""
    batch = images[indices]  # (batch, size, size, 3) uint8
    if flip:
        flips = np.random.default_rng([seed, step, 1]).random(len(batch)) < 0.5
        batch = np.where(flips[:, None, None, None], batch[:, :, ::-1], batch)
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------
# Training, checkpoints and sampling


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, noise):
    """pytorch/examples' step: D on real (label 1) and detached fake (label 0), then G on the same fake with
    label 1 (the non-saturating loss). Returns (D loss, G loss, mean D(x), mean D(G(z)) before D's step)."""
    loss = nn.functional.binary_cross_entropy_with_logits
    d_optimizer.zero_grad()
    real_logits = discriminator(real)
    fake = generator(noise)
    fake_logits = discriminator(fake.detach())
    d_loss = loss(real_logits, torch.ones_like(real_logits)) + loss(fake_logits, torch.zeros_like(fake_logits))
    d_loss.backward()
    d_optimizer.step()
    g_optimizer.zero_grad()
    g_logits = discriminator(fake)
    g_loss = loss(g_logits, torch.ones_like(g_logits))
    g_loss.backward()
    g_optimizer.step()
    return (d_loss.item(), g_loss.item(), torch.sigmoid(real_logits).mean().item(),
            torch.sigmoid(fake_logits).mean().item())


def save_checkpoint(out_dir, *, networks, step, noise_generator, log_rows, train_seconds):
    """checkpoint.pt (networks, optimizers, the z stream, the step) and log.csv, each written then renamed."""
    generator, discriminator, g_optimizer, d_optimizer = networks
    state = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
             "g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(), "step": step,
             "noise_generator": noise_generator.get_state(), "train_seconds": train_seconds}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data_prep.atomic_write_bytes(os.path.join(out_dir, "checkpoint.pt"), buffer.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    writer.writerows(log_rows)
    data_prep.atomic_write_bytes(os.path.join(out_dir, "log.csv"), text.getvalue().encode())


def load_checkpoint(out_dir, networks, noise_generator):
    """Restore checkpoint.pt into the networks and the z stream; returns (step, log rows, train seconds)."""
    state = torch.load(os.path.join(out_dir, "checkpoint.pt"), weights_only=True)
    for network, key in zip(networks, ("generator", "discriminator", "g_optimizer", "d_optimizer")):
        network.load_state_dict(state[key])
    noise_generator.set_state(state["noise_generator"])
    with open(os.path.join(out_dir, "log.csv")) as handle:
        rows = [row for row in csv.reader(handle)][1:1 + state["step"]]
    return state["step"], rows, state["train_seconds"]


def train(settings, out_dir, *, images, resume=False, progress=True):
    """Train (or resume) the peer to `settings["steps"]` steps in `out_dir`; returns (generator, seconds)."""
    networks = build_peer(settings)
    generator, discriminator, g_optimizer, d_optimizer = networks
    noise_generator = torch.Generator().manual_seed(settings["seed"])
    step, log_rows, seconds = (load_checkpoint(out_dir, networks, noise_generator) if resume else (0, [], 0.0))
    generator.train()
    discriminator.train()
    started, last_saved = time.perf_counter(), step
    with tqdm(total=settings["steps"], initial=step, desc="training", unit="step", disable=not progress,
              mininterval=2.0) as bar:
        while step < settings["steps"]:
            indices = batch_indices(step, count=len(images), batch_size=settings["batch_size"], seed=settings["seed"])
            real = real_batch(images, indices, flip=settings["flip"], seed=settings["seed"], step=step)
            noise = torch.randn(len(real), settings["latent_dim"], 1, 1, generator=noise_generator)
            values = train_step(generator, discriminator, g_optimizer, d_optimizer, real, noise)
            if not all(np.isfinite(values)):
                raise ValueError(f"non-finite loss at step {step + 1}: {values}; the last checkpoint is kept")
            step += 1
            log_rows.append([step, *(f"{value:.6g}" for value in values)])
            bar.update(1)
            bar.set_postfix(d_loss=f"{values[0]:.3f}", g_loss=f"{values[1]:.3f}", refresh=False)
            if step - last_saved >= CHECKPOINT_EVERY or step == settings["steps"]:
                total = seconds + time.perf_counter() - started
                save_checkpoint(out_dir, networks=networks, step=step, noise_generator=noise_generator,
                                log_rows=log_rows, train_seconds=total)
                last_saved = step
    return generator, seconds + time.perf_counter() - started


def sample(generator, *, count, seed, latent_dim=LATENT_DIM, batch_size=256):
    """uint8 images (count, size, size, 3) from z drawn with NumPy from `seed` (the same z as
    dcgan.latent_for_seed), with batch norm's running statistics (as dcgan.py samples a trained run)."""
    z = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
    generator.eval()
    with torch.no_grad():
        batches = [generator(torch.from_numpy(z[start:start + batch_size])[:, :, None, None])
                   for start in range(0, count, batch_size)]
    images = torch.cat(batches).permute(0, 2, 3, 1).numpy()  # (count, size, size, 3) in [-1, 1]
    return data_prep.to_uint8(images)


def write_samples(out_dir, images, *, form="png"):
    """<out>/samples/000000.png ... (old PNGs there removed first) or <out>/samples.npy, and <out>/grid.png."""
    written = []
    if form in ("png", "both"):
        folder = os.path.join(out_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".png"):
                os.remove(os.path.join(folder, name))
        for index, image in enumerate(images):
            data_prep.write_image(os.path.join(folder, f"{index:06d}.png"), image)
        written.append(folder)
    if form in ("npy", "both"):
        data_prep.atomic_save_npy(os.path.join(out_dir, "samples.npy"), images)
        written.append(os.path.join(out_dir, "samples.npy"))
    data_prep.save_grid(os.path.join(out_dir, "grid.png"), images[:64], columns=8)
    return written


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--like", required=True, help="a trained dcgan.py run whose data, crop, cache and flips the peer uses")
    add("--out", required=True, help="the peer's directory: config.json, checkpoint.pt, log.csv, samples/, grid.png")
    add("--image-steps", type=int, default=None, help="real images D sees in all (default: as many as --like did)")
    add("--batch-size", type=int, default=BATCH_SIZE, help="batch size (pytorch/examples: 64)")
    add("--filters", type=int, default=FILTERS, help="ngf = ndf (pytorch/examples: 64)")
    add("--latent-dim", type=int, default=LATENT_DIM, help="size of z (pytorch/examples: 100)")
    add("--learning-rate", type=float, default=LEARNING_RATE, help="Adam learning rate of G and D")
    add("--beta1", type=float, default=BETA1, help="Adam beta_1")
    add("--seed", type=int, default=0, help="seed of weights, z stream, shuffling and flips")
    add("--samples", type=int, default=2000, help="images to write after training (0: none)")
    add("--sample-seed", type=int, default=0, help="seed of the samples' z (evaluate.py's --seed is 0 too)")
    add("--format", default="png", choices=["png", "npy", "both"], help="samples as PNGs, a uint8 .npy, or both")
    add("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default, every core)")
    add("--resume", action="store_true", help="continue from <out>/checkpoint.pt (to a larger --image-steps)")
    add("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def resolve_settings(args):
    """Flags and the --like run's data settings -> the peer's config; resuming keeps what it trained with."""
    positive = ("batch_size", "filters", "latent_dim")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.samples < 0 or args.threads < 0:
        raise ValueError(f"--samples and --threads must be 0 or more, got {args.samples} and {args.threads}")
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if args.resume and not os.path.isfile(checkpoint):
        raise ValueError(f"--resume: no checkpoint.pt in {args.out}")
    if not args.resume and os.path.isfile(checkpoint):
        raise ValueError(f"{args.out} already holds a peer run; pass --resume to continue it or another --out")
    settings = {**like_run_settings(args.like), **{key: value for key, value in vars(args).items()
                                                   if key not in ("like", "out", "resume", "quiet")}}
    if args.resume:
        with open(os.path.join(args.out, "config.json")) as handle:
            saved = json.load(handle)
        for key in ("batch_size", "filters", "latent_dim", "learning_rate", "beta1", "seed", "image_size", "data"):
            if saved[key] != settings[key]:
                raise ValueError(f"--resume: {key} cannot change ({saved[key]!r} in {args.out}/config.json)")
    number_of_blocks(settings["image_size"])
    image_steps = settings["image_steps"] if settings["image_steps"] is not None else settings["like_image_steps"]
    if image_steps < settings["batch_size"]:
        raise ValueError(f"--image-steps must be at least one batch ({settings['batch_size']}), got {image_steps}"
                         + ("" if settings["image_steps"] is not None else f" (what {args.like}'s log.csv holds)"))
    settings["steps"] = image_steps // settings["batch_size"]
    settings["image_steps"] = settings["steps"] * settings["batch_size"]  # whole batches, as dcgan.py counts them
    settings["versions"] = {"python": platform.python_version(), "torch": torch.__version__,
                            "numpy": np.__version__}
    return settings


def main(argv=None):
    args = parse_args(argv)
    settings = resolve_settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings["threads"] = torch.get_num_threads()
    print(("resuming " if args.resume else "training ") + args.out + " with\n"
          + "\n".join(f"  {key}: {value}" for key, value in settings.items()))
    os.makedirs(args.out, exist_ok=True)
    images = training_images(settings, progress=not args.quiet)
    if len(images) < settings["batch_size"]:
        raise ValueError(f"only {len(images)} training images for a batch of {settings['batch_size']}")
    settings["train_images"] = int(len(images))
    data_prep.write_json(os.path.join(args.out, "config.json"), {**settings, "finished": False})
    generator, seconds = train(settings, args.out, images=images, resume=args.resume, progress=not args.quiet)
    settings.update(train_seconds=round(seconds, 3), finished=True)
    data_prep.write_json(os.path.join(args.out, "config.json"), settings)
    print(f"trained {settings['image_steps']} image-steps ({settings['steps']} steps) in {seconds:.0f} s")
    if args.samples:
        written = write_samples(args.out, sample(generator, count=args.samples, seed=args.sample_seed,
                                                 latent_dim=settings["latent_dim"]), form=args.format)
        print(f"wrote {args.samples} samples to {', '.join(written)} and {args.out}/grid.png")


if __name__ == "__main__":
    data_prep.run_cli(main)
