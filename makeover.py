"""Makeover: translate a face from one attribute population to another (male to female, or a "vanity" filter)
while keeping the person recognisable, after David Garcia's deep-makeover (2017): a residual encoder-decoder with
only two poolings, initialised to return its input, trained with a loss annealed from an L1 pixel term to the
adversarial term, between populations chosen only by CelebA attribute filters. Optional cycle-consistency and
identity losses follow CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks"); the discriminator is pix2pix's PatchGAN (Isola et al. 2017). With --conditional the
discriminator also sees the labels no filter names (the projection discriminator of Miyato and Koyama 2018), each
source face paired with a target face nearest in those labels, so that it asks for a target face that keeps the
input's other attributes rather than for the target population's typical face.

deep-makeover's own code never ran its annealing (the assign op was never executed), used another crop at
inference than in training, and could not resume. Here the loss weights are a function of the optimizer's step
counter inside the training step (logged every step), `apply` reads the crop from the run's config.json, and
`--resume` continues after the last finished epoch.

A run leaves in runs/<name>/: config.json, samples/epoch_001.png ... (a fixed held-out batch of source faces,
each input beside its output), per-epoch .npy losses and loss weights, a per-step log.csv, checkpoints/last.npz
(everything --resume needs) and each epoch's translator and discriminator weights, and the final
translator.keras and discriminator.keras.

Usage:
    python makeover.py --name makeover-m2f                           # male to female, 80x64 makeover crop
    python makeover.py --name makeover-cpu --image-size 32 --filters 16 --epochs 3   # CPU-sized, minutes
    python makeover.py --resume --name makeover-m2f --epochs 30      # continue after the last finished epoch
    python makeover.py --name makeover-adv --anneal-steps 0          # ablation: adversarial only from the start
    python makeover.py --name makeover-l1 --anneal-end 0             # ablation: pixel loss only
    python makeover.py --cycle-weight 10 --identity-weight 5         # CycleGAN's extra losses (a translator back)
    python makeover.py --name makeover-cond --conditional            # D sees the other labels; label-matched pairs
    python makeover.py apply --run runs/makeover-m2f photo.jpg --paste
    python scores.py makeover --run runs/makeover-m2f --compare runs/makeover-adv runs/makeover-l1
"""

import argparse
import os
import sys

import numpy as np

import data_prep
import dcgan
import evaluate
import runs

import keras  # noqa: E402  (runs chose the backend and loaded TensorFlow quietly)
import tensorflow as tf  # noqa: E402

SUBCOMMANDS = ("apply", "score")
DEFAULT_SOURCE = "Male,-Eyeglasses,-Blurry"  # deep-makeover's male-to-female populations
DEFAULT_TARGET = "-Male,Attractive,-Eyeglasses,-Blurry"
RESIDUAL_INIT_STDDEV = 1e-4  # the last convolution of every residual branch starts near zero ...
PROJECTION_INIT_STDDEV = 1e-3  # ... and every 1x1 projection near the identity, so G(x) ~ x untrained
OUTPUT_CLIP = 0.995  # the input is clipped to +-this before atanh; so the untrained G(x) is within 0.005 of x
MATCHES = 8  # a conditional run pairs each source face with one of the 8 target faces nearest in labels
CONDITION_RATE = 0.01  # a conditional D sees the attributes the target population shows on 1% to 99% of faces
IDENTITY_TOLERANCE = 0.01  # max |G(x) - x| of an untrained translator, batch norm in either mode (tested)
STEP_COLUMNS = ("d_loss", "g_loss", "pixel_loss", "adversarial_loss", "cycle_loss", "identity_loss", "d_real",
                "d_fake", "pixel_weight", "adversarial_weight", "keep_loss", "smooth_loss")  # train_step's, log.csv's
HISTORY_NAMES = {name: name + {"loss": "es", "weight": "s"}.get(name.rsplit("_", 1)[1], "")
                 for name in STEP_COLUMNS}  # the per-epoch arrays: d_loss -> d_losses.npy, d_real -> d_real.npy
LAST_VALUE = ("pixel_weight", "adversarial_weight")  # saved per epoch as the value in force at its last step


# ----------------------------------------------------------------------------------------------------------
# Model builders


