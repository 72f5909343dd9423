"""DCGAN faces: Radford, Metz and Chintala 2015, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", trained on CelebA as in NVIDIA's "Photo editing with generative adversarial
networks" posts and carpedm20's DCGAN-tensorflow (108-pixel centre crop resized to 64x64, z of 100, Adam 2e-4
with beta1 0.5, batch 64).

A run leaves its evidence in runs/<name>/: config.json, the fixed-z grid of every epoch in samples/, per-epoch
d_losses.npy and g_losses.npy, a per-step log.csv with D(x) and D(G(z)), a resumable checkpoint of both networks
and both optimizers, each epoch's generator, and the final generator.keras and discriminator.keras.

Usage:
    python dcgan.py --epochs 60 --data ~/celeba                       # the paper's run on real CelebA
    python dcgan.py --epochs 4 --filters 32 --name demo              # CPU demo on the synthetic CelebA
    python dcgan.py --resume --name demo --epochs 6                  # continue after the last finished epoch
    python dcgan.py --data ~/celeba --filter "Attractive,-Eyeglasses" --limit 50000
    python dcgan.py --freeze-d-after 2 --epochs 4 --name frozen      # the degenerate-generator experiment
    python dcgan.py plot runs/demo [runs/frozen ...]                 # loss curves, overlaid
    python dcgan.py sample runs/demo --count 64 --seed 1 --interpolate 3 7
"""

import argparse
import dataclasses
import functools
import math
import os
import shutil
import sys

import numpy as np

import augmentations
import data_prep
import runs

import keras  # noqa: E402  (runs chose the backend and loaded TensorFlow quietly)
import tensorflow as tf  # noqa: E402

SUBCOMMANDS = ("plot", "sample")
NETWORKS = ("generator", "discriminator")
LOSSES = ("bce", "hinge")  # the paper's cross-entropy with the non-saturating G loss; the hinge loss


# ----------------------------------------------------------------------------------------------------------
# Model builders


def weight_init():
    """The paper's N(0, 0.02), a new initializer per layer: Keras gives an unseeded initializer its seed when it is
    made, so one made at import time would ignore --seed and give same-shaped layers identical weights."""
    return keras.initializers.RandomNormal(stddev=0.02)


def number_of_blocks(image_size):
    """Up- or down-sampling blocks between 4x4 and image_size: 4 for 64 (the paper), 3 for 32, 5 for 128."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image size must be a power of two of at least 8, got {image_size}")
    return int(math.log2(image_size)) - 2


def batch_norm(name, *, synchronized=False):
    # PyTorch's and carpedm20's momentum (0.9 in Keras terms) and epsilon. `synchronized` computes the statistics
    # over the global batch under tf.distribute, so R replicas train the same network as one device would.
    gamma = keras.initializers.RandomNormal(mean=1.0, stddev=0.02)
    return FusedBatchNorm(momentum=0.9, epsilon=1e-5, gamma_initializer=gamma, synchronized=synchronized, name=name)


@keras.saving.register_keras_serializable(package="facemath")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, computed by TensorFlow's fused kernel (FusedBatchNormV3: oneDNN's on a CPU,
    cuDNN's on a GPU) on 4-D channels-last inputs. Keras 3 builds batch norm from a dozen small ops and, under
    mixed bfloat16, casts every input to float32 and back; the fused kernel takes bfloat16 in and out and keeps
    its statistics in float32. Same weights, same maths (the moving variance is the biased one, as Keras's):
    the DCGAN step runs 1.28x faster in mixed bfloat16 and 1.14x in float32 on a 2-core Xeon with AMX
    (docs/speed.md). Other inputs (a mask, synchronized statistics, another rank or axis) take Keras's path."""

    def call(self, inputs, training=None, mask=None):
        if (mask is not None or self.synchronized or len(inputs.shape) != 4 or self.axis not in (-1, 3)
                or not self.scale or not self.center or not isinstance(training, (bool, type(None)))):
            return super().call(inputs, training=training, mask=mask)
        batch_statistics = bool(training) and self.trainable
        empty = tf.zeros([0], tf.float32)
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, self.compute_dtype), scale=self.gamma.value, offset=self.beta.value,
            mean=empty if batch_statistics else self.moving_mean.value,
            variance=empty if batch_statistics else self.moving_variance.value,
            epsilon=self.epsilon, data_format="NHWC", is_training=batch_statistics)
        if batch_statistics:
            shape = tf.shape(inputs)
            count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # the kernel returns the unbiased one
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


