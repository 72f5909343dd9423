"""A VAE of the DCGAN's size (Kingma and Welling 2014, "Auto-Encoding Variational Bayes"): the encoder is E's
convolutional stack with a mean and a log-variance head, the decoder is the DCGAN generator. Trained with --like on
a GAN run's data, sizes, batch, oversampling and image-steps, it answers the open question (GAN codes or VAE
codes?) in numbers: `python scores.py encoders --vae` and `python scores.py edits --vae`. Its run directory reads like a GAN's
(config.json with "kind": "vae", generator.keras, the VAE's encoder in vae_encoder.keras), so encoder.py encode,
facemath.py and editor.py take it as --run.

With --gan it trains the model that tries to be both, the VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels
using a learned similarity metric"): the same encoder and decoder with the DCGAN discriminator beside them, whose
features measure the reconstruction instead of pixels, and whose realism loss the decoder also meets on its
reconstructions and on samples from the prior. Its run is a VAE run for every later script.

Usage:
    python vae.py --name vae --like runs/demo                    # the GAN's data, sizes, batch, mix and image-steps
    python vae.py --name vae-cpu --image-size 32 --filters 16 --epochs 2 --steps-per-epoch 50   # CPU-sized
    python vae.py --name vae --like runs/demo --resume --epochs 12
    python vae.py --name vae-gan --like runs/demo --gan          # the VAE-GAN at the GAN's image-steps
"""

import argparse
import os

import numpy as np

import data_prep
import dcgan
import encoder
import runs

import keras  # noqa: E402  (runs chose the backend and loaded TensorFlow quietly)
import tensorflow as tf  # noqa: E402


# ----------------------------------------------------------------------------------------------------------
# The model


def build_vae_encoder(*, latent_dim=100, image_size=64, filters=64, kernel_size=5, name="vae_encoder"):
    """The VAE's encoder: E's stack with two linear heads, the posterior's mean and log-variance."""
    image = keras.Input((image_size, image_size, 3), name="image")
    features = keras.layers.Flatten(name="flatten")(dcgan.conv_stack(image, image_size=image_size, filters=filters,
                                                                      kernel_size=kernel_size))
    mean = keras.layers.Dense(latent_dim, kernel_initializer=dcgan.weight_init(), dtype="float32",
                              name="mean")(features)  # (batch, latent_dim)
    log_variance = keras.layers.Dense(latent_dim, kernel_initializer=dcgan.weight_init(), dtype="float32",
                                      name="log_variance")(features)  # (batch, latent_dim)
    return keras.Model(image, [mean, log_variance], name=name)


def kl_divergence(mean, log_variance):
    """KL(N(mean, exp(log_variance)) || N(0, 1)) per example, summed over dimensions (Kingma and Welling's
    appendix B): 0.5 * sum(exp(lv) + mean^2 - 1 - lv). (batch,)"""
    mean = keras.ops.cast(mean, "float32")
    log_variance = keras.ops.cast(log_variance, "float32")
    return 0.5 * keras.ops.sum(keras.ops.exp(log_variance) + mean ** 2 - 1.0 - log_variance, axis=-1)


class VAE(runs.WeightedLossModel):
    """A VAE whose decoder is the DCGAN generator: per image, the squared error summed over pixels (a Gaussian
    decoder of variance 1/2 on [-1, 1] pixels) plus beta times the KL term; one optimizer for both halves."""

    PARTS = ("reconstruction", "kl")

    def __init__(self, encoder, generator, *, beta=1.0, seed=0, **kwargs):
        super().__init__({"reconstruction": 1.0, "kl": beta}, trained=(encoder, generator), **kwargs)
        self.encoder, self.generator = encoder, generator
        self.seed_generator = keras.random.SeedGenerator(seed)

    def parts(self, images, *, training):
        mean, log_variance = self.encoder(images, training=training)  # (batch, latent_dim) each
        noise = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
        z = mean + tf.exp(0.5 * log_variance) * noise  # the reparameterisation trick
        reconstructions = tf.cast(self.generator(z, training=training), tf.float32)
        reconstruction = tf.reduce_sum(tf.square(reconstructions - images), axis=[1, 2, 3])
        return {"reconstruction": tf.reduce_mean(reconstruction),
                "kl": tf.reduce_mean(kl_divergence(mean, log_variance))}

    def state_variables(self):
        return (self.encoder.weights + self.generator.weights + self.loss_optimizer.variables
                + [self.seed_generator.state])