@keras.saving.register_keras_serializable(package="facemath")
class NearIdentity(keras.initializers.Initializer):
    """A 1x1 convolution kernel (1, 1, in, out) that copies the first min(in, out) channels, plus N(0, stddev)
    noise: a projection that starts as (nearly) the identity. The noise's seed is drawn when the initializer is
    made, from NumPy's global state, which keras.utils.set_random_seed seeds."""

    def __init__(self, stddev=PROJECTION_INIT_STDDEV, seed=None):
        self.stddev = stddev
        self.seed = int(np.random.randint(2 ** 31 - 1)) if seed is None else int(seed)

    def __call__(self, shape, dtype=None):
        eye = np.eye(shape[-2], shape[-1]).reshape(shape)
        noise = np.random.default_rng(self.seed).normal(0.0, self.stddev, shape)
        return keras.ops.convert_to_tensor((eye + noise).astype(np.float32), dtype=dtype)

    def get_config(self):
        return {"stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="facemath")
class ResidualOutput(keras.layers.Layer):
    """tanh(atanh(clip(image)) + change): the output is a change of the input inside (-1, 1), so a change near
    zero returns the input (within 1 - OUTPUT_CLIP at the extremes). Computed in float32."""

    def __init__(self, clip=OUTPUT_CLIP, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.clip = clip

    def call(self, inputs):
        image, change = (keras.ops.cast(value, "float32") for value in inputs)
        return keras.ops.tanh(keras.ops.arctanh(keras.ops.clip(image, -self.clip, self.clip)) + change)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


def near_zero_init():
    """A new initializer per layer (so --seed decides it and same-shaped layers differ), N(0, 1e-4). Adam moves
    every weight by about the learning rate per step whatever its scale, so a small start does not slow it."""
    return keras.initializers.RandomNormal(stddev=RESIDUAL_INIT_STDDEV)


def residual_block(x, channels, *, name):
    """Pre-activation residual block (He et al. 2016, "Identity Mappings in Deep Residual Networks"): shortcut +
    conv(relu(bn(conv(relu(bn(x)))))). The shortcut is a 1x1 projection near the identity when the channel count
    changes, and the branch's last convolution starts near zero, so the untrained block returns its shortcut."""
    shortcut = x
    if x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=NearIdentity(),
                                       name=f"{name}_projection")(x)
    y = keras.layers.ReLU()(dcgan.batch_norm(f"{name}_bn1")(x))
    y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                            name=f"{name}_conv1")(y)
    y = keras.layers.ReLU()(dcgan.batch_norm(f"{name}_bn2")(y))
    y = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=near_zero_init(),
                            name=f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])  # (batch, h, w, channels)


def check_image_shape(image_shape):
    height, width = image_shape
    if height % 4 or width % 4 or min(height, width) < 8:
        raise ValueError(f"the translator pools twice: image height and width must be multiples of 4 and at "
                         f"least 8, got {height}x{width}")


def build_translator(*, image_shape=(80, 64), filters=64, name="translator"):
    """deep-makeover's generator: residual encoder (two average poolings), residual decoder (two nearest
    upsamplings, Odena et al. 2016's cure for checkerboards), a 3x3 convolution near zero giving a change of
    the input, and ResidualOutput. Filters double at each pooling: 1x, 2x, 4x."""
    check_image_shape(image_shape)
    height, width = image_shape
    image = keras.Input((height, width, 3), name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name="stem")(image)
    x = residual_block(x, filters, name="encode1")  # (batch, h, w, filters)
    x = keras.layers.AveragePooling2D(2, name="pool1")(x)  # (batch, h/2, w/2, filters)
    x = residual_block(x, 2 * filters, name="encode2")  # (batch, h/2, w/2, 2 filters)
    x = keras.layers.AveragePooling2D(2, name="pool2")(x)  # (batch, h/4, w/4, 2 filters)
    x = residual_block(x, 4 * filters, name="middle1")  # (batch, h/4, w/4, 4 filters)
    x = residual_block(x, 4 * filters, name="middle2")
    x = keras.layers.UpSampling2D(2, name="upsample1")(x)  # (batch, h/2, w/2, 4 filters)
    x = residual_block(x, 2 * filters, name="decode1")  # (batch, h/2, w/2, 2 filters)
    x = keras.layers.UpSampling2D(2, name="upsample2")(x)  # (batch, h, w, 2 filters)
    x = residual_block(x, filters, name="decode2")  # (batch, h, w, filters)
    x = keras.layers.ReLU()(dcgan.batch_norm("change_bn")(x))
    change = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer=near_zero_init(), name="change")(x)
    output = ResidualOutput(name="output")([image, change])  # (batch, h, w, 3) in (-1, 1)
    return keras.Model(image, output, name=name)


def build_discriminator(*, image_shape=(80, 64), filters=64, layers=3, conditions=0, name="patch_discriminator"):
    """PatchGAN (Isola et al. 2017): `layers` 4x4 stride-2 convolutions (LeakyReLU 0.2, batch norm on all but the
    first), one stride-1, then one logit per patch: (batch, h/8, w/8, 1) for 3 layers. With `conditions` it takes
    [image, labels (batch, conditions) of +-1] and adds to each patch's logit the inner product of its features with
    an embedding of the labels (the projection discriminator, Miyato and Koyama 2018)."""
    height, width = image_shape
    image = keras.Input((height, width, 3), name="image")
    x = image
    for layer in range(layers):
        x = keras.layers.Conv2D(filters * 2 ** layer, 4, strides=2, padding="same", use_bias=layer == 0,
                                kernel_initializer=dcgan.weight_init(), name=f"down{layer + 1}")(x)
        if layer > 0:
            x = dcgan.batch_norm(f"down{layer + 1}_bn")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"down{layer + 1}_features")(x)  # (batch, h/2^(l+1), w/2^(l+1), .)
    x = keras.layers.Conv2D(filters * 2 ** layers, 4, padding="same", use_bias=False,
                            kernel_initializer=dcgan.weight_init(), name="patch")(x)
    x = keras.layers.LeakyReLU(0.2, name="patch_features")(dcgan.batch_norm("patch_bn")(x))
    logits = keras.layers.Conv2D(1, 4, padding="same", kernel_initializer=dcgan.weight_init(), dtype="float32",
                                 name="logits")(x)  # (batch, h/2^layers, w/2^layers, 1)
    if not conditions:
        return keras.Model(image, logits, name=name)
    labels = keras.Input((conditions,), name="labels")
    embedded = keras.layers.Dense(filters * 2 ** layers, use_bias=False, kernel_initializer=dcgan.weight_init(),
                                  name="label_embedding")(labels)  # (batch, channels)
    projection = keras.ops.sum(keras.ops.cast(x, "float32") * keras.ops.cast(embedded, "float32")[:, None, None, :],
                               axis=-1, keepdims=True)  # (batch, h/2^layers, w/2^layers, 1)
    return keras.Model([image, labels], keras.layers.Add(dtype="float32", name="conditional_logits")(
        [logits, projection]), name=name)


