"""Real faces to latent codes three ways, and a VAE of the same size to compare their codes with.

A GAN's generator maps z to a face, never back. This script finds the z of a real face:
- an encoder network E (NVIDIA's "Photo editing with generative adversarial networks", part 2: the discriminator's
  convolutional stack with a linear latent_dim head), trained with the generator frozen on pairs (z, G(z)) and on
  real faces (G(E(x)) against x, in pixels and in the discriminator's features);
- projection by optimisation (Yeh et al. 2016, "Semantic Image Inpainting with Deep Generative Models", the loss of
  frrmack's facemath): Adam on z for a pixel loss plus lambda times the discriminator's realism loss, with a prior;
- the hybrid (Zhu et al. 2020, "In-Domain GAN Inversion for Real Image Editing"): the optimisation started from
  E(x), optionally held near E(G(z)) (their domain regulariser).
It also trains a VAE of the same size (Kingma and Welling 2014, "Auto-Encoding Variational Bayes") whose codes are
saved the same way, so that `python scores.py encoders` answers the open question (GAN codes or VAE codes?) in
numbers. complete.py fills holes in faces with the same projection (Yeh et al.'s origin for it).

Codes are saved as .npz: codes (n, latent_dim), names, method, run, kind ("gan" or "vae"), loss (each image's final
pixel MSE, images in [0, 1]), step_losses (steps, n) of the optimisation (0 rows for E alone). The generator that
turns them back into faces is `dcgan.load_generator(run)` for a GAN run and a VAE run alike.

Usage:
    python encoder.py train --run runs/demo                                  # E into runs/demo/encoder/
    python encoder.py train --run runs/demo --epochs 2 --steps-per-epoch 50  # CPU-sized
    python encoder.py train --run runs/demo --resume --epochs 4              # continue after the last epoch
    python encoder.py encode --run runs/demo --method hybrid photos/*.jpg
    python encoder.py encode --run runs/demo --split test --limit 500 --method encoder
    python encoder.py encode --run runs/vae --split test --limit 500         # a VAE's codes, the same layout
    python scores.py encoders --run runs/demo --vae runs/vae                 # GAN codes against VAE codes
    python scores.py encoders --run runs/demo --vae runs/vae --count 32 --steps 50   # CPU-sized
"""

import argparse
import dataclasses
import hashlib
import math
import os
import time
import weakref

import numpy as np
from tqdm import tqdm

import data_prep
import dcgan
import runs

import keras  # noqa: E402  (runs chose the backend and loaded TensorFlow quietly)
import tensorflow as tf  # noqa: E402

SUBCOMMANDS = ("train", "vae", "encode", "complete", "compare")
MOVED = {"vae": "vae.py", "complete": "complete.py", "compare": "scores.py encoders"}
METHODS = ("random", "encoder", "optimize", "hybrid")  # "random" is the floor: a code that knows nothing
PIXEL_LOSSES = ("l1", "l2")
PRIORS = ("gaussian", "sphere", "box", "none")
GRID_FACES = 8  # faces in the per-epoch and comparison grids


# ----------------------------------------------------------------------------------------------------------
# Model builders


def build_encoder(*, latent_dim=100, image_size=64, filters=64, kernel_size=5, name="encoder"):
    """E: image -> z, D's stack with a linear head (not DIGITS's sigmoid: our z is Gaussian)."""
    image = keras.Input((image_size, image_size, 3), name="image")
    features = keras.layers.Flatten(name="flatten")(dcgan.conv_stack(image, image_size=image_size, filters=filters,
                                                                      kernel_size=kernel_size))
    z = keras.layers.Dense(latent_dim, kernel_initializer=dcgan.weight_init(), dtype="float32", name="z")(features)
    return keras.Model(image, z, name=name)  # (batch, latent_dim)


# ----------------------------------------------------------------------------------------------------------
# Losses shared by training, projection and the VAE


def pixel_distance(images, targets, *, loss="l2", mask=None, lowres_factor=None):
    """Per-image mean L1 or L2 distance over the pixels the mask keeps ((batch, h, w, 1) or (h, w), 1 = known);
    with `lowres_factor`, between the two images average-pooled by that factor (bamos's lowres mask). (batch,)"""
    images, targets = tf.cast(images, tf.float32), tf.cast(targets, tf.float32)
    if lowres_factor:
        images = tf.nn.avg_pool2d(images, lowres_factor, lowres_factor, "VALID")
        targets = tf.nn.avg_pool2d(targets, lowres_factor, lowres_factor, "VALID")
        mask = None
    error = tf.abs(images - targets) if loss == "l1" else tf.square(images - targets)
    if mask is None:
        return tf.reduce_mean(error, axis=[1, 2, 3])
    mask = tf.cast(mask, tf.float32)
    mask = tf.reshape(mask, [-1, tf.shape(images)[1], tf.shape(images)[2], 1])  # (batch or 1, h, w, 1)
    kept = tf.reduce_sum(mask * tf.ones_like(error), axis=[1, 2, 3])
    return tf.reduce_sum(error * mask, axis=[1, 2, 3]) / tf.maximum(kept, 1.0)