@keras.saving.register_keras_serializable(package="facemath")
class MinibatchStdDev(keras.layers.Layer):
    """Karras et al. 2018 ("Progressive Growing of GANs"): the standard deviation of each feature over the batch,
    averaged into one number and appended as a constant channel, so D can see a batch that lacks variety (a
    collapsing generator) and G is pushed to spread out. (batch, h, w, c) -> (batch, h, w, c + 1)."""

    def call(self, inputs):
        values = keras.ops.cast(inputs, "float32")
        # sqrt(variance + eps), not std: std's gradient is infinite where the spread is 0 (a batch of one image,
        # as when one photo is projected), and that NaN would reach z.
        deviations = values - keras.ops.mean(values, axis=0, keepdims=True)
        spread = keras.ops.mean(keras.ops.sqrt(keras.ops.mean(keras.ops.square(deviations), axis=0) + 1e-8))
        shape = keras.ops.shape(inputs)
        channel = keras.ops.cast(keras.ops.broadcast_to(spread, (shape[0], shape[1], shape[2], 1)), inputs.dtype)
        return keras.ops.concatenate([inputs, channel], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


def build_generator(*, latent_dim=100, image_size=64, filters=64, kernel_size=5, synchronized_batch_norm=False,
                    name="generator"):
    """z -> dense 4x4x(filters*2^(blocks-1)) -> transposed convolutions halving channels, doubling size -> tanh."""
    blocks = number_of_blocks(image_size)
    channels = filters * 2 ** (blocks - 1)  # 512 for 64x64 and filters 64
    z = keras.Input((latent_dim,), name="z")
    x = keras.layers.Dense(4 * 4 * channels, use_bias=False, kernel_initializer=weight_init(), name="project")(z)
    x = keras.layers.Reshape((4, 4, channels))(x)  # (batch, 4, 4, 512)
    x = keras.layers.ReLU()(batch_norm("project_bn", synchronized=synchronized_batch_norm)(x))
    for block in range(1, blocks):
        channels //= 2
        x = keras.layers.Conv2DTranspose(channels, kernel_size, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=weight_init(), name=f"up{block}")(x)
        x = batch_norm(f"up{block}_bn", synchronized=synchronized_batch_norm)(x)
        x = keras.layers.ReLU()(x)  # (batch, 4*2^block, 4*2^block, channels)
    x = keras.layers.Conv2DTranspose(3, kernel_size, strides=2, padding="same", kernel_initializer=weight_init(),
                                     name=f"up{blocks}")(x)
    image = keras.layers.Activation("tanh", dtype="float32", name="image")(x)  # (batch, size, size, 3)
    return keras.Model(z, image, name=name)


def conv_stack(image, *, image_size=64, filters=64, kernel_size=5, spectral_norm=False,
               synchronized_batch_norm=False):
    """D's body, shared by E and the VAE's encoder: strided convolutions with 1x, 2x, 4x, 8x filters, LeakyReLU
    0.2, batch norm on all but the first. Each block's activation is named `down<n>_features` (see
    discriminator_features). `spectral_norm` (Miyato et al. 2018, SN-GAN) divides every weight matrix by its
    largest singular value and drops the batch norm, as SN-GAN does. (batch, size, size, 3) -> (batch, 4, 4, 8f)."""
    x = image
    for block in range(number_of_blocks(image_size)):
        convolution = keras.layers.Conv2D(filters * 2 ** block, kernel_size, strides=2, padding="same",
                                          use_bias=block == 0 or spectral_norm, kernel_initializer=weight_init(),
                                          name=f"down{block + 1}_conv" if spectral_norm else f"down{block + 1}")
        x = (keras.layers.SpectralNormalization(convolution, name=f"down{block + 1}") if spectral_norm
             else convolution)(x)
        if block > 0 and not spectral_norm:
            x = batch_norm(f"down{block + 1}_bn", synchronized=synchronized_batch_norm)(x)
        # (batch, size/2^(block+1), size/2^(block+1), filters*2^block)
        x = keras.layers.LeakyReLU(0.2, name=f"down{block + 1}_features")(x)
    return x


def build_discriminator(*, image_size=64, filters=64, kernel_size=5, minibatch_std=False, spectral_norm=False,
                        synchronized_batch_norm=False, name="discriminator"):
    """conv_stack, then one logit; `minibatch_std` appends the batch's spread as a channel before the logit (off
    in the paper's model)."""
    image = keras.Input((image_size, image_size, 3), name="image")
    x = conv_stack(image, image_size=image_size, filters=filters, kernel_size=kernel_size,
                   spectral_norm=spectral_norm, synchronized_batch_norm=synchronized_batch_norm)
    if minibatch_std:
        x = MinibatchStdDev(name="minibatch_std")(x)  # (batch, 4, 4, 8*filters + 1)
    x = keras.layers.Flatten()(x)  # (batch, 4*4*8*filters)
    dense = keras.layers.Dense(1, kernel_initializer=weight_init(), dtype="float32",
                               name="logit_dense" if spectral_norm else "logit")
    logit = (keras.layers.SpectralNormalization(dense, dtype="float32", name="logit") if spectral_norm else dense)(x)
    return keras.Model(image, logit, name=name)


def discriminator_features(discriminator, *, layer=None):
    """D cut at a named layer: a model from images to that layer's output, the "perceptual" features of Yeh et al.
    2016. Default: the last block's activation (`down4_features` at 64x64)."""
    names = [item.name for item in discriminator.layers if item.name.endswith("_features")]
    layer = layer or (names[-1] if names else None)
    if layer not in [item.name for item in discriminator.layers]:
        raise ValueError(f"the discriminator has no layer {layer!r}; feature layers: {', '.join(names) or 'none'}")
    output = discriminator.get_layer(layer).output
    return keras.Model(discriminator.input, output, name=f"{discriminator.name}_{layer}")


# ----------------------------------------------------------------------------------------------------------
# The GAN


def sample_latent(count, latent_dim, *, distribution="normal", seed=None):
    """Latent codes from N(0, 1) (the default) or U(-1, 1) (the paper's), as a keras tensor."""
    if distribution == "normal":
        return keras.random.normal((count, latent_dim), seed=seed)
    if distribution == "uniform":
        return keras.random.uniform((count, latent_dim), minval=-1.0, maxval=1.0, seed=seed)
    raise ValueError(f"unknown latent distribution {distribution!r}; expected 'normal' or 'uniform'")


class DCGAN(runs.TrainingModel):
    """Owns G, D, their optimizers and loss trackers; one D step then `generator_steps` G steps per batch. With
    `ema` > 0 it also keeps an exponential moving average of G's weights (Karras et al. 2018, Yazici et al. 2019),
    updated after every step: `sampling_generator`, the network that is saved and sampled. Its batch norm
    statistics are measured anew on its own outputs before it is used (`refresh_average_statistics`, BigGAN's
    "standing statistics"): averaged weights do not match averaged statistics, and the pair paints flat grey.

    `loss`: "bce", the paper's cross-entropy with the non-saturating G loss, or "hinge" (Lim and Ye 2017, as in
    SN-GAN and BigGAN). `diff_augment`: DiffAugment's transforms on every D input. `r1` > 0: the R1 penalty
    r1/2 E||grad_x D(x)||^2 on real images (Mescheder et al. 2018), lazily, every `r1_every` D steps with its
    weight multiplied by `r1_every` (Karras et al. 2020), so it costs one extra pass in `r1_every`."""

    def __init__(self, generator, discriminator, *, latent_dim=100, latent_distribution="normal",
                 generator_steps=1, label_smoothing=0.0, seed=0, ema=0.0, loss="bce", diff_augment=(),
                 r1=0.0, r1_every=16, **kwargs):
        super().__init__(STEP_COLUMNS, **kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = latent_dim
        self.latent_distribution = latent_distribution
        self.generator_steps = generator_steps
        self.real_label = 1.0 - label_smoothing  # one-sided: only real labels are smoothed
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        self.loss, self.diff_augment, self.r1, self.r1_every = loss, tuple(diff_augment), r1, r1_every
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.augment_seed = keras.random.SeedGenerator(seed + 1)
        self.d_steps = keras.Variable(0, dtype="int64", trainable=False, name="d_steps")
        self.ema = ema
        self.average_generator = None
        if ema > 0:
            self.average_generator = keras.models.clone_model(generator)
            self.average_generator.set_weights(generator.get_weights())
            self.average_updates = keras.Variable(0.0, trainable=False, name="average_updates")

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @property
    def sampling_generator(self):
        """The generator to save and sample from: the weight average when there is one."""
        return self.generator if self.average_generator is None else self.average_generator

    def _update_average(self):
        """Trainable weights only, with the decay warmed up as in tf.train.ExponentialMovingAverage:
        min(ema, (1 + n) / (10 + n)) at the n-th update, so the untrained start fades within a few hundred steps."""
        updates = self.average_updates.value
        decay = tf.minimum(self.ema, (1.0 + updates) / (10.0 + updates))
        for average, current in zip(self.average_generator.trainable_weights, self.generator.trainable_weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(current, average.dtype))
        self.average_updates.assign_add(1.0)

    def refresh_average_statistics(self, *, batches=50, batch_size=64, seed=0):
        """Batch norm's moving mean and variance of the average generator, measured on `batches` batches of its
        own outputs (momentum 0.9: 50 batches leave 0.5% of the old values)."""
        for index in range(batches):
            z = latent_for_seed(seed + index, batch_size, self.latent_dim, self.latent_distribution)
            self.average_generator(z, training=True)

    def _latent(self, batch_size):
        return sample_latent(batch_size, self.latent_dim, distribution=self.latent_distribution,
                             seed=self.seed_generator)

    @staticmethod
    def _average(per_example):
        # Divides by the global batch, so the gradients summed across replicas are those of the mean loss.
        return tf.nn.compute_average_loss(per_example)

    @staticmethod
    def _global_mean(values):
        """The mean over the whole global batch, the same on every replica: what the step's loss really was.
        (Each replica's `_average` is its share of the loss, 1/R of it with R replicas: right for gradients,
        wrong for a log.)"""
        local = tf.reduce_mean(tf.cast(values, tf.float32))
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, local)

    @staticmethod
    def _cross_entropy(label, logits):
        logits = tf.cast(logits, tf.float32)
        return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)[:, 0]

    def _judge(self, images, *, training):
        """D's logits (float32) for images, through DiffAugment's transforms when they are on."""
        if self.diff_augment:
            images = augmentations.diff_augment(images, self.diff_augment, self.augment_seed)
        return tf.cast(self.discriminator(images, training=training), tf.float32)

    def _discriminator_losses(self, real_images, fake_images, *, training):
        """Per-example D losses (real + fake). Real and fake batches go through D separately, as in the paper, so
        batch norm sees one kind at a time."""
        real_logits = self._judge(real_images, training=training)
        fake_logits = self._judge(fake_images, training=training)
        if self.loss == "hinge":
            per_example = tf.nn.relu(1.0 - real_logits[:, 0]) + tf.nn.relu(1.0 + fake_logits[:, 0])
        else:
            per_example = self._cross_entropy(self.real_label, real_logits) + self._cross_entropy(0.0, fake_logits)
        return per_example, real_logits, fake_logits

    def _generator_losses(self, fake_images):
        # Non-saturating loss: G maximises log D(G(z)) instead of minimising log(1 - D(G(z))); hinge: -D(G(z)).
        fake_logits = self._judge(fake_images, training=self.discriminator.trainable)
        return -fake_logits[:, 0] if self.loss == "hinge" else self._cross_entropy(1.0, fake_logits)

    def _r1_penalty(self, real_images):
        """Per-example ||grad_x D(x)||^2 on the real images, in float32."""
        with tf.GradientTape() as tape:
            tape.watch(real_images)
            total = tf.reduce_sum(self._judge(real_images, training=True))
        gradients = tf.cast(tape.gradient(total, real_images), tf.float32)
        return tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3])

    def _lazy_r1(self, real_images):
        """r1/2 * r1_every * the penalty on D steps 0, r1_every, 2 r1_every, ...; zeros on the others."""
        weight = 0.5 * self.r1 * self.r1_every
        return tf.cond(tf.equal(self.d_steps % self.r1_every, 0),
                       lambda: weight * self._r1_penalty(real_images),
                       lambda: tf.zeros([tf.shape(real_images)[0]], tf.float32))

    @staticmethod
    def _apply(optimizer, tape, loss, variables):
        gradients = tape.gradient(loss, [variable.value for variable in variables])
        optimizer.apply_gradients(zip(gradients, variables))

    def train_step(self, real_images):
        """One D step on real and generated images, then G steps. As in PyTorch's reference, the first G step
        reuses the batch of generated images (one generator forward pass fewer per step). Returns this step's
        own losses and D outputs, averaged over the global batch (the trackers keep the epoch's means)."""
        real_images = runs.to_float_batch(real_images)  # the pipeline hands over uint8: a quarter of the bytes
        batch_size = tf.shape(real_images)[0]
        # Only G's variables are watched, so that the D step inside is not recorded on G's tape.
        generator_variables = self.generator.trainable_variables
        with tf.GradientTape(watch_accessed_variables=False) as generator_tape:
            generator_tape.watch([variable.value for variable in generator_variables])
            fake_images = self.generator(self._latent(batch_size), training=True)
            if self.discriminator.trainable:
                with tf.GradientTape() as discriminator_tape:
                    d_losses, real_logits, fake_logits = self._discriminator_losses(
                        real_images, tf.stop_gradient(fake_images), training=True)
                    penalty = self._lazy_r1(real_images) if self.r1 > 0 else 0.0
                    d_loss = self._average(d_losses + penalty)
                self._apply(self.d_optimizer, discriminator_tape, d_loss, self.discriminator.trainable_variables)
                self.d_steps.assign_add(1)
            else:  # frozen (the degenerate-generator experiment): D is only scored, never updated
                d_losses, real_logits, fake_logits = self._discriminator_losses(real_images, fake_images,
                                                                                 training=False)
            g_losses = self._generator_losses(fake_images)
            g_loss = self._average(g_losses)
        self._apply(self.g_optimizer, generator_tape, g_loss, generator_variables)
        for _ in range(self.generator_steps - 1):
            with tf.GradientTape() as generator_tape:
                g_losses = self._generator_losses(self.generator(self._latent(batch_size), training=True))
                g_loss = self._average(g_losses)
            self._apply(self.g_optimizer, generator_tape, g_loss, generator_variables)
        if self.average_generator is not None:
            self._update_average()
        step = {"d_loss": self._global_mean(d_losses), "g_loss": self._global_mean(g_losses),
                "d_real": self._global_mean(tf.sigmoid(tf.cast(real_logits, tf.float32))),
                "d_fake": self._global_mean(tf.sigmoid(tf.cast(fake_logits, tf.float32)))}
        for name, value in step.items():
            self.trackers[name].update_state(value)
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces a step's outputs across workers as a mean over axis 0, which a scalar lacks; the
            # values are the same on every replica, so one-element vectors come back as the same means.
            return {name: tf.reshape(value, [1]) for name, value in step.items()}
        return step

    def state_variables(self):
        """Every variable a resumed run needs, in a fixed order: both networks, both optimizers, the z stream, and
        the generator's average when there is one."""
        average = ([] if self.average_generator is None
                   else self.average_generator.weights + [self.average_updates])
        augment = [self.augment_seed.state, self.d_steps] if self.diff_augment or self.r1 else []
        return (self.generator.weights + self.discriminator.weights + self.d_optimizer.variables
                + self.g_optimizer.variables + [self.seed_generator.state] + average + augment)