# ----------------------------------------------------------------------------------------------------------
# The loss schedule and the translation GAN


def loss_weights(step, *, anneal_start=0, anneal_steps=2000, anneal_end=1.0):
    """(pixel weight, adversarial weight) of the generator's loss at `step` (0 = the first update): the
    adversarial weight rises linearly from 0 at `anneal_start` to `anneal_end` after `anneal_steps` more steps
    (a switch at `anneal_start` when anneal_steps is 0); the pixel weight is 1 minus it. Works on Python numbers
    and on tensors (inside train_step, where `step` is the optimizer's counter)."""
    step = keras.ops.cast(step, "float32")
    if anneal_steps > 0:
        ramp = keras.ops.clip((step - anneal_start) / float(anneal_steps), 0.0, 1.0)
    else:
        ramp = keras.ops.cast(step >= anneal_start, "float32")
    adversarial = anneal_end * ramp
    return 1.0 - adversarial, adversarial


def _cross_entropy(label, logits):
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits))


def _l1(first, second):
    return tf.reduce_mean(tf.abs(tf.cast(first, tf.float32) - tf.cast(second, tf.float32)))


class Makeover(runs.TrainingModel):
    """Owns the translator G (source -> target), its PatchGAN D, optionally the translator back F and its
    discriminator (cycle consistency), both optimizers and the loss trackers. One step updates D and G together
    on the same translated batch; the loss weights come from loss_weights(G's optimizer step)."""

    def __init__(self, translator, discriminator, *, back_translator=None, source_discriminator=None,
                 schedule=None, cycle_weight=0.0, identity_weight=0.0, keepers=(), keep_columns=(),
                 keep_weight=0.0, smooth_weight=0.0, conditional=False, **kwargs):
        super().__init__(STEP_COLUMNS, **kwargs)
        self.translator, self.discriminator = translator, discriminator
        self.back_translator, self.source_discriminator = back_translator, source_discriminator
        self.schedule = dict(schedule or {})
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        self.keepers, self.keep_weight = list(keepers), float(keep_weight)  # frozen attribute CNNs, not trained here
        self.keep_columns = tf.constant(list(keep_columns), tf.int32)  # the attributes it must not see change
        self.smooth_weight = float(smooth_weight)
        self.conditional = bool(conditional)  # D sees the labels: a real face's own, a translated face's source's

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def generators(self):
        return [self.translator] + ([self.back_translator] if self.back_translator is not None else [])

    @property
    def discriminators(self):
        return [self.discriminator] + ([self.source_discriminator] if self.source_discriminator is not None else [])

    @staticmethod
    def _adversarial(discriminator, real, fake, *, real_labels=None, fake_labels=None):
        """(D loss on real and detached fake, G's non-saturating loss, mean D(real), mean D(fake)); a conditional D
        is given each batch's labels."""
        judge = (lambda images, labels: discriminator(images, training=True)) if real_labels is None else (
            lambda images, labels: discriminator([images, labels], training=True))
        real_logits = judge(real, real_labels)
        fake_logits = judge(tf.stop_gradient(fake), fake_labels)
        d_loss = _cross_entropy(1.0, real_logits) + _cross_entropy(0.0, fake_logits)
        g_loss = _cross_entropy(1.0, judge(fake, fake_labels))
        return d_loss, g_loss, tf.reduce_mean(tf.sigmoid(real_logits)), tf.reduce_mean(tf.sigmoid(fake_logits))

    def _keep_loss(self, source, translated):
        """Mean over the keepers, the batch and the kept attributes of KL(p(source) || p(translated)), each
        attribute a Bernoulli with a keeper's probability: 0 when every keeper sees the same attributes in both."""
        losses = []
        for keeper in self.keepers:
            logits_in = tf.gather(tf.cast(keeper(source, training=False), tf.float32), self.keep_columns, axis=1)
            logits_out = tf.gather(tf.cast(keeper(translated, training=False), tf.float32), self.keep_columns, axis=1)
            wanted, logits_in = tf.stop_gradient(tf.sigmoid(logits_in)), tf.stop_gradient(logits_in)
            losses.append(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(wanted, logits_out)
                                         - tf.nn.sigmoid_cross_entropy_with_logits(wanted, logits_in)))
        return tf.add_n(losses) / len(losses)

    @staticmethod
    def _smooth_loss(source, translated):
        """Total variation of the change G(x) - x: the mean absolute difference between neighbouring pixels' changes,
        down and across. A change made of regions (a mouth recoloured, a beard removed) costs little; speckled
        noise, which fools a small discriminator and a CNN alike, costs a lot."""
        change = tf.cast(translated, tf.float32) - tf.cast(source, tf.float32)
        return (tf.reduce_mean(tf.abs(change[:, 1:] - change[:, :-1]))
                + tf.reduce_mean(tf.abs(change[:, :, 1:] - change[:, :, :-1])))

    def _loss_terms(self, source, target, source_labels=None, target_labels=None):
        """Every loss term of one step, as scalars."""
        translated = self.translator(source, training=True)
        d_loss, adversarial, d_real, d_fake = self._adversarial(self.discriminator, target, translated,
                                                                real_labels=target_labels, fake_labels=source_labels)
        pixel = _l1(translated, source)
        cycle = identity = keep = tf.constant(0.0)
        if self.keepers:
            keep = self._keep_loss(source, translated)
        smooth = self._smooth_loss(source, translated)
        if self.back_translator is not None:
            returned = self.back_translator(target, training=True)
            d_back, adversarial_back, _, _ = self._adversarial(self.source_discriminator, source, returned)
            d_loss, adversarial = d_loss + d_back, adversarial + adversarial_back
            pixel = pixel + _l1(returned, target)
            cycle = (_l1(self.back_translator(translated, training=True), source)
                     + _l1(self.translator(returned, training=True), target))
        if self.identity_weight:
            identity = _l1(self.translator(target, training=True), target)
            if self.back_translator is not None:
                identity = identity + _l1(self.back_translator(source, training=True), source)
        return {"d_loss": d_loss, "adversarial_loss": adversarial, "pixel_loss": pixel, "cycle_loss": cycle,
                "identity_loss": identity, "keep_loss": keep, "smooth_loss": smooth, "d_real": d_real,
                "d_fake": d_fake}

    @staticmethod
    def _apply(optimizer, tape, loss, models):
        variables = [variable for model in models for variable in model.trainable_variables]
        gradients = tape.gradient(loss, [variable.value for variable in variables])
        optimizer.apply_gradients(zip(gradients, variables))

    def train_step(self, data):
        """One update of D and G on a (source batch, target batch) pair (with a conditional D, each an (images,
        labels) pair); returns this step's own values."""
        labels = [None, None]
        if self.conditional:
            (source, labels[0]), (target, labels[1]) = data
            data = source, target
        source, target = (runs.to_float_batch(images) for images in data)
        pixel_weight, adversarial_weight = loss_weights(self.g_optimizer.iterations, **self.schedule)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            step = self._loss_terms(source, target, *labels)
            g_loss = (pixel_weight * step["pixel_loss"] + adversarial_weight * step["adversarial_loss"]
                      + self.cycle_weight * step["cycle_loss"] + self.identity_weight * step["identity_loss"]
                      + self.keep_weight * step["keep_loss"] + self.smooth_weight * step["smooth_loss"])
        self._apply(self.d_optimizer, d_tape, step["d_loss"], self.discriminators)
        self._apply(self.g_optimizer, g_tape, g_loss, self.generators)
        step.update(g_loss=g_loss, pixel_weight=pixel_weight, adversarial_weight=adversarial_weight)
        for name in STEP_COLUMNS:
            self.trackers[name].update_state(step[name])
        return {name: step[name] for name in STEP_COLUMNS}

    def state_variables(self):
        """Every variable a resumed run needs, in a fixed order."""
        networks = self.generators + self.discriminators
        return ([weight for network in networks for weight in network.weights] + self.d_optimizer.variables
                + self.g_optimizer.variables)