def realism_loss(discriminator, images):
    """-log D(x) per image (the generator's non-saturating loss): low where D finds the image real. (batch,)"""
    return tf.nn.softplus(-tf.cast(discriminator(images, training=False), tf.float32))[:, 0]


def pixel_mse(images, targets):
    """Per-image mean squared error with both images scaled to [0, 1] (what every .npz `loss` holds). (n,)"""
    difference = (np.asarray(images, np.float32) - np.asarray(targets, np.float32)) / 2.0
    return np.mean(difference ** 2, axis=(1, 2, 3))


# ----------------------------------------------------------------------------------------------------------
# The trainers


class EncoderTrainer(runs.WeightedLossModel):
    """Owns E, the frozen G and D's feature model, E's optimizer and loss trackers. Each step E learns to give
    back z from G(z) (fresh z, loss on z), and to give a z whose G(z) matches a real batch in pixels and in D's
    features; the three weights choose the mix (a weight of 0 leaves its part out of the gradient)."""

    PARTS = ("latent", "pixel", "feature")

    def __init__(self, encoder, generator, features, *, weights, pixel_loss="l2", latent_distribution="normal",
                 seed=0, **kwargs):
        super().__init__({part: weights[part] for part in self.PARTS}, trained=(encoder,), **kwargs)
        self.encoder, self.generator, self.features = encoder, generator, features
        self.generator.trainable = False
        self.features.trainable = False
        self.pixel_loss = pixel_loss
        self.latent_dim = encoder.output_shape[-1]
        self.latent_distribution = latent_distribution
        self.seed_generator = keras.random.SeedGenerator(seed)

    def parts(self, real_images, *, training, z=None):
        """The three losses of one batch (scalars): z from G(z) (fresh z unless given), and G(E(x)) against x in
        pixels and features."""
        batch_size = tf.shape(real_images)[0]
        if z is None:
            z = dcgan.sample_latent(batch_size, self.latent_dim, distribution=self.latent_distribution,
                                    seed=self.seed_generator)
        fakes = self.generator(z, training=False)  # (batch, size, size, 3), G frozen
        latent = tf.reduce_mean(tf.square(self.encoder(fakes, training=training) - z))
        reconstructions = self.generator(self.encoder(real_images, training=training), training=False)
        pixel = tf.reduce_mean(pixel_distance(reconstructions, real_images, loss=self.pixel_loss))
        feature = tf.reduce_mean(tf.square(tf.cast(self.features(reconstructions, training=False), tf.float32)
                                           - tf.cast(self.features(real_images, training=False), tf.float32)))
        return {"latent": latent, "pixel": pixel, "feature": feature}

    def validation_loss(self, images, z, *, batch_size=128):
        """The weighted loss on held-out faces and fixed codes, with E in inference mode: what early stopping
        watches."""
        totals = []
        for start in range(0, len(images), batch_size):
            parts = self.parts(data_prep.to_float(images[start:start + batch_size]), training=False,
                               z=z[start:start + batch_size])
            totals.append(sum(self.part_weights[part] * float(parts[part]) for part in self.PARTS))
        return float(np.mean(totals))

    def state_variables(self):
        """Every variable a resumed training needs, in a fixed order: E, its optimizer, the z stream."""
        return self.encoder.weights + self.loss_optimizer.variables + [self.seed_generator.state]


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and loading


def generator_fingerprint(generator):
    """A short hash of a generator's weights: an encoder records it, so that it is never used with another G."""
    digest = hashlib.sha256()
    for weight in generator.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight), np.float32).tobytes())
    return digest.hexdigest()[:16]


def load_encoder(run):
    """The network that maps faces to codes for a run: E from <run>/encoder/ for a GAN run (refused when it was
    trained for another generator), the VAE's encoder (returning the mean and log-variance) for a VAE run."""
    if run.config.get("kind") == "vae":
        return keras.saving.load_model(os.path.join(run.directory, "vae_encoder.keras"), compile=False)
    out_dir = os.path.join(run.directory, "encoder")
    path = os.path.join(out_dir, "encoder.keras")
    if not os.path.isfile(path):
        raise data_prep.DataError(f"no trained encoder in {out_dir}; run `python encoder.py train --run "
                                  f"{run.directory}` first")
    saved = runs.read_config(out_dir)
    if saved.get("generator_fingerprint") != generator_fingerprint(run.generator):
        raise data_prep.DataError(f"the encoder in {out_dir} was trained for another generator "
                                  f"({saved.get('run')}); train one for this run")
    return keras.saving.load_model(path, compile=False)