# ----------------------------------------------------------------------------------------------------------
# Callbacks


STEP_COLUMNS = ("d_loss", "g_loss", "d_real", "d_fake")  # what train_step returns and log.csv keeps per step
HISTORY_NAMES = {"d_loss": "d_losses", "g_loss": "g_losses", "d_real": "d_real", "d_fake": "d_fake"}
LOSS_FILES = {"d_losses": "d_losses.npy", "g_losses": "g_losses.npy"}


def save_epoch_evidence(gan, run_dir, number, *, fixed_z, history, writer=None):
    """What a DCGAN run keeps of each finished epoch: the fixed-z grid, that epoch's generator and discriminator,
    the resumable checkpoint and the loss arrays (and TensorBoard's grid and scalars when `writer` is given)."""
    if gan.average_generator is not None:
        gan.refresh_average_statistics(seed=1_000_000 + 1000 * number)
    grid_path = os.path.join(run_dir, "samples", f"epoch_{number:03d}.png")
    images = gan.sampling_generator(fixed_z, training=False)
    data_prep.save_grid(grid_path, keras.ops.convert_to_numpy(images), columns=8)
    runs.save_epoch_networks(run_dir, number, {"generator": gan.sampling_generator, "discriminator": gan.discriminator},
                             gan.state_variables(), history, arrays=LOSS_FILES)
    if writer:
        with writer.as_default(step=number):
            tf.summary.image("fixed_z_grid", data_prep.read_image_uint8(grid_path)[None], step=number)
            for name, values in history.items():
                tf.summary.scalar(f"epoch/{name}", values[-1])