# ----------------------------------------------------------------------------------------------------------
# Callbacks


def input_output_grid(inputs, outputs, *, pairs_per_row=4):
    """Each input beside its output, `pairs_per_row` pairs a row, as one uint8 grid."""
    as_uint8 = lambda images: images if images.dtype == np.uint8 else data_prep.to_uint8(images)  # noqa: E731
    interleaved = np.stack([as_uint8(np.asarray(inputs)), as_uint8(np.asarray(outputs))], axis=1)
    interleaved = interleaved.reshape(-1, *interleaved.shape[2:])  # (2n, h, w, 3): in, out, in, out ...
    return data_prep.make_grid(interleaved, columns=2 * pairs_per_row)


def save_epoch_evidence(gan, run_dir, number, *, fixed_source, history):
    """What a makeover run keeps of each finished epoch: the fixed held-out batch (input beside output), that
    epoch's translator and discriminator, the resumable checkpoint and the per-epoch arrays."""
    outputs = translate(gan.translator, fixed_source)
    data_prep.write_image(os.path.join(run_dir, "samples", f"epoch_{number:03d}.png"),
                          input_output_grid(fixed_source, outputs))
    networks = {"translator": gan.translator, "discriminator": gan.discriminator}
    runs.save_epoch_networks(run_dir, number, networks, gan.state_variables(), history,
                             arrays={name: f"{name}.npy" for name in HISTORY_NAMES.values()})


# ----------------------------------------------------------------------------------------------------------
# Populations, training and the run's networks


def filter_terms(text):
    return data_prep.parse_filter(text, list(data_prep.CELEBA_ATTRIBUTES))


def check_populations(celeba, *, source, target, allow_overlap=False):
    """Both filters must keep images; images that pass both are an error unless `allow_overlap` (the translator
    would learn that some faces already are the target). Returns the number of shared images."""
    if not filter_terms(source) or not filter_terms(target):
        raise data_prep.DataError(f"--source and --target must each name at least one attribute, got "
                                  f"{source!r} and {target!r}")
    attributes = celeba.attributes
    shared = data_prep.filter_mask(attributes, source) & data_prep.filter_mask(attributes, target)
    if shared.any() and not allow_overlap:
        raise data_prep.DataError(f"--source {source!r} and --target {target!r} share {int(shared.sum())} of "
                                  f"{len(attributes)} images (e.g. {attributes.index[shared][0]}); make the filters "
                                  f"disjoint or pass --allow-overlap")
    return int(shared.sum())