def _cross_entropy(label, logits):
    """Mean sigmoid cross-entropy of D's logits against a constant label, in float32."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits))


class VAEGAN(runs.TrainingModel):
    """Larsen et al. 2016's VAE-GAN, Algorithm 1: per batch, x -> Enc -> z -> Dec -> x~, and x_p = Dec(z_p) from
    the prior. D's features at one layer (Dis_l) replace the pixels in the reconstruction loss: a Gaussian in
    feature space, the squared difference of Dis_l(x~) and Dis_l(x) summed over the features (as the VAE sums over
    pixels). The encoder minimises beta * KL + that feature loss; the decoder gamma * the feature loss + the
    non-saturating GAN loss of x~ and x_p; D the GAN loss of x (real) against x~ and x_p (fake), never the feature
    loss. Three optimizers."""

    FIGURES = ("kl", "feature", "d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, encoder, generator, discriminator, *, beta=1.0, gamma=1.0, feature_layer=None, seed=0,
                 **kwargs):
        super().__init__(self.FIGURES, **kwargs)
        self.encoder, self.generator, self.discriminator = encoder, generator, discriminator
        features = dcgan.discriminator_features(discriminator, layer=feature_layer)
        self.judge = keras.Model(discriminator.input, [discriminator.output, features.output], name="judge")
        self.beta, self.gamma = beta, gamma
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compile(self, encoder_optimizer, generator_optimizer, discriminator_optimizer, **kwargs):
        super().compile(**kwargs)
        self.optimizers = {"encoder": encoder_optimizer, "generator": generator_optimizer,
                           "discriminator": discriminator_optimizer}
        for name, optimizer in self.optimizers.items():
            optimizer.build(getattr(self, name).trainable_variables)  # slots now, for checkpoints

    def losses_of(self, images, *, training=True):
        """The three networks' losses and the figures of one batch (scalars, float32)."""
        mean, log_variance = self.encoder(images, training=training)  # (batch, latent_dim) each
        z = mean + tf.exp(0.5 * log_variance) * keras.random.normal(tf.shape(mean), seed=self.seed_generator)
        reconstructions = self.generator(z, training=training)  # (batch, size, size, 3)
        samples = self.generator(keras.random.normal(tf.shape(mean), seed=self.seed_generator), training=training)
        real_logits, real_features = self.judge(images, training=training)
        reconstruction_logits, reconstruction_features = self.judge(reconstructions, training=training)
        sample_logits, _ = self.judge(samples, training=training)
        kl = tf.reduce_mean(kl_divergence(mean, log_variance))
        difference = tf.cast(reconstruction_features, tf.float32) - tf.stop_gradient(tf.cast(real_features, tf.float32))
        feature = tf.reduce_mean(tf.reduce_sum(tf.square(difference), axis=[1, 2, 3]))
        d_loss = (_cross_entropy(1.0, real_logits) + _cross_entropy(0.0, reconstruction_logits)
                  + _cross_entropy(0.0, sample_logits))
        g_loss = _cross_entropy(1.0, reconstruction_logits) + _cross_entropy(1.0, sample_logits)
        figures = {"kl": kl, "feature": feature, "d_loss": d_loss, "g_loss": g_loss,
                   "d_real": tf.reduce_mean(tf.sigmoid(tf.cast(real_logits, tf.float32))),
                   "d_fake": tf.reduce_mean(tf.sigmoid(tf.cast(sample_logits, tf.float32)))}
        losses = {"encoder": self.beta * kl + feature, "generator": self.gamma * feature + g_loss,
                  "discriminator": d_loss}
        return losses, figures

    def train_step(self, images):
        images = runs.to_float_batch(images)
        with tf.GradientTape(persistent=True) as tape:
            losses, figures = self.losses_of(images)
        for name, optimizer in self.optimizers.items():
            variables = getattr(self, name).trainable_variables
            gradients = tape.gradient(losses[name], [variable.value for variable in variables])
            optimizer.apply_gradients(zip(gradients, variables))
        del tape
        for name, value in figures.items():
            self.trackers[name].update_state(value)
        return figures

    def state_variables(self):
        optimizers = [variable for optimizer in self.optimizers.values() for variable in optimizer.variables]
        return (self.encoder.weights + self.generator.weights + self.discriminator.weights + optimizers
                + [self.seed_generator.state])


# ----------------------------------------------------------------------------------------------------------
# Training


def train_dataset(config):
    """The training faces as uint8 batches, each oversampled face as often as the run's oversampling says."""
    train = data_prep.run_split(config, split="train", limit=config.get("limit"))
    return data_prep.make_dataset(train.images, batch_size=config["batch_size"], seed=config["seed"], scale=False,
                                  repeats=data_prep.run_repeats(config, train.labels))


def epoch_length(config):
    """Faces in one epoch of a run's training split: each as many times as its oversampling says (once without)."""
    train = data_prep.run_split(config, split="train", limit=config.get("limit"))
    repeats = data_prep.run_repeats(config, train.labels)
    return len(train.images) if repeats is None else int(repeats.sum())