def run_recorder(gan, run_dir, *, fixed_z, history, tensorboard_dir=None):
    """runs.EpochRecorder (log.csv, NaN guard) saving save_epoch_evidence after each epoch."""
    writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None
    return runs.EpochRecorder(history, HISTORY_NAMES, log_dir=run_dir, save_epoch=lambda number: save_epoch_evidence(
        gan, run_dir, number, fixed_z=fixed_z, history=history, writer=writer))


class FreezeDiscriminator(keras.callbacks.Callback):
    """From epoch `after_epoch` + 1 on, D stops learning (NVIDIA's degenerate-generator experiment)."""

    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.after_epoch and self.model.discriminator.trainable:
            print(f"\nfreezing the discriminator from epoch {epoch + 1}")
            self.model.discriminator.trainable = False
            self.model.make_train_function(force=True)  # train_step branches on trainable at trace time


# ----------------------------------------------------------------------------------------------------------
# Training


def build_gan(config, *, replicas=1):
    """Build G and D and the DCGAN from a run's config (dict with the training flags). With several replicas,
    batch norm is synchronized across them, so the global batch trains the network one device would."""
    generator, discriminator = (build_network(config, network, synchronized_batch_norm=replicas > 1)
                                for network in NETWORKS)
    gan = DCGAN(generator, discriminator, latent_dim=config["latent_dim"],
                latent_distribution=config["latent_distribution"], generator_steps=config["g_steps"],
                label_smoothing=config["label_smoothing"], seed=config["seed"], ema=config.get("ema", 0.0),
                loss=config.get("loss", "bce"), diff_augment=augmentations.parse_diff_augment(config.get("diff_augment")),
                r1=config.get("r1", 0.0), r1_every=config.get("r1_every", 16))
    d_rate = config.get("d_learning_rate") or config["learning_rate"]
    g_rate = config.get("g_learning_rate") or config["learning_rate"]
    gan.compile(d_optimizer=keras.optimizers.Adam(d_rate, beta_1=config["beta1"]),
                g_optimizer=keras.optimizers.Adam(g_rate, beta_1=config["beta1"]))
    # Slots are made now, not lazily inside the first distributed step (where MirroredStrategy fails).
    gan.d_optimizer.build(discriminator.trainable_variables)
    gan.g_optimizer.build(generator.trainable_variables)
    return gan