def population(config, *, split, which, celeba=None, limit=None, labels=False):
    """The uint8 images (n, h, w, 3) of the source or target population of one split, with the run's crop; with
    `labels`, also their +-1 labels (n, k) of the run's condition attributes."""
    prepared = data_prep.prepare_images(config["data"], split=split, filter=config[which], crop=config["crop"],
                                        image_size=config["image_size"], crop_size=config["crop_size"],
                                        limit=limit, cache_dir=config["cache_dir"], celeba=celeba)
    if not labels:
        return np.asarray(prepared.images)
    celeba = celeba or data_prep.read_celeba(config["data"])
    table = celeba.attributes.loc[prepared.names, config["condition_attributes"]].to_numpy()
    return np.asarray(prepared.images), np.where(table == 1, 1.0, -1.0).astype(np.float32)


def condition_attributes(attributes, source, target, *, least=CONDITION_RATE):
    """The attributes a conditional D sees: those no filter names that vary in the data (collateral_attributes)
    and that the target population shows at a rate between `least` and 1 - `least`, so that real faces teach D
    what each label looks like (a label the target never has, such as a beard for women, is left out)."""
    shown = attributes[data_prep.filter_mask(attributes, target)]
    return [name for name in collateral_attributes(attributes, source, target)
            if least <= float((shown[name] == 1).mean()) <= 1 - least]


def training_data(config):
    """((source, target) tf.data of uint8 batch pairs, repeated), source count, target count, fixed held-out
    source batch for the grids (seeded draw from the validation split)."""
    celeba = data_prep.read_celeba(config["data"])
    check_populations(celeba, source=config["source"], target=config["target"],
                      allow_overlap=config["allow_overlap"])
    if config.get("conditional") or config.get("matched"):
        source, source_labels = population(config, split="train", which="source", celeba=celeba,
                                           limit=config["limit"], labels=True)
        target, target_labels = population(config, split="train", which="target", celeba=celeba,
                                           limit=config["limit"], labels=True)
        pairs = matched_pairs(source, source_labels, target, target_labels, batch_size=config["batch_size"],
                              flip=config["flip"], seed=config["seed"])
        if not config.get("conditional"):  # the pairs alone: D sees images only
            pairs = pairs.map(lambda source, target: (source[0], target[0]))
    else:
        source = population(config, split="train", which="source", celeba=celeba, limit=config["limit"])
        target = population(config, split="train", which="target", celeba=celeba, limit=config["limit"])
        options = {"batch_size": config["batch_size"], "flip": config["flip"], "scale": False}
        pairs = tf.data.Dataset.zip((data_prep.make_dataset(source, seed=config["seed"], **options).repeat(),
                                     data_prep.make_dataset(target, seed=config["seed"] + 1, **options).repeat()))
    held_out = population(config, split="validation", which="source", celeba=celeba)
    chosen = data_prep.seeded_subset(len(held_out), config["grid_count"], seed=config["seed"])
    return pairs.prefetch(tf.data.AUTOTUNE), len(source), len(target), held_out[chosen]


def nearest_by_labels(source_labels, target_labels, *, count=MATCHES):
    """(n_source, count) indices of the target faces whose +-1 labels differ from each source face's in the
    fewest places (ties broken by order)."""
    target_labels = np.asarray(target_labels, np.float32)
    count = min(count, len(target_labels))
    rows = []
    for start in range(0, len(source_labels), 1024):
        differences = (target_labels.shape[1] - np.asarray(source_labels[start:start + 1024], np.float32)
                       @ target_labels.T) / 2  # (chunk, n_target): labels that differ
        rows.append(np.argsort(differences, axis=1, kind="stable")[:, :count])
    return np.concatenate(rows).astype(np.int32)


def matched_pairs(source, source_labels, target, target_labels, *, batch_size, flip, seed):
    """Repeated ((source, labels), (target, labels)) uint8 batches in which each target face is one of the
    MATCHES target faces nearest in labels to the source face beside it (nearest_by_labels): real and translated
    faces then carry the same labels, so a conditional D must judge the images, not the labels alone."""
    nearest = tf.constant(nearest_by_labels(source_labels, target_labels))
    tensors = [tf.constant(np.asarray(array)) for array in (source, source_labels, target, target_labels)]
    indices = tf.data.Dataset.range(len(source)).shuffle(len(source), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)

    def load(batch, batch_seed):
        column = tf.random.stateless_uniform([tf.shape(batch)[0]], seed=tf.stack([batch_seed, 0]), maxval=tf.shape(
            nearest)[1], dtype=tf.int32)
        matched = tf.gather_nd(nearest, tf.stack([tf.cast(batch, tf.int32), column], axis=1))
        images = [tf.gather(tensors[0], batch), tf.gather(tensors[2], matched)]
        if flip:
            for side in range(2):
                flips = tf.random.stateless_uniform([tf.shape(batch)[0], 1, 1, 1],
                                                    seed=tf.stack([batch_seed, side + 1])) < 0.5
                images[side] = tf.where(flips, tf.reverse(images[side], axis=[2]), images[side])
        return (images[0], tf.gather(tensors[1], batch)), (images[1], tf.gather(tensors[3], matched))

    batches = tf.data.Dataset.zip((indices.batch(batch_size, drop_remainder=True), seeds))
    return batches.map(load, num_parallel_calls=tf.data.AUTOTUNE).repeat()