def image_steps(config, run_dir, *, train_count):
    """Images the run's training steps have seen: finished epochs x steps per epoch x batch size."""
    losses = os.path.join(run_dir, "d_losses.npy")
    epochs = len(np.load(losses)) if os.path.isfile(losses) else config["epochs"]
    steps = config.get("steps_per_epoch") or train_count // config["batch_size"]
    return int(epochs * steps * config["batch_size"])


def make_vae(config):
    """The VAE of a config, or with "gan" the VAE-GAN (D as dcgan.py builds it, its optimizer D's usual Adam)."""
    with runs.dtype_policy(config["compute_precision"]):
        sizes = {"latent_dim": config["latent_dim"], "image_size": config["image_size"],
                 "filters": config["filters"], "kernel_size": config["kernel"]}
        if not config.get("gan"):
            vae = VAE(build_vae_encoder(**sizes), dcgan.build_generator(**sizes), beta=config["beta"],
                      seed=config["seed"])
        else:
            discriminator = dcgan.build_discriminator(image_size=config["image_size"], filters=config["filters"],
                                                      kernel_size=config["kernel"])
            vae = VAEGAN(build_vae_encoder(**sizes), dcgan.build_generator(**sizes), discriminator,
                         beta=config["beta"], gamma=config["gamma"], feature_layer=config["feature_layer"],
                         seed=config["seed"])
    if not config.get("gan"):
        vae.compile(keras.optimizers.Adam(config["learning_rate"], beta_1=config["beta1"]))
    else:
        adam = [keras.optimizers.Adam(rate, beta_1=config["beta1"])
                for rate in (config["learning_rate"], config["learning_rate"], config["d_learning_rate"])]
        vae.compile(*adam)
    return vae


def train_vae(config, run_dir, *, resume=False, verbose=1):
    """Train (or resume) the VAE of `config` into run_dir, a run directory that dcgan.load_generator reads."""
    keras.utils.set_random_seed(config["seed"])
    vae = make_vae(config)
    history = {name: [] for name in (VAEGAN.FIGURES if config.get("gan") else ("loss", *VAE.PARTS))}
    if resume:
        history = runs.load_checkpoint(run_dir, vae.state_variables())
    else:
        data_prep.atomic_save_npy(os.path.join(run_dir, "fixed_z.npy"),
                                  dcgan.latent_for_seed(config["seed"], encoder.GRID_FACES, config["latent_dim"]))
    fixed = encoder.fixed_held_out(run_dir, config, seed=config["seed"])
    fixed_z = np.load(os.path.join(run_dir, "fixed_z.npy"))

    def save_epoch(number):
        mean = encoder.encoder_codes(vae.encoder, data_prep.to_float(fixed))
        rows = [data_prep.to_float(fixed), dcgan.generate(vae.generator, mean), dcgan.generate(vae.generator, fixed_z)]
        data_prep.save_grid(os.path.join(run_dir, "samples", f"epoch_{number:03d}.png"), np.concatenate(rows),
                            columns=encoder.GRID_FACES, row_labels=["x", "dec(mean)", "dec(z)"])
        runs.save_weights_atomic(vae.generator, os.path.join(run_dir, "checkpoints",
                                                              f"generator_epoch_{number:03d}.weights.h5"))

    dataset = train_dataset(config)
    steps = config["steps_per_epoch"]
    encoder.fit_with_evidence(vae, dataset.repeat() if steps else dataset, run_dir, epochs=config["epochs"],
                      steps_per_epoch=steps, history=history, save_epoch=save_epoch, verbose=verbose)
    runs.save_model_atomic(vae.generator, os.path.join(run_dir, "generator.keras"))
    runs.save_model_atomic(vae.encoder, os.path.join(run_dir, "vae_encoder.keras"))
    if config.get("gan"):
        runs.save_model_atomic(vae.discriminator, os.path.join(run_dir, "vae_gan_discriminator.keras"))
    return vae, history


# ----------------------------------------------------------------------------------------------------------
# Command line