def train_dataset(config):
    """The training images of a run's config as a tf.data pipeline of uint8 batches; returns (dataset, faces,
    per_epoch): the distinct faces, and the faces an epoch shows counting each oversampled one as often as it
    appears."""
    train = data_prep.load_split(config["data"], split="train", filter=config["filter"], crop="dcgan",
                                 image_size=config["image_size"], crop_size=config["crop_size"],
                                 limit=config["limit"], cache_dir=config["cache_dir"])
    repeats = data_prep.run_repeats(config, train.labels)
    dataset = data_prep.make_dataset(train.images, batch_size=config["batch_size"], flip=config["flip"],
                                     seed=config["seed"], scale=False, repeats=repeats)
    faces = len(train.names)
    per_epoch = faces if repeats is None else int(repeats.sum())
    return (dataset.repeat() if config.get("steps_per_epoch") else dataset), faces, per_epoch


def train(config, run_dir, *, resume=False, verbose=1):
    """Train (or resume) the DCGAN described by `config` in `run_dir`; returns (gan, history)."""
    strategy = runs.make_strategy(config["strategy"], worker_timeout=config.get("worker_timeout"))
    keras.utils.set_random_seed(config["seed"])
    dataset, count, per_epoch = train_dataset(config)
    if config["strategy"] == "multiworker":  # its collectives cannot reduce uint8, which Keras's input checks do
        dataset = dataset.map(runs.to_float_batch)
    with strategy.scope(), runs.dtype_policy(config["compute_precision"]):
        gan = build_gan(config, replicas=strategy.num_replicas_in_sync)
        history = {name: [] for name in HISTORY_NAMES.values()}
        if resume:
            history = runs.load_checkpoint(run_dir, gan.state_variables())
            runs.truncate_log(run_dir, len(history["d_losses"]))
    if not resume:
        data_prep.atomic_save_npy(os.path.join(run_dir, "fixed_z.npy"),
                                  latent_for_seed(config["seed"], 64, config["latent_dim"],
                                                  config["latent_distribution"]))
        runs.start_step_log(run_dir, STEP_COLUMNS)
    tensorboard_dir = os.path.join(run_dir, "tensorboard") if config["tensorboard"] else None
    recorder = run_recorder(gan, run_dir, fixed_z=np.load(os.path.join(run_dir, "fixed_z.npy")), history=history,
                            tensorboard_dir=tensorboard_dir)
    callbacks = [] if config["freeze_d_after"] is None else [FreezeDiscriminator(config["freeze_d_after"])]
    if config.get("time_budget"):
        callbacks.append(runs.TimeBudget(config["time_budget"]))
    if tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(tensorboard_dir, update_freq=50))
    shown = "" if per_epoch == count else f" ({per_epoch} per epoch with --oversample)"
    announce = (lambda done: f"training on {count} images{shown} with {strategy.num_replicas_in_sync} replica(s), "
                             f"epochs {done + 1} to {config['epochs']}")
    try:
        trained = runs.fit_epochs(gan, dataset, run_dir, epochs=config["epochs"], recorder=recorder,
                                  callbacks=callbacks, steps_per_epoch=config.get("steps_per_epoch"), verbose=verbose,
                                  announce=announce)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
        if config["strategy"] != "multiworker":
            raise
        raise runs.TrainingStopped(f"training stopped: another worker stopped answering "
                                   f"({type(error).__name__}); the last checkpoint (epoch "
                                   f"{recorder.finished_epochs()}) stays in {run_dir}/checkpoints") from None
    if trained:
        runs.save_model_atomic(gan.sampling_generator, os.path.join(run_dir, "generator.keras"))
        runs.save_model_atomic(gan.discriminator, os.path.join(run_dir, "discriminator.keras"))
    return gan, history


# ----------------------------------------------------------------------------------------------------------
# Sampling from a run (any kind: a trained DCGAN and the random-generator baselines of evaluate.py)