# ----------------------------------------------------------------------------------------------------------
# Training E and the VAE


def fixed_held_out(out_dir, config, *, count=GRID_FACES, seed=0):
    """The held-out faces every epoch's grid reconstructs: chosen once from the test split, kept in
    fixed_images.npy so that a resumed training shows the same faces."""
    path = os.path.join(out_dir, "fixed_images.npy")
    if not os.path.isfile(path):
        images = data_prep.run_split(config, split="test").images
        chosen = data_prep.seeded_subset(len(images), count, seed=seed)
        data_prep.atomic_save_npy(path, np.asarray(images[chosen]))
    return np.load(path)


def fit_with_evidence(trainer, dataset, out_dir, *, epochs, steps_per_epoch, history, save_epoch, verbose=1,
                      columns=None):
    """fit() from the first unfinished epoch; after each epoch `save_epoch(number)` writes the grid and weights and
    the resumable checkpoint and <name>_losses.npy are rewritten (every list in `history`; the step `columns`,
    all of them by default, are the trainer's own). Raises runs.TrainingStopped on a NaN."""
    def save(number):
        save_epoch(number)
        runs.save_checkpoint(out_dir, trainer.state_variables(), history,
                             arrays={name: "learning_rate.npy" if name == "learning_rate" else f"{name}_losses.npy"
                                     for name in history})

    recorder = runs.EpochRecorder(history, list(columns or history), save_epoch=save)
    runs.fit_epochs(trainer, dataset, out_dir, epochs=epochs, recorder=recorder, steps_per_epoch=steps_per_epoch,
                    verbose=verbose)
    return history


def make_encoder_trainer(run, config):
    """E and its trainer for a run, built in the run's precision, with the optimizer's slots made."""
    features = dcgan.discriminator_features(run.discriminator, layer=config["feature_layer"])
    with runs.dtype_policy(run.config.get("compute_precision", "float32")):
        encoder = build_encoder(latent_dim=run.config["latent_dim"], image_size=run.config["image_size"],
                                filters=run.config["filters"], kernel_size=run.config["kernel"])
    weights = {part: config[f"{part}_weight"] for part in EncoderTrainer.PARTS}
    trainer = EncoderTrainer(encoder, run.generator, features, weights=weights, pixel_loss=config["pixel_loss"],
                             latent_distribution=run.config["latent_distribution"], seed=config["seed"])
    trainer.compile(keras.optimizers.Adam(config["learning_rate"], beta_1=config["beta1"]))
    return trainer


def epoch_weights_path(out_dir, number):
    return os.path.join(out_dir, "checkpoints", f"encoder_epoch_{number:03d}.weights.h5")


def stopped_falling(validation, patience, min_delta=0.0):
    """True when none of the last `patience` validation losses is below the best one before them by more than
    `min_delta` (Keras's EarlyStopping: a smaller fall does not count)."""
    return bool(patience) and len(validation) > patience and min(validation[-patience:]) >= min(
        validation[:-patience]) - min_delta


def next_learning_rate(validation, rates, patience, *, factor=0.5, min_delta=0.0):
    """The learning rate of the next epoch, given each finished epoch's validation loss and rate: `factor` times
    the last rate once the loss has not fallen by more than `min_delta` for `patience` epochs and the rate has not
    changed for as many (Keras's ReduceLROnPlateau); else the last rate. Patience 0: never changed."""
    rate = rates[-1]
    unchanged = len(rates) - next((index + 1 for index in range(len(rates) - 1, -1, -1) if rates[index] != rate), 0)
    if patience and unchanged >= patience and stopped_falling(validation, patience, min_delta):
        return rate * factor
    return rate