def make_parser():
    parser = runs.OneLineParser(prog="vae.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--name", default="vae", help="run name: the run directory is <runs-dir>/<name>")
    add("--runs-dir", default="runs", help="where run directories live")
    add("--like", default=None,
        help="a GAN run whose data, sizes, batch, oversampling and image-steps the VAE copies")
    add("--data", default=None, help="CelebA directory (default: the synthetic CelebA); ignored with --like")
    add("--image-size", type=int, default=64, help="image size (with --like: the GAN's)")
    add("--filters", type=int, default=64, help="base filters of encoder and decoder (with --like: the GAN's)")
    add("--kernel", type=int, default=5, help="kernel size (with --like: the GAN's)")
    add("--latent-dim", type=int, default=100, help="size of z (with --like: the GAN's)")
    runs.add_optimizer_flags(add, epochs=10, batch_size=64, what="the VAE", learning_rate=1e-3, beta1=0.9,
                             epochs_help="epochs (with --like: as many as the GAN's image-steps, unless typed)",
                             batch_help="batch size (with --like: the GAN's)")
    add("--steps-per-epoch", type=int, default=None,
        help="cap the steps of an epoch (with --like: the GAN's, unless typed)")
    add("--limit", type=int, default=None, help="train on only the first N images (with --like: the GAN's)")
    add("--beta", type=float, default=1.0, help="weight of the KL term (1: the VAE's bound)")
    add("--gan", action="store_true", help="train the VAE-GAN (Larsen et al. 2016): reconstruction in D's features, "
        "and D's realism loss for the decoder")
    add("--gamma", type=float, default=0.01, help="VAE-GAN: the decoder's weight of the feature loss (summed over "
        "D's features, thousands at the start) against the GAN loss")
    add("--feature-layer", default="down3_features", help="VAE-GAN: D's layer whose features measure the "
        "reconstruction (Larsen et al.: the third block)")
    add("--d-learning-rate", type=float, default=2e-4, help="VAE-GAN: Adam learning rate of D (the DCGAN's); the "
        "encoder and decoder take --learning-rate and --beta1, 2e-4 and 0.5 unless typed")
    add("--cache-dir", default=data_prep.DEFAULT_CACHE_DIR, help="where prepared image arrays are cached")
    add("--seed", type=int, default=0, help="seed of weights, noise and shuffling")
    add("--resume", action="store_true", help="continue after the last finished epoch")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def vae_config(args, argv):
    """The VAE's config: the flags, or with --like the GAN run's data, sizes, batch and image-steps."""
    config = {**vars(args), "kind": "vae", "latent_distribution": "normal", "crop_size": 108, "filter": None,
              "compute_precision": "float32"}
    if args.like:
        gan = runs.read_config(args.like)
        if gan.get("kind") in ("vae", "untrained", "noise"):
            raise data_prep.DataError(f"--like {args.like} is not a trained GAN run")
        for key in ("data", "image_size", "crop_size", "filters", "kernel", "latent_dim", "batch_size", "filter",
                    "limit", "cache_dir", "steps_per_epoch", "compute_precision", "oversample"):
            config[key] = gan.get(key, config.get(key))
        count = epoch_length(config)
        config["gan_image_steps"] = image_steps(gan, args.like, train_count=count)
        typed = runs.typed_flags(make_parser(), argv)
        if "steps_per_epoch" in typed:  # a smaller budget than the GAN's, on purpose: image_steps records it
            config["steps_per_epoch"] = args.steps_per_epoch
        steps = config["steps_per_epoch"] or count // config["batch_size"]
        config["epochs"] = (args.epochs if "epochs" in typed
                            else max(1, round(config["gan_image_steps"] / (steps * config["batch_size"]))))
        config["like"] = os.path.abspath(args.like)
    else:
        config["data"] = os.path.abspath(data_prep.resolve_data_dir(config["data"]))
    config["cache_dir"] = os.path.abspath(os.path.expanduser(config["cache_dir"]))
    if config["gan"]:  # the decoder is a GAN's generator: the DCGAN's Adam unless typed
        typed = runs.typed_flags(make_parser(), argv)
        config["learning_rate"] = args.learning_rate if "learning_rate" in typed else 2e-4
        config["beta1"] = args.beta1 if "beta1" in typed else 0.5
        config["model"] = "vae-gan"
    return config


def check_feature_layer(config):
    """The VAE-GAN's feature layer, refused in one line before anything is written when D has no such layer."""
    discriminator = dcgan.build_discriminator(image_size=config["image_size"], filters=config["filters"],
                                              kernel_size=config["kernel"])
    try:
        dcgan.discriminator_features(discriminator, layer=config["feature_layer"])
    except ValueError as error:
        raise data_prep.DataError(f"--feature-layer: {error}") from None


def main(argv=None):
    args = parse_args(argv)
    run_dir = os.path.join(args.runs_dir, args.name)
    config, resume = encoder.resolve_training(make_parser(), argv, run_dir, vae_config(args, argv))
    if config.get("gan"):
        check_feature_layer(config)
    steps = config["steps_per_epoch"] or epoch_length(config) // config["batch_size"]
    config["image_steps"] = int(config["epochs"] * steps * config["batch_size"])
    config["versions"] = config.get("versions") or runs.library_versions()
    runs.training_job(run_dir, config, resume=resume, train=lambda: train_vae(config, run_dir, resume=resume),
                      result=f"decoder in {run_dir}/generator.keras")


if __name__ == "__main__":
    runs.run_cli(main)