def latent_for_seed(seed, count, latent_dim, distribution="normal"):
    """z drawn with NumPy from an explicit seed, so an image can be rebuilt from its file name."""
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (count, latent_dim)).astype(np.float32)
    return rng.standard_normal((count, latent_dim)).astype(np.float32)


def build_network(config, network, *, synchronized_batch_norm=False):
    """An untrained generator or discriminator shaped as a run's config says."""
    sizes = {"image_size": config["image_size"], "filters": config["filters"], "kernel_size": config["kernel"],
             "synchronized_batch_norm": synchronized_batch_norm}
    if network == "generator":
        return build_generator(latent_dim=config["latent_dim"], **sizes)
    return build_discriminator(minibatch_std=config.get("minibatch_std", False),
                               spectral_norm=config.get("spectral_norm", False), **sizes)


def load_network(run_dir, network="generator", *, epoch=None):
    """A run's generator or discriminator: the final <network>.keras, or the weights saved after `epoch` (the
    newest saved epoch when the run has no final network yet)."""
    config = runs.read_config(run_dir)
    if config.get("kind") == "noise":
        raise data_prep.DataError(f"{run_dir} is the uniform-noise baseline; it has no {network}")
    return runs.load_saved_network(run_dir, network, lambda: build_network(config, network), epoch=epoch)


def load_generator(run_dir, *, epoch=None):
    """The generator of a run: the final generator.keras, or the weights saved after `epoch`."""
    return load_network(run_dir, "generator", epoch=epoch)


@dataclasses.dataclass
class Run:
    """A trained run as later scripts use it: its directory, config.json and networks (a VAE has no discriminator)."""

    directory: str
    config: dict
    generator: keras.Model
    discriminator: keras.Model | None
    epoch: int | None  # None: the final networks

    @property
    def kind(self):
        return "vae" if self.config.get("kind") == "vae" else "gan"


def load_run(run_dir=None, *, epoch=None, kind=None, runs_dir="runs"):
    """The one door to a trained run for every later script: config.json, the generator and the discriminator,
    final or saved after `epoch`. A VAE run (vae.py) comes with its decoder as the generator and no
    discriminator; `kind="gan"` refuses it. Without `run_dir`, the newest run in `runs_dir`, named on stdout.
    Baselines and runs without a generator are refused in one line. A Run passes through."""
    if isinstance(run_dir, Run):
        return run_dir
    if run_dir is None:
        run_dir = runs.newest_run(runs_dir)
        print(f"using the newest run with a generator: {run_dir}")
    config = runs.read_config(run_dir)
    if config.get("kind") in ("untrained", "noise"):
        raise data_prep.DataError(f"{run_dir} is the {config['kind']} baseline, not a trained run")
    if "latent_dim" not in config:
        raise data_prep.DataError(f"{run_dir} is not a GAN or VAE run (its config.json has no latent_dim)")
    if kind == "gan" and config.get("kind") == "vae":
        raise data_prep.DataError(f"{run_dir} is a VAE run; pass a GAN run as --run (the VAE goes to --vae)")
    if not os.path.isfile(os.path.join(run_dir, "generator.keras")) and not runs.saved_epochs(run_dir):
        raise data_prep.DataError(f"{run_dir} has no generator (no generator.keras, no saved epoch); train it with "
                                  f"`python dcgan.py` first")
    if config.get("kind") == "vae":
        return Run(os.path.abspath(run_dir), config, load_generator(run_dir, epoch=epoch), None, epoch)
    networks = {network: load_network(run_dir, network, epoch=epoch) for network in NETWORKS}
    return Run(os.path.abspath(run_dir), config, networks["generator"], networks["discriminator"], epoch)


def generate(generator, z, *, batch_size=256, training=False, maps_offsets=None):
    """Images in [-1, 1] (float32 NumPy) for latent codes z, in batches. `maps_offsets` (one per code, or one
    for all) are added to the generator's 8x8 feature maps (generator_maps) on the way: local edits."""
    if maps_offsets is None:
        return runs.predict_batches(generator, z, batch_size=batch_size, training=training)
    maps = runs.predict_batches(split_generator(generator)[0], z, batch_size=batch_size, training=training)
    return generate_from_maps(generator, maps + np.asarray(maps_offsets, np.float32), batch_size=batch_size,
                              training=training)


MAPS_LAYER = "up1_bn"  # the generator's 8x8 feature maps: the first up-sampling's batch norm, before its ReLU


def has_maps(generator):
    """Whether the generator has the 8x8 feature maps that local edits need (every generator dcgan.py builds for
    16 pixels or more; an 8-pixel one goes from 4x4 straight to the image)."""
    return any(layer.name == MAPS_LAYER for layer in generator.layers)


@functools.lru_cache(maxsize=4)
def split_generator(generator):
    """(head, tail): z -> the 8x8 feature maps of MAPS_LAYER, and those maps -> the image; tail(head(z)) is
    generator(z). One in a generator of another design is refused in one line."""
    if not has_maps(generator):
        raise data_prep.DataError(f"this generator has no {MAPS_LAYER} layer, so it has no 8x8 feature maps to edit")
    head = keras.Model(generator.input, generator.get_layer(MAPS_LAYER).output)
    maps = keras.Input(generator.get_layer(MAPS_LAYER).output.shape[1:])
    output = maps
    for layer in generator.layers[[layer.name for layer in generator.layers].index(MAPS_LAYER) + 1:]:
        output = layer(output)
    return head, keras.Model(maps, output)


def generate_from_maps(generator, maps, *, batch_size=256, training=False):
    """Images in [-1, 1] drawn by the rest of the generator from its 8x8 feature maps (generator_maps)."""
    return runs.predict_batches(split_generator(generator)[1], maps, batch_size=batch_size, training=training)