def image_shape(config):
    return data_prep.crop_output_shape(config["crop"], config["image_size"])


def build_makeover(config):
    """The translator(s), discriminator(s) and the compiled Makeover of a run's config, optimizer slots built."""
    shape, filters = image_shape(config), config["filters"]
    conditions = len(config["condition_attributes"]) if config.get("conditional") else 0
    networks = {"translator": build_translator(image_shape=shape, filters=filters),
                "discriminator": build_discriminator(image_shape=shape, filters=filters, conditions=conditions)}
    if config["cycle_weight"] > 0:
        networks["back_translator"] = build_translator(image_shape=shape, filters=filters, name="back_translator")
        networks["source_discriminator"] = build_discriminator(image_shape=shape, filters=filters,
                                                               name="source_discriminator")
    schedule = {key: config[key] for key in ("anneal_start", "anneal_steps", "anneal_end")}
    if config.get("keep_weight", 0.0) > 0:
        networks["keepers"] = [evaluate.load_classifier(path) for path in keep_classifiers(config)]
        for keeper in networks["keepers"]:
            keeper.trainable = False
        networks["keep_columns"] = [data_prep.CELEBA_ATTRIBUTES.index(name) for name in config["keep_attributes"]]
    gan = Makeover(**networks, schedule=schedule, cycle_weight=config["cycle_weight"],
                   identity_weight=config["identity_weight"], keep_weight=config.get("keep_weight", 0.0),
                   smooth_weight=config.get("smooth_weight", 0.0), conditional=bool(conditions))
    gan.compile(d_optimizer=keras.optimizers.Adam(config["learning_rate"], beta_1=config["beta1"]),
                g_optimizer=keras.optimizers.Adam(config["learning_rate"], beta_1=config["beta1"]))
    gan.d_optimizer.build([v for network in gan.discriminators for v in network.trainable_variables])
    gan.g_optimizer.build([v for network in gan.generators for v in network.trainable_variables])
    return gan


def train(config, run_dir, *, resume=False, verbose=1):
    """Train (or resume) the makeover described by `config` in `run_dir`; returns (gan, history)."""
    keras.utils.set_random_seed(config["seed"])
    pairs, source_count, target_count, fixed_source = training_data(config)
    with runs.dtype_policy(config["compute_precision"]):
        gan = build_makeover(config)
    history = {name: [] for name in HISTORY_NAMES.values()}
    if resume:
        history = runs.load_checkpoint(run_dir, gan.state_variables())
        runs.truncate_log(run_dir, len(history["d_losses"]))
        runs.add_missing_columns(run_dir, history, history_names=HISTORY_NAMES.values(), step_columns=STEP_COLUMNS)
        runs.remove_stale_temporaries(run_dir)
        fixed_source = np.load(os.path.join(run_dir, "fixed_source.npy"))
    else:
        data_prep.atomic_save_npy(os.path.join(run_dir, "fixed_source.npy"), fixed_source)
        runs.start_step_log(run_dir, STEP_COLUMNS)
    recorder = runs.EpochRecorder(history, HISTORY_NAMES, log_dir=run_dir, last_value=LAST_VALUE,
                                  save_epoch=lambda number: save_epoch_evidence(
                                      gan, run_dir, number, fixed_source=fixed_source, history=history))
    steps = config["steps_per_epoch"] or source_count // config["batch_size"]
    if steps < 1:
        raise data_prep.DataError(f"only {source_count} source images for a batch of {config['batch_size']}")
    announce = (lambda done: f"translating {source_count} source faces to {target_count} target faces, {steps} steps "
                             f"per epoch, epochs {done + 1} to {config['epochs']}")
    if runs.fit_epochs(gan, pairs, run_dir, epochs=config["epochs"], recorder=recorder, steps_per_epoch=steps,
                       verbose=verbose, announce=announce):
        runs.save_model_atomic(gan.translator, os.path.join(run_dir, "translator.keras"))
        runs.save_model_atomic(gan.discriminator, os.path.join(run_dir, "discriminator.keras"))
    return gan, history


def keep_classifiers(config):
    """The keep loss's attribute CNN directories (a single one in runs saved when there could be only one)."""
    paths = config.get("keep_classifier") or []
    return [paths] if isinstance(paths, str) else list(paths)


def check_keepers(config):
    """The keep loss's attribute CNNs must exist and see the run's crop, size and data."""
    for path in keep_classifiers(config):
        try:
            evaluate.check_config(config, evaluate.classifier_config(path), what="the run is trained")
        except ValueError as error:
            raise ValueError(str(error).replace("--classifier DIR", "--keep-classifier DIR")) from None


def load_translator(run_dir, *, epoch=None):
    """A run's translator: the final translator.keras, or the weights saved after `epoch` (default: the newest
    saved epoch when the run has no final translator yet)."""
    config = runs.read_config(run_dir, model="makeover")
    return runs.load_saved_network(run_dir, "translator", lambda: build_translator(
        image_shape=image_shape(config), filters=config["filters"]), epoch=epoch)