def train_encoder(run, config, *, resume=False, verbose=1):
    """Train (or resume) E for a loaded GAN run into <run>/encoder/; returns (encoder, history). After each epoch
    E's loss on held-out validation faces (and fixed codes) goes into validation_losses.npy; the learning rate is
    halved when it has not fallen for `lr_patience` epochs (learning_rate.npy holds each epoch's); training stops
    once it has not fallen for `patience` epochs, and encoder.keras keeps the epoch where it was lowest."""
    out_dir = os.path.join(run.directory, "encoder")
    keras.utils.set_random_seed(config["seed"])
    trainer = make_encoder_trainer(run, config)
    history = {name: [] for name in ("loss", *EncoderTrainer.PARTS, "validation", "learning_rate")}
    if resume:
        history = runs.load_checkpoint(out_dir, trainer.state_variables())
        history.setdefault("validation", [])  # an E trained before validation was watched
        history.setdefault("learning_rate", [float(np.float32(config["learning_rate"]))] * len(history["loss"]))
    fixed = fixed_held_out(out_dir, run.config, seed=config["seed"])
    validation = data_prep.run_split(run.config, split="validation", limit=config.get("validation_faces", 512)).images
    validation_z = dcgan.latent_for_seed(config["seed"] + 1, len(validation), run.config["latent_dim"],
                                         run.config["latent_distribution"])
    patience, min_delta = config.get("patience"), config.get("min_delta", 0.0)
    by_more = f" by more than {min_delta:g}" if min_delta else ""

    def save_epoch(number):
        reconstructions = dcgan.generate(run.generator, encoder_codes(trainer.encoder, data_prep.to_float(fixed)))
        data_prep.save_grid(os.path.join(out_dir, "samples", f"epoch_{number:03d}.png"),
                            np.concatenate([data_prep.to_float(fixed), reconstructions]), columns=len(fixed),
                            row_labels=["x", "G(E(x))"])
        runs.save_weights_atomic(trainer.encoder, epoch_weights_path(out_dir, number))
        history["validation"].append(trainer.validation_loss(validation, validation_z))
        history["learning_rate"].append(float(keras.ops.convert_to_numpy(trainer.loss_optimizer.learning_rate)))
        rate = next_learning_rate(history["validation"], history["learning_rate"], config.get("lr_patience", 0),
                                  min_delta=min_delta)
        if rate != history["learning_rate"][-1]:
            print(f"\nE's validation loss has not fallen{by_more} for {config['lr_patience']} epochs; "
                  f"learning rate {rate:.3g}")
            trainer.loss_optimizer.learning_rate.assign(rate)
        if stopped_falling(history["validation"], patience, min_delta):
            print(f"\nE's validation loss has not fallen{by_more} for {patience} epochs; stopping after epoch {number}")
            trainer.stop_training = True

    images = data_prep.run_split(run.config, split="train", limit=config["limit"]).images
    dataset = data_prep.make_dataset(images, batch_size=config["batch_size"], seed=config["seed"], scale=False)
    steps = config["steps_per_epoch"]
    if len(history['loss']) < config["epochs"]:
        print(f"training E on {len(images)} images, epochs {len(history['loss']) + 1} to {config['epochs']}")
    if not stopped_falling(history["validation"], patience, min_delta):
        fit_with_evidence(trainer, dataset.repeat() if steps else dataset, out_dir, epochs=config["epochs"],
                          steps_per_epoch=steps, history=history, save_epoch=save_epoch, verbose=verbose,
                          columns=("loss", *EncoderTrainer.PARTS))
    if history["validation"]:
        best = int(np.argmin(history["validation"])) + 1 + len(history["loss"]) - len(history["validation"])
        trainer.encoder.load_weights(epoch_weights_path(out_dir, best))
        print(f"E: the lowest validation loss, {min(history['validation']):.4g}, after epoch {best}")
    runs.save_model_atomic(trainer.encoder, os.path.join(out_dir, "encoder.keras"))
    return trainer.encoder, history


# ----------------------------------------------------------------------------------------------------------
# Projection by optimisation


@dataclasses.dataclass
class Projection:
    codes: np.ndarray  # (n, latent_dim) float32
    images: np.ndarray  # (n, size, size, 3) G(codes), float32 in [-1, 1]
    step_losses: np.ndarray  # (steps, n): each image's objective before each step
    final_losses: np.ndarray  # (n,): each image's objective at the returned codes