def generator_maps(generator, z, *, batch_size=256):
    """The generator's 8x8 feature maps (MAPS_LAYER) of codes z: (n, 8, 8, channels) float32."""
    return runs.predict_batches(split_generator(generator)[0], z, batch_size=batch_size)


def make_sampler(run_dir, *, epoch=None, batch_statistics=False):
    """A function (count, seed) -> images in [-1, 1] for any run: a trained DCGAN, the untrained-generator
    baseline or the uniform-noise baseline. Evaluation scores every kind through this one door.
    `batch_statistics`: batch norm normalises with each batch's own statistics (batches of 256), as in training,
    instead of the moving averages."""
    config = runs.read_config(run_dir)
    if config.get("kind") == "noise":
        size = config["image_size"]
        return lambda count, seed: np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)
    generator = load_generator(run_dir, epoch=epoch)
    # An untrained generator's batch norm has no statistics yet: in inference mode (mean 0, variance 1) it
    # paints flat grey, so it is sampled with batch statistics, as every DCGAN's first grid is.
    training = config.get("kind") == "untrained" or batch_statistics
    return lambda count, seed: generate(generator, latent_for_seed(seed, count, config["latent_dim"],
                                                                   config["latent_distribution"]), training=training)


def slerp(start, end, fraction):
    """Spherical interpolation (White 2016), which keeps Gaussian codes at a typical norm."""
    cosine = np.dot(start / np.linalg.norm(start), end / np.linalg.norm(end))
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    if angle < 1e-6:
        return (1 - fraction) * start + fraction * end
    return (np.sin((1 - fraction) * angle) * start + np.sin(fraction * angle) * end) / np.sin(angle)


def interpolation_codes(seed_a, seed_b, *, steps=8, latent_dim=100, distribution="normal"):
    """(linear codes, spherical codes), each (steps, latent_dim), from seed_a's z to seed_b's z."""
    start, end = (latent_for_seed(seed, 1, latent_dim, distribution)[0] for seed in (seed_a, seed_b))
    fractions = np.linspace(0.0, 1.0, steps)
    linear = np.stack([(1 - t) * start + t * end for t in fractions])
    spherical = np.stack([slerp(start, end, t) for t in fractions])
    return linear.astype(np.float32), spherical.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Command line

RESUMABLE_OVERRIDES = {"epochs", "tensorboard", "freeze_d_after", "strategy", "steps_per_epoch", "cache_dir",
                       "time_budget", "data", "resume", "name", "runs_dir", "verbose", "worker_timeout"}


def training_parser():
    parser = runs.training_parser(__doc__, name="dcgan")
    add = parser.add_argument
    add("--filter", default=None, help='attribute filter, e.g. "Attractive,-Eyeglasses"')
    add("--limit", type=int, default=None, help="use only the first N training images (e.g. 50000)")
    add("--image-size", type=int, default=64, help="output size: a power of two (32, 64, 128)")
    add("--crop-size", type=int, default=108, help="side of the centre crop of the 178x218 aligned images")
    add("--filters", type=int, default=64, help="base filters of G and D (the paper: 64)")
    add("--kernel", type=int, default=5, help="kernel size: 5 as carpedm20 and NVIDIA, 4 as PyTorch's example")
    add("--latent-dim", type=int, default=100, help="size of z")
    add("--latent-distribution", default="normal", choices=["normal", "uniform"], help="prior of z")
    runs.add_optimizer_flags(add, epochs=25, batch_size=64, what="G and D", batch_help="global batch, split across "
                             "replicas", epochs_help="epochs to train in all (the paper's CelebA run: 60)")
    add("--d-learning-rate", type=float, default=None, help="D's own rate (two time-scales); default --learning-rate")
    add("--g-learning-rate", type=float, default=None, help="G's own rate; default --learning-rate")
    add("--g-steps", type=int, default=1, help="generator steps per discriminator step (carpedm20: 2)")
    add("--label-smoothing", type=float, default=0.0, help="one-sided: real labels become 1 - this")
    add("--flip", action="store_true", help="random horizontal flips of the real images")
    add("--oversample", action="append", default=[], metavar="ATTRIBUTE=N",
        help="show each training image with this attribute N times per epoch (repeatable or comma-separated; an "
             "image takes its largest N), e.g. Bald=2,Chubby=2 for faces the generator under-draws; the run then "
             "learns that reweighted mix")
    add("--freeze-d-after", type=int, default=None, help="stop updating D after this many epochs")
    add("--minibatch-std", action="store_true", help="D sees the batch's spread (Karras et al. 2018), against collapse")
    add("--spectral-norm", action="store_true", help="spectral normalisation in D instead of its batch norm (SN-GAN)")
    add("--loss", default="bce", choices=LOSSES, help="adversarial loss: the paper's cross-entropy, or the hinge")
    add("--diff-augment", default="", metavar="POLICY",
        help="DiffAugment on every D input, e.g. color,translation,cutout (Zhao et al. 2020); empty: off")
    add("--r1", type=float, default=0.0, help="R1 penalty weight gamma on real images (e.g. 1); 0: off")
    add("--r1-every", type=int, default=16, help="apply the R1 penalty lazily, every this many D steps")
    add("--ema", type=float, default=0.0,
        help="keep a moving average of G's weights with this decay per step (e.g. 0.999) and save and sample it; "
             "0: off, as in the paper")
    add("--strategy", default="none", choices=["none", "mirrored", "multiworker"], help="tf.distribute strategy")
    add("--worker-timeout", type=float, default=600.0,
        help="--strategy multiworker: seconds to wait for the other workers before the run stops with an error")
    add("--tensorboard", action="store_true", help="write TensorBoard scalars and the epoch grid")
    add("--seed", type=int, default=0, help="seed of weights, z stream, shuffling and the fixed grid")
    runs.add_run_flags(add)
    add("--time-budget", type=float, default=None,
        help="minutes of training: stop after the last whole epoch that fits (--epochs stays the upper bound)")
    return parser