def translate(translator, images, *, batch_size=256):
    """Translated images, float32 in [-1, 1], for uint8 or float images (n, h, w, 3), in batches."""
    return runs.predict_batches(translator, images, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------------------
# Apply to photos, and paste the result back through the inverse of the alignment warp


def makeover_photo(translator, path, *, config, paste=False, fallback=False, detector=None):
    """One photo through a run: the face aligned by data_prep.load_face with the run's crop, translated; with
    `paste`, the whole photo with the translated face put back. Returns a dict of input, output (and pasted)."""
    options = {"crop": config["crop"], "image_size": config["image_size"], "crop_size": config["crop_size"]}
    face, details = data_prep.load_face(path, fallback=fallback, detector=detector, return_details=True, **options)
    output = translate(translator, face[None])[0]
    result = {"input": face, "output": output, "fallback": details["fallback"]}
    if paste:
        if details["landmarks"] is None:
            raise data_prep.DataError(f"no face found in {path}: --paste needs the alignment of a detected face")
        alignment = data_prep.alignment_matrix(details["landmarks"])
        photo = data_prep.read_image_uint8(path)
        result["pasted"] = data_prep.paste_back(photo, output, alignment=alignment, **options)
    return result


def apply_run(run_dir, photos, *, out_dir=None, crop=None, paste=False, fallback=False, epoch=None):
    """`python makeover.py apply`: each photo's input beside output (and the pasted photo) under out_dir
    (default <run>/applied). A --crop other than the run's is refused. Returns the written paths."""
    config = runs.read_config(run_dir, model="makeover")
    if crop is not None and crop != config["crop"]:
        raise data_prep.DataError(f"{run_dir} was trained with the {config['crop']} crop, not {crop}; "
                                  f"drop --crop (apply reads the run's crop from config.json)")
    for photo in photos:
        if not os.path.isfile(photo):
            raise data_prep.DataError(f"image not found: {photo}")
    translator = load_translator(run_dir, epoch=epoch)
    out_dir = out_dir or os.path.join(run_dir, "applied")
    written = []
    for photo in photos:
        result = makeover_photo(translator, photo, config=config, paste=paste, fallback=fallback)
        stem = os.path.splitext(os.path.basename(photo))[0]
        pair = data_prep.make_grid(np.stack([result["input"], result["output"]]), columns=2, scale=2)
        written.append(os.path.join(out_dir, f"{stem}_makeover.png"))
        data_prep.write_image(written[-1], pair)
        if paste:
            written.append(os.path.join(out_dir, f"{stem}_pasted.png"))
            data_prep.write_image(written[-1], result["pasted"])
    return written


# ----------------------------------------------------------------------------------------------------------
# The attributes a makeover leaves alone (its keep loss; scores.py measures them)


def collateral_attributes(attribute_table, source, target):
    """Attributes that vary in the data (both values occur) and that neither filter names."""
    named = {name for name, _ in filter_terms(source) + filter_terms(target)}
    varying = [name for name in data_prep.CELEBA_ATTRIBUTES if attribute_table[name].nunique() > 1]
    return [name for name in varying if name not in named]


# ----------------------------------------------------------------------------------------------------------
# Command line

RESUMABLE_OVERRIDES = {"epochs", "steps_per_epoch", "cache_dir", "data", "resume", "name", "runs_dir", "verbose"}


def training_parser():
    parser = runs.training_parser(__doc__, name="makeover")
    add = parser.add_argument
    add("--source", default=DEFAULT_SOURCE, help="attribute filter of the faces to translate")
    add("--target", default=DEFAULT_TARGET, help="attribute filter of the faces to translate into")
    add("--allow-overlap", action="store_true", help="let source and target share images")
    add("--crop", default="makeover", choices=data_prep.CROPS, help="makeover: the 80x100 box at (49, 90)")
    add("--image-size", type=int, default=64, help="output width (the makeover crop is 5:4 tall: 80x64 for 64)")
    add("--crop-size", type=int, default=108, help="side of the DCGAN centre crop (--crop dcgan only)")
    add("--limit", type=int, default=None, help="use only the first N training images of each population")
    add("--filters", type=int, default=64, help="base filters of translator and discriminator")
    runs.add_optimizer_flags(add, epochs=20, batch_size=16, what="both networks",
                             epochs_help="epochs in all; an epoch is one pass over the source faces",
                             batch_help="faces of each population per step (deep-makeover: 16)")
    add("--anneal-start", type=int, default=0, help="step at which the adversarial weight starts rising")
    add("--anneal-steps", type=int, default=2000, help="steps of the linear hand-over (0: a switch at the start)")
    add("--anneal-end", type=float, default=1.0, help="adversarial weight after the hand-over (pixel: 1 - it)")
    add("--cycle-weight", type=float, default=0.0, help="cycle-consistency weight; > 0 adds a translator back")
    add("--identity-weight", type=float, default=0.0, help="identity loss weight |G(target) - target|")
    add("--keep-classifier", nargs="+", default=None, help="frozen attribute CNNs of the run's crop whose view of "
        "the attributes no filter names the translator must keep; not the CNN that scores the run")
    add("--keep-weight", type=float, default=0.0, help="weight of that keep loss (mean Bernoulli KL per attribute)")
    add("--smooth-weight", type=float, default=0.0, help="weight of the total variation of the change G(x) - x")
    add("--conditional", action="store_true", help="D also sees the labels that no filter names (a real face's "
        "own, a translated face's source labels), and each source face is paired with a target face nearest in "
        "them, so D asks for a target face with the input's other attributes")
    add("--matched", action="store_true", help="pair each source face with a target face nearest in the labels no "
        "filter names, D seeing images only (--conditional without the labels)")
    add("--flip", action="store_true", help="random horizontal flips of both populations")
    add("--grid-count", type=int, default=16, help="held-out source faces in each epoch's grid")
    add("--seed", type=int, default=0, help="seed of weights, shuffling and the grid's faces")
    runs.add_run_flags(add)
    return parser


def join_filter_values(argv):
    """`--target -Male,Attractive` as `--target=-Male,Attractive`: argparse would take a value starting with '-'
    for an unknown flag, and deep-makeover's own target filter starts with one."""
    argv, joined = list(argv), []
    while argv:
        item = argv.pop(0)
        joined.append(f"{item}={argv.pop(0)}" if item in ("--source", "--target") and argv else item)
    return joined


def validate_config(config):
    runs.check_at_least(config, ("epochs", "batch_size", "filters", "grid_count", "crop_size"))
    runs.check_at_least(config, ("anneal_start", "anneal_steps"), minimum=0)
    if not 0.0 <= config["anneal_end"] <= 1.0:
        raise ValueError(f"--anneal-end must be in [0, 1], got {config['anneal_end']}")
    for name in ("cycle_weight", "identity_weight", "keep_weight", "smooth_weight"):
        if config.get(name, 0.0) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {config[name]}")
    if config.get("conditional") and config["cycle_weight"] > 0:
        raise ValueError("--conditional and --cycle-weight cannot be combined (the translator back has no labels)")
    if config.get("keep_weight", 0.0) > 0 and not config.get("keep_classifier"):
        raise ValueError("--keep-weight needs --keep-classifier DIR (train one with `python evaluate.py classifier "
                         "--crop makeover --seed 1 --out DIR`)")
    check_image_shape(data_prep.crop_output_shape(config["crop"], config["image_size"]))
    filter_terms(config["source"]), filter_terms(config["target"])


def resolve_config(argv=None):
    """Flags -> (config, run_dir, resume), with runs.training_config; a resumed run's keep-loss CNNs compare by path."""
    same_keepers = (lambda key, saved, config: [os.path.realpath(path) for path in keep_classifiers(saved)]
                    == [os.path.realpath(path) for path in keep_classifiers(config)] if key == "keep_classifier"
                    else None)
    return runs.training_config(training_parser, join_filter_values(sys.argv[1:] if argv is None else argv),
                                resumable=RESUMABLE_OVERRIDES, validate=validate_config, model="makeover",
                                same=same_keepers)


def subcommand_parser(command):
    parser = argparse.ArgumentParser(prog=f"makeover.py {command}",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--run", required=True, help="the makeover run directory (runs/<name>)")
    add("--epoch", type=int, default=None, help="use the translator saved after this epoch (default: final)")
    add("photos", nargs="+", help="JPEG or PNG photos with a face")
    add("--paste", action="store_true", help="also write the photo with the output put back in place")
    add("--crop", default=None, choices=data_prep.CROPS, help="must match the run's crop (default: the run's)")
    add("--center-crop", action="store_true", help="no face found: use a plain centre crop (no --paste)")
    add("--out", default=None, help="output directory (default: <run>/applied)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser


def run_subcommand(command, argv):
    if command == "score":
        raise data_prep.DataError("`makeover.py score` moved: run `python scores.py makeover` with the same flags")
    args = subcommand_parser(command).parse_args(argv)
    written = apply_run(args.run, args.photos, out_dir=args.out, crop=args.crop, paste=args.paste,
                        fallback=args.center_crop, epoch=args.epoch)
    print("wrote " + ", ".join(written))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    config, run_dir, resume = resolve_config(argv)
    config["data"] = os.path.abspath(data_prep.resolve_data_dir(config["data"]))
    celeba = data_prep.read_celeba(config["data"])
    check_populations(celeba, source=config["source"], target=config["target"],
                      allow_overlap=config["allow_overlap"])
    for which in ("source", "target"):  # an empty population fails here, before the run directory exists
        data_prep.select_files(celeba, split="train", filter=config[which])
    if config.get("keep_weight", 0.0) > 0 and not resume:
        config["keep_classifier"] = [os.path.abspath(path) for path in config["keep_classifier"]]
        check_keepers(config)
        config["keep_attributes"] = collateral_attributes(celeba.attributes, config["source"], config["target"])
        if not config["keep_attributes"]:
            raise data_prep.DataError("the filters name every attribute that varies, so the keep loss has nothing to "
                                      "keep; drop --keep-weight")
    if (config.get("conditional") or config.get("matched")) and not resume:
        config["condition_attributes"] = condition_attributes(celeba.attributes, config["source"], config["target"])
        if not config["condition_attributes"]:
            raise data_prep.DataError("no attribute outside the filters varies in the target population, so there "
                                      "are no labels to see or match; drop --conditional and --matched")
    runs.training_job(run_dir, config, resume=resume, train=lambda: train(config, run_dir, resume=resume),
                      result=f"evidence in {run_dir}")


if __name__ == "__main__":
    runs.run_cli(main)