def as_images(images, image_size, *, what="images"):
    """uint8 or float [-1, 1] images (n, size, size, 3) -> float32 [-1, 1], or one ValueError line."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or len(images) == 0:
        raise data_prep.DataError(f"{what}: expected (n, {image_size}, {image_size}, 3) images for this run, got "
                                  f"shape {images.shape}")
    if images.dtype == np.uint8:
        return data_prep.to_float(images)
    images = images.astype(np.float32)
    if images.min() < -1.01 or images.max() > 1.01:
        raise data_prep.DataError(f"{what}: float images must lie in [-1, 1], got [{images.min():.3g}, "
                                  f"{images.max():.3g}] (pass uint8 for 0..255)")
    return images


def projection_objective(generator, discriminator, *, loss="l2", lambda_=1e-3, prior="gaussian", prior_weight=0.01,
                         lowres_factor=None, encoder=None, domain_weight=0.0, feature_weight=0.0):
    """(z, targets, mask) -> per-image loss: pixel distance + lambda * -log D(G(z)) + the Gaussian prior's
    0.5 |z|^2 / latent_dim + domain_weight * |z - E(G(z))|^2 / latent_dim (Zhu et al.'s domain regulariser)
    + feature_weight * the mean squared difference of D's last block's features of G(z) and of the target (the
    perceptual term E trains with; Zhu et al. use a VGG's, which would download weights)."""
    judge = None
    if feature_weight:
        features = dcgan.discriminator_features(discriminator)
        judge = keras.Model(discriminator.input, [discriminator.output, features.output])

    def objective(z, targets, mask):
        images = generator(z, training=False)
        total = pixel_distance(images, targets, loss=loss, mask=mask, lowres_factor=lowres_factor)
        if judge is not None:
            logits, image_features = judge(images, training=False)
            target_features = tf.stop_gradient(tf.cast(judge(targets, training=False)[1], tf.float32))
            difference = tf.cast(image_features, tf.float32) - target_features
            total += feature_weight * tf.reduce_mean(tf.square(difference), axis=[1, 2, 3])
            if lambda_:
                total += lambda_ * tf.nn.softplus(-tf.cast(logits, tf.float32))[:, 0]
        elif lambda_:
            total += lambda_ * realism_loss(discriminator, images)
        if prior == "gaussian" and prior_weight:
            total += prior_weight * 0.5 * tf.reduce_mean(tf.square(z), axis=1)
        if encoder is not None and domain_weight:
            total += domain_weight * tf.reduce_mean(tf.square(z - encoder(images, training=False)), axis=1)
        return total
    return objective


def make_adam_step(objective, *, learning_rate, prior, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """One Adam step on a batch of z for the per-image objective (each image's z is its own problem, so the sum
    is minimised); "sphere" puts z back on the sphere of radius sqrt(latent_dim), "box" clips it to [-1, 1]."""
    @tf.function(reduce_retracing=True)
    def step(z, first, second, number, targets, mask):
        with tf.GradientTape() as tape:
            tape.watch(z)
            losses = objective(z, targets, mask)  # (batch,)
            total = tf.reduce_sum(losses)  # inside the tape, or the sum is not recorded
        gradient = tape.gradient(total, z)
        first = beta_1 * first + (1 - beta_1) * gradient
        second = beta_2 * second + (1 - beta_2) * tf.square(gradient)
        corrected = learning_rate * tf.sqrt(1 - beta_2 ** number) / (1 - beta_1 ** number)
        z = z - corrected * first / (tf.sqrt(second) + epsilon)
        if prior == "sphere":
            z = z * tf.sqrt(tf.cast(tf.shape(z)[1], tf.float32)) / tf.norm(z, axis=1, keepdims=True)
        elif prior == "box":
            z = tf.clip_by_value(z, -1.0, 1.0)
        return z, first, second, losses
    return step


_PROJECTION_STEPS = weakref.WeakKeyDictionary()  # generator -> {(discriminator, options): (objective, step)}


def projection_step(generator, discriminator, *, lr, **options):
    """The objective and its traced Adam step for these models and options, built once per generator: the next
    projection with the same models (the editor's next photo, the next batch of a caller) runs the traced step
    instead of tracing G, D and their gradient again."""
    key = (discriminator, lr, *sorted(options.items()))
    built = _PROJECTION_STEPS.setdefault(generator, {})
    if key not in built:
        objective = projection_objective(generator, discriminator, **options)
        built[key] = objective, make_adam_step(objective, learning_rate=lr, prior=options["prior"])
    return built[key]


def check_projection_options(*, steps, learning_rate, loss, prior, batch_size):
    if loss not in PIXEL_LOSSES:
        raise data_prep.DataError(f"unknown pixel loss {loss!r}; expected one of {', '.join(PIXEL_LOSSES)}")
    if prior not in PRIORS:
        raise data_prep.DataError(f"unknown prior {prior!r}; expected one of {', '.join(PRIORS)}")
    if steps < 1 or batch_size < 1 or not learning_rate > 0:
        raise data_prep.DataError(f"steps, batch size and learning rate must be positive, got {steps}, "
                                  f"{batch_size}, {learning_rate}")


def project(generator, discriminator, images, *, steps=200, lr=0.05, lambda_=1e-3, loss="l2", prior="gaussian",
            prior_weight=0.01, initial_z=None, mask=None, lowres_factor=None, encoder=None, domain_weight=0.0,
            feature_weight=0.0, batch_size=64, seed=0, progress=True):
    """Codes whose G(z) is closest to `images` (uint8 or float [-1, 1]) by Adam on z, batch by batch (Yeh et al.
    2016): pixel loss, lambda times D's realism loss, a prior; `mask` (h, w) or (n, h, w) keeps the pixel loss
    where it is 1 (completion). Starts from `initial_z` (the hybrid: E(x)) or from z drawn with `seed`."""
    check_projection_options(steps=steps, learning_rate=lr, loss=loss, prior=prior, batch_size=batch_size)
    latent_dim, size = generator.input_shape[-1], generator.output_shape[1]
    targets = as_images(images, size)
    count = len(targets)
    start_z = dcgan.latent_for_seed(seed, count, latent_dim) if initial_z is None else np.asarray(initial_z, np.float32)
    if start_z.shape != (count, latent_dim):
        raise data_prep.DataError(f"initial z: expected shape {(count, latent_dim)}, got {start_z.shape}")
    masks = None if mask is None else np.broadcast_to(np.asarray(mask, np.float32).reshape(-1, size, size, 1),
                                                      (count, size, size, 1))
    objective, adam_step = projection_step(generator, discriminator, lr=lr, loss=loss, lambda_=lambda_, prior=prior,
                                           prior_weight=prior_weight, lowres_factor=lowres_factor, encoder=encoder,
                                           domain_weight=domain_weight, feature_weight=feature_weight)
    codes, final = np.zeros_like(start_z), np.zeros(count, np.float32)
    step_losses = np.zeros((steps, count), np.float32)
    with tqdm(total=steps * math.ceil(count / batch_size), desc="projecting", unit="step", disable=not progress,
              leave=False) as bar:
        for begin in range(0, count, batch_size):
            batch = slice(begin, begin + batch_size)
            z = tf.constant(start_z[batch])
            first, second = tf.zeros_like(z), tf.zeros_like(z)
            target = tf.constant(targets[batch])
            batch_mask = None if masks is None else tf.constant(masks[batch])
            for number in range(1, steps + 1):
                z, first, second, losses = adam_step(z, first, second, tf.constant(number, tf.float32), target,
                                                     batch_mask)
                step_losses[number - 1, batch] = losses.numpy()
                bar.update()
            final[batch] = objective(z, target, batch_mask).numpy()
            codes[batch] = z.numpy()
    return Projection(codes, dcgan.generate(generator, codes), step_losses, final)


# ----------------------------------------------------------------------------------------------------------
# Encoding: one function for every method, on a GAN run or a VAE run


@dataclasses.dataclass
class Encoding:
    codes: np.ndarray  # (n, latent_dim) float32
    reconstructions: np.ndarray  # (n, size, size, 3) float32 in [-1, 1]
    losses: np.ndarray  # (n,) pixel MSE of each reconstruction, images in [0, 1]
    step_losses: np.ndarray  # (steps, n) the optimisation's objective per step; (0, n) without one
    method: str
    run: str
    kind: str  # "gan" or "vae"
    seconds: float  # wall time of the method, loading excluded


def default_prior(config):
    """The Gaussian log-density for a run with z ~ N(0, 1); the box [-1, 1] for the paper's U(-1, 1)."""
    return "box" if config.get("latent_distribution") == "uniform" else "gaussian"


def encoder_codes(encoder, images, *, batch_size=256):
    """E(x), or a VAE encoder's posterior mean, in batches. (n, latent_dim)"""
    codes = runs.predict_batches(encoder, images, batch_size=batch_size)
    return codes[0] if isinstance(codes, list) else codes


def encode(run, images, *, method="hybrid", steps=200, lr=0.05, lambda_=1e-3, loss="l2", prior=None,
           prior_weight=0.01, domain_weight=0.0, feature_weight=0.0, batch_size=64, seed=0, progress=True):
    """Codes of `images` (uint8 or float [-1, 1], (n, size, size, 3)) for a run (a directory or a dcgan.Run):
    "random" (the floor), "encoder" (E(x); a VAE run's posterior mean), "optimize" (projection from a random z)
    or "hybrid" (projection from E(x), with domain_weight Zhu et al.'s regulariser). A VAE run has no
    discriminator, so only "random" and "encoder" work on it."""
    if method not in METHODS:
        raise data_prep.DataError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    run = dcgan.load_run(run)
    kind = run.kind
    if kind == "vae" and method in ("optimize", "hybrid"):
        raise data_prep.DataError(f"{run.directory} is a VAE run; it has no discriminator to {method} with "
                                  f"(use --method encoder)")
    targets = as_images(images, run.config["image_size"])
    encoder = load_encoder(run) if method in ("encoder", "hybrid") else None
    prior = prior or default_prior(run.config)
    started = time.perf_counter()
    step_losses = np.zeros((0, len(targets)), np.float32)
    if method == "random":
        codes = dcgan.latent_for_seed(seed, len(targets), run.config["latent_dim"],
                                      run.config.get("latent_distribution", "normal"))
    elif method == "encoder":
        codes = encoder_codes(encoder, targets)
    else:
        initial = encoder_codes(encoder, targets) if method == "hybrid" else None
        projection = project(run.generator, run.discriminator, targets, steps=steps, lr=lr, lambda_=lambda_, loss=loss,
                             prior=prior, prior_weight=prior_weight, initial_z=initial,
                             encoder=encoder if domain_weight else None, domain_weight=domain_weight,
                             feature_weight=feature_weight, batch_size=batch_size, seed=seed, progress=progress)
        codes, step_losses = projection.codes, projection.step_losses
    reconstructions = dcgan.generate(run.generator, codes)
    seconds = time.perf_counter() - started
    return Encoding(codes, reconstructions, pixel_mse(reconstructions, targets), step_losses, method,
                    run.directory, kind, seconds)


def save_codes(path, encoding, names):
    """The .npz every later script reads (facemath.py): codes, names, method, run, kind, loss, step_losses."""
    if len(names) != len(encoding.codes):
        raise data_prep.DataError(f"{len(names)} names for {len(encoding.codes)} codes")
    with data_prep.atomic_path(path) as temporary:
        np.savez(temporary, codes=encoding.codes, names=np.asarray(names, dtype=str), method=encoding.method,
                 run=encoding.run, kind=encoding.kind, loss=encoding.losses.astype(np.float32),
                 step_losses=encoding.step_losses.astype(np.float32))
    return path


def save_pairs_grid(path, originals, reconstructions, *, columns=GRID_FACES):
    """Originals beside their reconstructions: rows of `columns` originals, each followed by its reconstructions."""
    rows = []
    for begin in range(0, len(originals), columns):
        rows += [originals[begin:begin + columns], reconstructions[begin:begin + columns]]
        if len(rows[-1]) < columns:  # pad the last pair of rows so that the columns line up
            pad = np.ones((columns - len(rows[-1]), *originals.shape[1:]), np.float32)
            rows[-2], rows[-1] = np.concatenate([rows[-2], pad]), np.concatenate([rows[-1], pad])
    return data_prep.save_grid(path, np.concatenate(rows), columns=columns)


# ----------------------------------------------------------------------------------------------------------
# Command line


def add_projection_flags(add):
    add("--steps", type=int, default=200, help="Adam steps of the optimisation")
    add("--lr", type=float, default=0.05, help="Adam learning rate on z")
    add("--lambda", dest="lambda_", type=float, default=1e-3, help="weight of D's realism loss (Yeh et al.'s lambda)")
    add("--prior", default=None, choices=PRIORS,
        help="keeps z plausible: gaussian log-density, sphere or box constraint (default: gaussian, box for U(-1,1))")
    add("--prior-weight", type=float, default=0.01, help="weight of the Gaussian prior term")
    add("--seed", type=int, default=0, help="seed of the random starting z (and of the random mask)")
    add("--batch-size", type=int, default=64, help="images optimised at once")


def add_input_flags(add):
    add("photos", nargs="*", help="photos or folders of photos (aligned and cropped with data_prep.load_face)")
    add("--split", default=None, choices=list(data_prep.SPLITS), help="encode a split of the run's data instead")
    add("--limit", type=int, default=None, help="only the first N images of the split")
    add("--fallback-crop", "--center-crop", dest="fallback_crop", action="store_true",
        help="use a plain centre crop for a photo without a face instead of refusing it")
    add("--out", default=None, help="directory to write into (default: inside the run's encoder/ directory)")


def subcommand_parser(command):
    parser = runs.OneLineParser(prog=f"encoder.py {command}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    if command in ("train", "encode"):
        add("--run", required=True, help="the GAN run directory (encode also takes a VAE run)")
    if command == "train":
        runs.add_optimizer_flags(add, epochs=50, batch_size=64, what="E", epochs_help="at most this many "
                                 "epochs (early stopping usually ends sooner)",
                                 batch_help="batch of real images, and of (z, G(z)) pairs")
        add("--patience", type=int, default=10, help="stop once the validation loss has not fallen for this many "
            "epochs (0: never); encoder.keras keeps the best epoch")
        add("--lr-patience", type=int, default=0, help="halve the learning rate once the validation loss has not "
            "fallen for this many epochs, nor the rate changed (0: a constant rate)")
        add("--min-delta", type=float, default=0.0, help="a fall of the validation loss by no more than this does "
            "not count for --patience and --lr-patience")
        add("--validation-faces", type=int, default=512, help="held-out validation faces the early stopping watches")
        add("--steps-per-epoch", type=int, default=None, help="cap the steps of an epoch (quick checks)")
        add("--latent-weight", type=float, default=1.0, help="weight of |E(G(z)) - z|^2 on generated pairs")
        add("--pixel-weight", type=float, default=1.0, help="weight of the pixel loss of G(E(x)) against real x")
        add("--feature-weight", type=float, default=0.1, help="weight of the loss in D's features on real x")
        add("--pixel-loss", default="l2", choices=PIXEL_LOSSES, help="pixel loss of the real-image part")
        add("--feature-layer", default=None, help="D's layer for the feature loss (default: its last block)")
        add("--limit", type=int, default=None, help="train on only the first N training images")
        add("--seed", type=int, default=0, help="seed of E's weights, the z stream and the shuffling")
        add("--resume", action="store_true", help="continue after the last finished epoch")
    elif command == "encode":
        add("--method", default="hybrid", choices=METHODS, help="how codes are found (a VAE run: encoder)")
        add("--domain-weight", type=float, default=0.0, help="hybrid: weight of |z - E(G(z))|^2 (Zhu et al.)")
        add("--feature-weight", type=float, default=0.0, help="optimisation: weight of the squared difference in D's "
            "last block's features (E's perceptual term)")
        add("--pixel-loss", dest="loss", default="l2", choices=PIXEL_LOSSES, help="pixel loss of the optimisation")
        add_input_flags(add)
        add_projection_flags(add)
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser


def resolve_training(parser, argv, out_dir, config):
    """(config, resume) for a training of E or of the VAE (vae.py): a new training refuses a directory that holds
    one; a resumed one reads config.json, where only --epochs, --steps-per-epoch and E's --patience,
    --lr-patience and --min-delta may change."""
    if not config["resume"]:
        runs.check_new_run(out_dir, "a training")
        return config, False
    typed = runs.typed_flags(parser, argv)
    return runs.resumed_config(config, out_dir, typed=typed, resumable={"epochs", "steps_per_epoch", "patience",
                                                                        "lr_patience", "min_delta",
                                                                        "resume", "run", "name", "runs_dir",
                                                                        "verbose"}), True


def run_train(argv):
    args = subcommand_parser("train").parse_args(argv)
    run = dcgan.load_run(args.run, kind="gan")
    out_dir = os.path.join(run.directory, "encoder")
    config, resume = resolve_training(subcommand_parser("train"), argv, out_dir, vars(args))
    if resume and config.get("generator_fingerprint") != generator_fingerprint(run.generator):
        raise data_prep.DataError(f"the encoder in {out_dir} was trained for another generator; "
                                  f"start a new one without --resume")
    if config["epochs"] < 1 or config["batch_size"] < 1:
        raise data_prep.DataError("--epochs and --batch-size must be positive")
    if config.get("min_delta", 0.0) < 0:
        raise data_prep.DataError(f"--min-delta must be 0 or more, got {config['min_delta']}")
    weights = [config[f"{part}_weight"] for part in EncoderTrainer.PARTS]
    if min(weights) < 0 or not any(weights):
        raise data_prep.DataError(f"the loss weights must be 0 or more and not all 0, got {weights}")
    config.update(run=run.directory, generator_fingerprint=generator_fingerprint(run.generator),
                  versions=config.get("versions") or runs.library_versions())
    dcgan.discriminator_features(run.discriminator, layer=config["feature_layer"])  # a bad layer fails now
    runs.training_job(out_dir, config, resume=resume, train=lambda: train_encoder(run, config, resume=resume),
                      result=f"E in {out_dir}/encoder.keras")


def input_faces(args, config):
    """(uint8 faces, names, label) from the photos or the split, every one loaded before anything is written."""
    if args.split and args.photos:
        raise data_prep.DataError("pass photos or --split, not both")
    if args.split:
        split = data_prep.run_split(config, split=args.split, limit=args.limit)
        return split.images, split.names, args.split
    if not args.photos:
        raise data_prep.DataError("no photos: name photos or folders, or pass --split")
    return (*data_prep.read_faces(args.photos, config, fallback=args.fallback_crop), "photos")


def run_encode(argv):
    args = subcommand_parser("encode").parse_args(argv)
    run = dcgan.load_run(args.run)
    if run.config.get("kind") == "vae" and args.method in ("optimize", "hybrid"):
        raise data_prep.DataError(f"{args.run} is a VAE run; use --method encoder (or random)")
    faces, names, label = input_faces(args, run.config)
    encoding = encode(run, faces, method=args.method, steps=args.steps, lr=args.lr, lambda_=args.lambda_,
                      loss=args.loss, prior=args.prior, prior_weight=args.prior_weight,
                      domain_weight=args.domain_weight, feature_weight=args.feature_weight,
                      batch_size=args.batch_size, seed=args.seed)
    out = args.out or os.path.join(run.directory, "encoder", "codes")
    path = save_codes(os.path.join(out, f"{args.method}-{label}.npz"), encoding, names)
    grid = save_pairs_grid(os.path.join(out, f"{args.method}-{label}.png"), data_prep.to_float(faces[:64]),
                           encoding.reconstructions[:64])
    print(f"{len(names)} faces, mean pixel MSE {encoding.losses.mean():.4f}, {encoding.seconds:.1f} s; "
          f"wrote {path} and {grid}")


def parse_args(argv=None):
    """(command, the rest of argv): the subcommand is the first word."""
    return runs.split_command(argv, SUBCOMMANDS, "encoder.py")


def main(argv=None):
    command, rest = parse_args(argv)
    if command in MOVED:
        raise data_prep.DataError(f"`encoder.py {command}` moved: run `python {MOVED[command]}` with the same flags")
    {"train": run_train, "encode": run_encode}[command](rest)


if __name__ == "__main__":
    runs.run_cli(main)