def validate_config(config):
    runs.check_at_least(config, ("epochs", "batch_size", "filters", "kernel", "latent_dim", "g_steps", "crop_size",
                                 "r1_every"))
    augmentations.parse_diff_augment(config.get("diff_augment"))
    if config.get("r1", 0.0) < 0:
        raise ValueError(f"--r1 must be 0 or more, got {config['r1']}")
    number_of_blocks(config["image_size"])
    for name in ("label_smoothing", "ema"):
        if not 0.0 <= config.get(name, 0.0) < 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {config[name]}")
    if config.get("time_budget") and config.get("strategy") == "multiworker":
        raise ValueError("--time-budget is not supported with --strategy multiworker (each worker would stop at the "
                         "end of its own budget's epoch); give --epochs instead")
    if config.get("ema") and config.get("strategy", "none") != "none":
        raise ValueError("--ema is not supported with --strategy (the average is kept on one device)")
    if config["freeze_d_after"] is not None and config["freeze_d_after"] < 0:
        raise ValueError(f"--freeze-d-after must be 0 or more, got {config['freeze_d_after']}")
    if config["filter"]:
        data_prep.parse_filter(config["filter"], list(data_prep.CELEBA_ATTRIBUTES))
    data_prep.parse_oversample(config.get("oversample"))


def same_oversampling(key, saved, config):
    """On resume, two spellings of one oversampling ("Bald=2,Chubby=2" and two flags) are the same setting."""
    if key != "oversample":
        return None
    return data_prep.parse_oversample(saved.get(key)) == data_prep.parse_oversample(config[key])


def subcommand_parser(command):
    parser = argparse.ArgumentParser(prog=f"dcgan.py {command}", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    if command == "plot":
        add("runs", nargs="+", help="run directories to overlay")
        add("--out", default=None, help="PNG to write (default: <first run>/losses.png)")
        add("--smoothing", type=float, default=0.98, help="EMA weight of the per-step curves")
    elif command == "sample":
        add("run", help="run directory")
        add("--count", type=int, default=64, help="number of samples")
        add("--seed", type=int, default=0, help="seed of z (the same seed gives the same faces)")
        add("--epoch", type=int, default=None, help="use the generator saved after this epoch")
        add("--interpolate", type=int, nargs=2, metavar=("SEED_A", "SEED_B"), default=None,
            help="also write linear and spherical interpolation strips between two seeds' z")
        add("--steps", type=int, default=8, help="images in an interpolation strip")
        add("--npy", action="store_true", help="also save the samples as uint8 .npy (for scoring)")
        add("--outdir", default=None, help="where to write (default: <run>/generated)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser


def run_sample(args):
    config = runs.read_config(args.run)
    if args.count < 1:
        raise ValueError(f"--count must be positive, got {args.count}")
    stem = os.path.join(args.outdir or os.path.join(args.run, "generated"), f"seed{args.seed:04d}")
    images = make_sampler(args.run, epoch=args.epoch)(args.count, args.seed)
    data_prep.atomic_save_npy(stem + "_z.npy", latent_for_seed(args.seed, args.count, config["latent_dim"],
                                                               config["latent_distribution"]))
    written = [data_prep.save_grid(stem + ".png", images, columns=8)]
    if args.npy:
        written.append(data_prep.atomic_save_npy(stem + ".npy", data_prep.to_uint8(images)))
    if args.interpolate:
        seed_a, seed_b = args.interpolate
        codes = interpolation_codes(seed_a, seed_b, steps=args.steps, latent_dim=config["latent_dim"],
                                    distribution=config["latent_distribution"])
        strip = generate(load_generator(args.run, epoch=args.epoch), np.concatenate(codes))
        written.append(data_prep.save_grid(os.path.join(os.path.dirname(stem), f"interpolate_{seed_a}_{seed_b}.png"),
                                           strip, columns=args.steps, row_labels=["linear", "spherical"]))
    print("wrote " + ", ".join(str(path) for path in written))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "baseline":
        raise data_prep.DataError("`dcgan.py baseline` moved: run `python evaluate.py baseline` with the same flags")
    if argv and argv[0] in SUBCOMMANDS:
        args = subcommand_parser(argv[0]).parse_args(argv[1:])
        if argv[0] == "sample":
            return run_sample(args)
        out = args.out or os.path.join(args.runs[0], "losses.png")
        print(f"wrote {runs.plot_runs(args.runs, out, smoothing=args.smoothing)}")
        return None
    config, run_dir, resume = runs.training_config(training_parser, argv, resumable=RESUMABLE_OVERRIDES,
                                                   validate=validate_config, same=same_oversampling)
    config["data"] = os.path.abspath(data_prep.resolve_data_dir(config["data"]))
    chief, task = runs.worker_role(config["strategy"])
    if chief:
        runs.training_job(run_dir, config, resume=resume, train=lambda: train(config, run_dir, resume=resume),
                          result=f"evidence in {run_dir}")
        return
    private = runs.worker_directory(run_dir, resume=resume, task=task)  # only the chief writes the run directory
    try:
        runs.training_job(private, config, resume=resume, train=lambda: train(config, private, resume=resume),
                          result=f"{task} done; the chief holds the run in {run_dir}")
    finally:
        shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    runs.run_cli(main)
