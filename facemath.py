"""Arithmetic on faces: analogies, attribute edits, descriptions, averages and maps of latent codes, scored.

It reproduces the face math of NVIDIA's "Photo editing with generative adversarial networks" (part 2: the 40 x 100
matrix of attribute vectors, mean code with an attribute minus mean code without, added to a face's code, and
the projection of a code on each vector that describes it; the DIGITS plugins' analogy grids and edit tables),
InterFaceGAN (Shen et al. 2020: a linear boundary per attribute, its unit normal as the direction, and conditional
directions that leave chosen attributes alone by projecting out their normals), White 2016 ("Sampling Generative
Networks": spherical interpolation, analogy grids) and frrmack's facemath (the average face of several photos).
Every edit is also measured: the attribute CNN of evaluate.py says how often an edit flips its attribute, what it
does to the others and how far the face moves.

Codes come from encoder.py (an encoder, projection by optimisation, or both; a VAE run's encoder) or, for the
directions only, from samples of the generator labelled by the attribute CNN (InterFaceGAN's recipe). A dataset's
codes are computed once and cached in <run>/facemath/ with their labels.

Strength has one unit for every kind of direction: strength 1 moves a code by the mean distance between faces
with and without the attribute, measured along the direction (so mean-difference strength 1 adds NVIDIA's vector).

Usage:
    python facemath.py --analogy a.jpg b.jpg c.jpg                 # D = C + B - A on an 8x8 grid: PNG, .npz, GIF
    python facemath.py --analogy --examples --run runs/reference    # three held-out faces chosen by their labels
    python facemath.py --analogy 000012.jpg 000031.jpg 000101.jpg --linear --size 5   # faces of the run's data
    python facemath.py --edit photo.jpg --add Smiling=1.5 --add Eyeglasses=-1 --add "Smiling|Male=2"
    python facemath.py --edit photo.jpg --sweep Smiling --kind boundary
    python facemath.py --edit --examples --sweep Smiling --sweep Eyeglasses     # a held-out man, no photo needed
    python facemath.py --describe photo.jpg                        # top five attributes, beside the CNN's view
    python facemath.py --average a.jpg b.jpg c.jpg                 # one face from several photos
    python facemath.py --interpolate a.jpg b.jpg --steps 8         # a strip and a GIF
    python facemath.py --map --run runs/reference --color-by Male  # PCA and t-SNE, and a TensorBoard projector
    python facemath.py demo --run runs/demo                        # a short E, an analogy grid and an edit sweep
    python facemath.py directions --run runs/reference             # the directions and their held-out accuracy
"""

import argparse
import dataclasses
import difflib
import json
import os
import sys
import time

import numpy as np

import data_prep
import dcgan
import encoder
import evaluate
import runs

ATTRIBUTES = data_prep.CELEBA_ATTRIBUTES
SUBCOMMANDS = ("demo", "directions")
MOVED = {"score-edits": "edits", "score-analogies": "analogies", "score-descriptions": "descriptions"}
MODES = ("analogy", "edit", "describe", "average", "interpolate", "map")
KINDS = ("mean", "boundary", "conditional", "partial")  # NVIDIA's mean difference, InterFaceGAN's normal and its
# conditional, and the partial effect: the attribute's coefficient when the codes are regressed on every label
METHODS = ("auto", "encoder", "optimize", "hybrid", "samples")  # "samples": G(z) labelled by the attribute CNN
SCORE_STRENGTHS = (0.5, 1.0, 2.0, 3.0)
SWEEP_STRENGTHS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
MIN_GROUP = 10  # faces needed on each side of an attribute before it has a direction
HELD_OUT_FRACTION = 0.2  # of the fitted codes, kept out of the boundary's fit to measure its accuracy
CONDITION_COUNT = 3  # a conditional direction leaves alone the attributes most correlated with its own
TOP_COUNT = 5  # attributes that --describe names
ANALOGY_PAIRS = (("Male", "Eyeglasses"), ("Male", "Smiling"), ("Male", "Wearing_Hat"), ("Young", "Eyeglasses"),
                 ("Smiling", "Eyeglasses"), ("Male", "Mouth_Slightly_Open"))  # (X, Y): A x!y, B xy, C !x!y, D !xy
EXAMPLE_ATTRIBUTES = ("Smiling", "Eyeglasses", "Male", "Blond_Hair", "Wearing_Hat", "Young", "Mustache", "Bangs")
DEMO_SWEEPS = ("Smiling", "Eyeglasses", "Male", "Wearing_Hat")  # the demo's edit sweep, one row each
EXAMPLE_FILTERS = ("Male,-Eyeglasses", "Male,Eyeglasses", "-Male,-Eyeglasses")  # --examples: A, B and C
TRAIN_HINT = "python dcgan.py --epochs 8 --filters 32 --kernel 4 --name demo"
GIF_FRAME_MS = 120


# ----------------------------------------------------------------------------------------------------------
# Runs and faces


def newest_run(runs_dir="runs"):
    """The run in `runs_dir` whose generator.keras is newest (a GAN or a VAE run; no baselines, no makeovers)."""
    found = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        directory = os.path.join(runs_dir, name)
        generator = os.path.join(directory, "generator.keras")
        if os.path.isfile(generator) and os.path.isfile(os.path.join(directory, "config.json")):
            config = runs.read_config(directory)
            if "latent_dim" in config and config.get("kind") not in ("untrained", "noise"):
                found.append((os.path.getmtime(generator), directory))
    if not found:
        raise data_prep.DataError(f"no trained run with a generator in {runs_dir}/; train one first: `{TRAIN_HINT}`")
    return max(found)[1]


def load_math_run(run_dir=None, *, runs_dir="runs"):
    """A dcgan.Run (GAN or VAE) for face math: `run_dir`, or the newest run in `runs_dir`, named on stdout."""
    if run_dir is None:
        run_dir = newest_run(runs_dir)
        print(f"using the newest run with a generator: {run_dir}")
    config = runs.read_config(run_dir)
    if config.get("kind") in ("untrained", "noise") or "latent_dim" not in config:
        raise data_prep.DataError(f"{run_dir} is not a trained GAN or VAE run (kind {config.get('kind', 'other')})")
    if not os.path.isfile(os.path.join(run_dir, "generator.keras")) and not runs.saved_epochs(run_dir):
        raise data_prep.DataError(f"{run_dir} has no generator (no generator.keras, no saved epoch); train it with "
                                  f"`python dcgan.py` first")
    return encoder.load_model_run(run_dir)


def run_kind(run):
    return "vae" if run.config.get("kind") == "vae" else "gan"


def has_encoder(run):
    """A VAE run always has one; a GAN run when `encoder.py train` made one for this very generator."""
    if run_kind(run) == "vae":
        return True
    try:
        encoder.load_encoder(run)
    except ValueError:
        return False
    return True


def resolve_method(run, method, *, dataset=False, classifier_ready=False):
    """The encoder.py method behind "auto": E (VAE: its encoder) for a dataset and the hybrid for a few photos
    when a trained encoder exists; without one, generated samples for a dataset (when the attribute CNN is
    there to label them) and projection by optimisation for photos. "samples" encodes photos as auto does."""
    if method != "auto":
        if run_kind(run) == "vae" and method in ("optimize", "hybrid"):
            raise data_prep.DataError(f"{run.directory} is a VAE run; its codes come from --method encoder")
        if method == "samples" and not dataset:  # samples fit the directions; photos are encoded as by auto
            return resolve_method(run, "auto")
        return method
    if has_encoder(run):
        return "encoder" if dataset or run_kind(run) == "vae" else "hybrid"
    if dataset:
        return "samples" if classifier_ready else "optimize"
    return "optimize"


def dataset_face(name, config, celeba=None):
    """A face of the run's data named by its file name (000012.jpg), already aligned, in the run's crop; None when
    the data has no such file."""
    celeba = celeba or data_prep.read_celeba(config["data"])
    path = os.path.join(celeba.image_dir, os.path.basename(name))
    if os.path.basename(name) != name or not os.path.isfile(path):
        return None
    image = data_prep.read_image_uint8(path)
    return data_prep.crop_and_resize(image, image_size=config["image_size"], crop_size=config.get("crop_size", 108))


def read_faces(paths, config, *, fallback=False):
    """uint8 faces (n, size, size, 3) for photos (aligned with data_prep.load_face) or file names of the run's
    data; names are the files' base names. Everything loads before anything is written."""
    faces, celeba = [], None
    for path in paths:
        if os.path.isfile(path):
            face = data_prep.load_face(path, image_size=config["image_size"], crop_size=config.get("crop_size", 108),
                                       fallback=fallback)
            faces.append(data_prep.to_uint8(face))
            continue
        celeba = celeba or data_prep.read_celeba(config["data"])
        face = dataset_face(path, config, celeba)
        if face is None:
            raise data_prep.DataError(f"photo not found: {path} (neither a file nor an image of {config['data']})")
        faces.append(face)
    return np.stack(faces), [os.path.basename(path) for path in paths]


def example_faces(config, *, filters=EXAMPLE_FILTERS, seed=0):
    """One held-out (test split) face per filter, chosen with `seed`: by default A a man without glasses, B a man
    with glasses, C a woman without glasses. Returns (uint8 faces, names)."""
    rng = np.random.default_rng(seed)
    faces, names = [], []
    for text in filters:
        split = load_faces_split(config, split="test", filter=text)
        index = int(rng.integers(len(split.names)))
        faces.append(split.images[index])
        names.append(split.names[index])
    return np.stack(faces), names


def load_faces_split(config, *, split, filter=None, limit=None):
    """A split of the run's data (its crop, size, cache), with an extra attribute filter when given."""
    combined = ",".join(part for part in (config.get("filter"), filter) if part) or None
    return data_prep.load_split(config["data"], split=split, image_size=config["image_size"],
                                crop_size=config.get("crop_size", 108), filter=combined, limit=limit,
                                cache_dir=config.get("cache_dir"), progress=False)


def encode_faces(run, faces, *, method, steps=200, seed=0):
    """Codes of a few faces through encoder.encode; returns the encoder.Encoding (non-finite codes refused)."""
    encoding = encoder.encode(run, faces, method=method, steps=steps, seed=seed, progress=False)
    if not np.isfinite(encoding.codes).all():
        raise data_prep.DataError(f"encoder.py's {method} gave non-finite codes on {run.directory}; try another "
                                  f"--method (encoder, hybrid) or fewer --steps")
    return encoding


# ----------------------------------------------------------------------------------------------------------
# Codes of a dataset, computed once and cached beside the run


@dataclasses.dataclass
class Codes:
    codes: np.ndarray  # (n, latent_dim) float32
    names: list  # file names (or sample names) of the faces
    labels: np.ndarray  # (n, 40) float32 in {0, 1}, CELEBA_ATTRIBUTES order
    method: str
    split: str
    run: str
    from_cache: bool = False  # read from <run>/facemath/ rather than computed now


def codes_path(run, *, method, split, limit):
    return os.path.join(run.directory, "facemath", f"codes-{method}-{split}-{limit or 'all'}.npz")


def cache_key(run, *, method, split, limit, steps, seed):
    """What the cached codes depend on: the generator's weights, the method and its settings, the split."""
    key = {"generator": encoder.generator_fingerprint(run.generator), "method": method, "split": split,
           "limit": limit or 0, "data": os.path.abspath(run.config["data"]), "seed": seed}
    if method in ("optimize", "hybrid"):
        key["steps"] = steps
    if method in ("encoder", "hybrid") and run_kind(run) == "gan":  # a retrained E gives other codes
        key["encoder"] = os.path.getmtime(os.path.join(run.directory, "encoder", "encoder.keras"))
    return json.dumps(key, sort_keys=True)


def read_cached_codes(path, key):
    if not os.path.isfile(path):
        return None
    with np.load(path) as archive:
        if str(archive["key"]) != key:
            return None
        return archive["codes"], [str(name) for name in archive["names"]], archive["labels"]


def sample_codes(run, *, count, seed, classifier):
    """InterFaceGAN's recipe: codes drawn from the prior, labelled by the attribute CNN's view of G(z)."""
    codes = dcgan.latent_for_seed(seed, count, run.config["latent_dim"],
                                  run.config.get("latent_distribution", "normal"))
    labels = (evaluate.predict_attributes(classifier, dcgan.generate(run.generator, codes)) > 0.5).astype(np.float32)
    return codes, [f"sample-{index:06d}" for index in range(count)], labels


def dataset_codes(run, *, method, split="train", limit=4000, steps=200, seed=0, classifier=None, save=True):
    """Codes and labels of a split of the run's data (or of `limit` generated samples with method "samples"),
    from <run>/facemath/ when cached for this generator, method, split and limit, else computed and cached
    (with `save=False` computed in memory only, leaving the run as it is)."""
    path = codes_path(run, method=method, split=f"seed{seed}" if method == "samples" else split, limit=limit)
    key = cache_key(run, method=method, split=split, limit=limit, steps=steps, seed=seed)
    cached = read_cached_codes(path, key)
    if cached is not None:
        return Codes(*cached, method, split, run.directory, from_cache=True)
    started = time.perf_counter()
    if method == "samples":
        if classifier is None:
            raise data_prep.DataError("--method samples needs the attribute CNN (python evaluate.py classifier)")
        codes, names, labels = sample_codes(run, count=limit or 4000, seed=seed, classifier=classifier)
    else:
        images, names, labels = load_faces_split(run.config, split=split, limit=limit)
        later = (f"cached for later in {path}" if save
                 else f"`python facemath.py directions --run {run.directory}` caches them for next time")
        print(f"encoding {len(names)} {split} faces with {method} ({later})")
        codes = encoder.encode(run, images, method=method, steps=steps, seed=seed).codes
    if save:
        with data_prep.atomic_path(path) as temporary:
            np.savez(temporary, codes=codes, names=np.asarray(names, dtype=str), labels=labels, key=key,
                     method=method, split=split, run=run.directory)
    print(f"{len(names)} codes ({method}, {split}) in {time.perf_counter() - started:.1f} s"
          + (f": {path}" if save else ""))
    return Codes(codes.astype(np.float32), list(names), np.asarray(labels, np.float32), method, split, run.directory)


# ----------------------------------------------------------------------------------------------------------
# Attribute directions


@dataclasses.dataclass
class Directions:
    """Per attribute (rows in CELEBA_ATTRIBUTES order): the mean codes with and without it, the boundary's unit
    normal and its held-out accuracy, and the label correlations that pick a conditional direction's conditions."""

    mean_with: np.ndarray  # (40, latent_dim)
    mean_without: np.ndarray  # (40, latent_dim)
    normals: np.ndarray  # (40, latent_dim) unit normals of the logistic-regression boundaries, towards "with"
    accuracy: np.ndarray  # (40,) held-out accuracy of each boundary (nan where it does not vary)
    majority: np.ndarray  # (40,) held-out accuracy of always guessing the majority label
    varying: np.ndarray  # (40,) bool: at least MIN_GROUP faces on each side
    correlation: np.ndarray  # (40, 40) correlation of the labels
    count: int
    partial: np.ndarray = None  # (40, latent_dim) least-squares coefficients of the codes on all varying labels

    @property
    def mean(self):
        """NVIDIA's attribute vectors: mean code with minus mean code without. (40, latent_dim)"""
        return self.mean_with - self.mean_without


def boundary_normal(codes, labels, *, train, held_out):
    """InterFaceGAN's boundary: logistic regression (balanced classes) on the codes; its unit normal and its
    accuracy on the held-out codes."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    model.fit(codes[train], labels[train])
    normal = model.coef_[0] / max(np.linalg.norm(model.coef_[0]), 1e-12)
    return normal.astype(np.float32), float(model.score(codes[held_out], labels[held_out]))


def fit_directions(codes, labels, *, seed=0, held_out_fraction=HELD_OUT_FRACTION, min_group=MIN_GROUP):
    """Mean-difference vectors and boundary normals for every attribute that varies in `labels` (n, 40)."""
    codes, labels = np.asarray(codes, np.float64), np.asarray(labels) > 0.5
    count, latent_dim = codes.shape
    order = np.random.default_rng(seed).permutation(count)
    held_out, train = order[:int(round(held_out_fraction * count))], order[int(round(held_out_fraction * count)):]
    shape = (len(ATTRIBUTES), latent_dim)
    mean_with, mean_without, normals = np.zeros(shape), np.zeros(shape), np.zeros(shape, np.float32)
    accuracy, majority = np.full(len(ATTRIBUTES), np.nan), np.full(len(ATTRIBUTES), np.nan)
    positives = labels.sum(axis=0)
    varying = (positives >= min_group) & (count - positives >= min_group)
    for index in np.flatnonzero(varying):
        column = labels[:, index]
        mean_with[index], mean_without[index] = codes[column].mean(axis=0), codes[~column].mean(axis=0)
        both = len(np.unique(column[train])) == 2 and len(held_out) > 0
        if both:
            normals[index], accuracy[index] = boundary_normal(codes, column, train=train, held_out=held_out)
            majority[index] = max(column[held_out].mean(), 1 - column[held_out].mean())
        else:
            difference = mean_with[index] - mean_without[index]
            normals[index] = difference / np.linalg.norm(difference)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.nan_to_num(np.corrcoef(labels.T.astype(np.float64)))
    return Directions(mean_with.astype(np.float32), mean_without.astype(np.float32), normals, accuracy, majority,
                      varying, correlation, count, partial_effects(codes, labels, varying))


def partial_effects(codes, labels, varying):
    """(40, latent_dim): the mean change of the code when one attribute turns on and every other varying one stays
    as it is, the coefficients of codes ~ 1 + labels (least squares); zero rows where an attribute does not vary.
    Unlike the mean difference, it leaves out what correlated attributes add (Male's beard in Goatee's vector)."""
    design = np.column_stack([np.ones(len(codes)), labels[:, varying].astype(np.float64)])  # (n, 1 + varying)
    coefficients = np.linalg.lstsq(design, codes, rcond=None)[0]  # (1 + varying, latent_dim)
    partial = np.zeros((len(ATTRIBUTES), codes.shape[1]), np.float32)
    partial[varying] = coefficients[1:]
    return partial


def conditional_direction(vectors, target, conditions):
    """InterFaceGAN's conditional manipulation: the target's direction with its components along every
    condition's direction removed (Gram-Schmidt on the conditions), as a unit vector."""
    vector = np.asarray(vectors[target], np.float64)
    if len(conditions):
        basis, _ = np.linalg.qr(np.asarray(vectors[list(conditions)], np.float64).T)  # (latent_dim, k)
        vector = vector - basis @ (basis.T @ vector)
    norm = np.linalg.norm(vector)
    if norm < 1e-8:
        names = ", ".join(ATTRIBUTES[index] for index in conditions)
        raise data_prep.DataError(f"{ATTRIBUTES[target]}'s direction lies within {names}'s; nothing is left to edit")
    return (vector / norm).astype(np.float32)


def correlated_attributes(directions, target, *, count=CONDITION_COUNT):
    """The `count` varying attributes whose labels correlate most (either sign) with the target's."""
    strength = np.abs(directions.correlation[target]).copy()
    strength[~directions.varying] = -1
    strength[target] = -1
    return [int(index) for index in np.argsort(-strength)[:count] if strength[index] > 0]


def direction_unit(directions, target, *, kind="mean", conditions=None):
    """The unit vector of a kind of direction. "conditional" (or explicit conditions) projects the conditions'
    directions of the same kind out of the target's (boundary normals for "conditional"); by default the
    conditions are the CONDITION_COUNT attributes whose labels correlate most with the target's."""
    if kind not in KINDS:
        raise data_prep.DataError(f"unknown kind of direction {kind!r}; expected one of {', '.join(KINDS)}")
    check_varying(directions, [target, *(conditions or [])])
    bases = {"mean": directions.mean, "partial": directions.partial}
    if kind == "conditional" or conditions:
        conditions = correlated_attributes(directions, target) if conditions is None else conditions
        return conditional_direction(bases.get(kind, directions.normals), target, conditions)
    vector = bases.get(kind, directions.normals)[target]
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def edit_vector(directions, target, *, kind="mean", conditions=None):
    """The strength-1 edit: the unit direction times the mean distance between the faces with and without the
    attribute along it (mean-difference strength 1 adds exactly NVIDIA's vector). For `partial` that distance is
    measured with every other label held, which is the coefficient itself: the plain groups' distance along it can
    be small or even negative when a correlated attribute pulls the other way (Goatee on men)."""
    if kind == "partial" and not conditions:
        check_varying(directions, [target])
        return np.asarray(directions.partial[target], np.float32)
    unit = direction_unit(directions, target, kind=kind, conditions=conditions)
    return (float(directions.mean[target] @ unit) * unit).astype(np.float32)


def check_varying(directions, indices):
    for index in indices:
        if not directions.varying[index]:
            raise data_prep.DataError(f"{ATTRIBUTES[index]} does not vary in the codes' faces (fewer than "
                                      f"{MIN_GROUP} with or without it), so it has no direction")


# ----------------------------------------------------------------------------------------------------------
# Attribute names and edits on the command line


def attribute_index(name):
    """The index of an attribute name (any case), or one line with the closest match."""
    for index, known in enumerate(ATTRIBUTES):
        if known.lower() == name.strip().lower():
            return index
    close = difflib.get_close_matches(name.strip(), ATTRIBUTES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of CelebA's 40: {', '.join(ATTRIBUTES)}"
    raise data_prep.DataError(f"unknown attribute {name.strip()!r}{hint}")


def parse_direction(text):
    """'Smiling' or 'Smiling|Male,Eyeglasses' -> (target index, condition indices or None)."""
    target, bar, conditions = text.partition("|")
    parsed = [attribute_index(name) for name in conditions.split(",") if name.strip()] if bar else None
    return attribute_index(target), parsed


def parse_edit(text):
    """'Smiling=1.5' or 'Smiling|Male=-1' -> (target, conditions, strength)."""
    name, equals, value = text.rpartition("=")
    if not equals or not name.strip():
        raise data_prep.DataError(f"--add {text!r}: expected ATTRIBUTE=STRENGTH, for instance Smiling=1.5")
    target, conditions = parse_direction(name)
    try:
        strength = float(value)
    except ValueError:
        raise data_prep.DataError(f"--add {text!r}: the strength {value!r} is not a number") from None
    if not np.isfinite(strength):
        raise data_prep.DataError(f"--add {text!r}: the strength must be finite")
    return target, conditions, strength


def edit_label(target, conditions, strength):
    condition = "|" + ",".join(ATTRIBUTES[index] for index in conditions) if conditions else ""
    return f"{ATTRIBUTES[target]}{condition} {strength:+g}"


# ----------------------------------------------------------------------------------------------------------
# Arithmetic on codes


def interpolate(start, end, fraction, *, spherical=True):
    """A code between two codes; the endpoints come back exactly at fractions 0 and 1."""
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    if fraction == 0:
        return start.copy()
    if fraction == 1:
        return end.copy()
    if spherical:
        return dcgan.slerp(start, end, fraction).astype(np.float32)
    return ((1 - fraction) * start + fraction * end).astype(np.float32)


def interpolation_strip(start, end, *, steps=8, spherical=True):
    """(steps, latent_dim) codes from start to end."""
    return np.stack([interpolate(start, end, fraction, spherical=spherical)
                     for fraction in np.linspace(0.0, 1.0, steps)])


def analogy_corner(a, b, c):
    """D = C + B - A: what C becomes when it changes as A changed into B."""
    return (np.asarray(c, np.float32) + np.asarray(b, np.float32) - np.asarray(a, np.float32)).astype(np.float32)


def analogy_grid(a, b, c, *, size=8, spherical=True):
    """(size, size, latent_dim) codes with A top-left, B top-right, C bottom-left and D = C + B - A bottom-right;
    each row interpolates between its left edge (A to C) and its right edge (B to D)."""
    if size < 2:
        raise data_prep.DataError(f"--size must be at least 2, got {size}")
    d = analogy_corner(a, b, c)
    fractions = np.linspace(0.0, 1.0, size)
    rows = []
    for fraction in fractions:
        left, right = interpolate(a, c, fraction, spherical=spherical), interpolate(b, d, fraction, spherical=spherical)
        rows.append(interpolation_strip(left, right, steps=size, spherical=spherical))
    return np.stack(rows)


def apply_edits(code, edits, directions, *, kind="mean"):
    """code + sum of strength x edit vector over (target, conditions, strength) edits."""
    code = np.asarray(code, np.float32).copy()
    for target, conditions, strength in edits:
        code += strength * edit_vector(directions, target, kind=kind, conditions=conditions)
    return code


def attribute_scores(directions, codes):
    """NVIDIA's description: each code's projection on each normalised mean-difference vector, centred midway
    between the two groups and divided by their distance, so 0 is halfway and +0.5 is the typical face with the
    attribute (the strength unit). (n, 40), nan where the attribute does not vary."""
    difference = directions.mean
    lengths = np.linalg.norm(difference, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        units = difference / lengths[:, None]
        midpoint = 0.5 * (directions.mean_with + directions.mean_without)
        scores = (np.asarray(codes, np.float32) @ units.T - np.sum(midpoint * units, axis=1)) / lengths
    scores[:, ~directions.varying] = np.nan
    return scores


def top_attributes(scores, *, count=TOP_COUNT):
    """Indices of the `count` highest scores of each row (nan last). (n, count)"""
    return np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1)[:, :count]


# ----------------------------------------------------------------------------------------------------------
# Writing what was made


def save_gif(path, frames, *, frame_ms=GIF_FRAME_MS, scale=2):
    """An animated, looping GIF of float [-1, 1] or uint8 frames, written atomically; returns the path."""
    from PIL import Image

    images = [Image.fromarray(np.kron(data_prep.to_uint8(frame) if frame.dtype != np.uint8 else frame,
                                      np.ones((scale, scale, 1), np.uint8))) for frame in frames]
    with data_prep.atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def serpentine(grid):
    """The cells of a (rows, columns, ...) grid in a boustrophedon walk: left to right, then right to left."""
    return np.concatenate([row if number % 2 == 0 else row[::-1] for number, row in enumerate(grid)])


def file_stem(names):
    return "-".join(os.path.splitext(os.path.basename(name))[0] for name in names)[:80]


def write_record(path, payload):
    """The JSON beside each output: its inputs, run, method, seed and settings."""
    return data_prep.write_json(path, {key: value for key, value in payload.items()})


# ----------------------------------------------------------------------------------------------------------
# A map of the codes


def embed_2d(codes, *, how="pca", seed=0):
    """(n, 2) PCA or t-SNE coordinates of codes (scikit-learn)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if how == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    perplexity = float(min(30, max(2, (len(codes) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)


def plot_map(path, layouts, thumbnails, colour, *, attribute, thumbnail_count=120, seed=0):
    """One panel per layout ({"PCA": (n, 2), ...}): every code a dot coloured by the attribute, and a random
    subset drawn as its face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    figure, axes = plt.subplots(1, len(layouts), figsize=(8 * len(layouts), 8), squeeze=False)
    shown = np.random.default_rng(seed).permutation(len(thumbnails))[:thumbnail_count]
    for axis, (title, points) in zip(axes[0], layouts.items()):
        axis.scatter(points[:, 0], points[:, 1], c=colour, cmap="coolwarm", s=10, vmin=0, vmax=1)
        for index in shown:
            box = AnnotationBbox(OffsetImage(thumbnails[index], zoom=0.5), points[index], frameon=True, pad=0.05,
                                 bboxprops={"edgecolor": "red" if colour[index] > 0.5 else "blue"})
            axis.add_artist(box)
        axis.set_title(f"{title} of the codes, red: {attribute}, blue: not")
    return data_prep.save_figure(figure, path)


def write_projector(out_dir, codes, names, labels, thumbnails):
    """TensorBoard's projector files, written without TensorFlow's summary API: tensors.tsv, metadata.tsv (the
    name and all 40 labels), sprite.png and projector_config.pbtxt; `tensorboard --logdir out_dir` opens it."""
    count, size = len(codes), thumbnails.shape[1]
    side = int(np.ceil(np.sqrt(count)))
    sprite = np.zeros((side * size, side * size, 3), np.uint8)
    for index, image in enumerate(thumbnails):
        row, column = divmod(index, side)
        sprite[row * size:(row + 1) * size, column * size:(column + 1) * size] = image
    data_prep.write_image(os.path.join(out_dir, "sprite.png"), sprite)
    tensors = "".join("\t".join(f"{value:.6g}" for value in code) + "\n" for code in codes)
    data_prep.atomic_write_bytes(os.path.join(out_dir, "tensors.tsv"), tensors.encode())
    metadata = "name\t" + "\t".join(ATTRIBUTES) + "\n" + "".join(
        name + "\t" + "\t".join(str(int(value > 0.5)) for value in row) + "\n" for name, row in zip(names, labels))
    data_prep.atomic_write_bytes(os.path.join(out_dir, "metadata.tsv"), metadata.encode())
    config = ('embeddings {\n  tensor_name: "codes"\n  tensor_path: "tensors.tsv"\n'
              f'  tensor_shape: {count}\n  tensor_shape: {codes.shape[1]}\n  metadata_path: "metadata.tsv"\n'
              f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {size}\n    single_image_dim: {size}\n'
              '  }\n}\n')
    data_prep.atomic_write_bytes(os.path.join(out_dir, "projector_config.pbtxt"), config.encode())
    return out_dir


# ----------------------------------------------------------------------------------------------------------
# Command line


def add_run_flags(add):
    add("--run", default=None, help="the run (GAN or VAE); default: the newest run in --runs-dir with a generator")
    add("--runs-dir", default="runs", help="where runs are looked for when --run is not given")
    add("--method", default="auto", choices=METHODS,
        help="how codes are found: auto picks E (a VAE: its encoder) when trained, else projection for photos and "
             "generated samples labelled by the attribute CNN for directions")
    add("--steps", type=int, default=200, help="Adam steps of projection by optimisation (optimize, hybrid)")
    add("--fit-limit", type=int, default=4000, help="training faces (or samples) whose codes fit the directions")
    add("--kind", default="mean", choices=KINDS, help="kind of direction for edits, sweeps and example grids")
    add("--classifier", default=os.path.join("runs", "classifier"), help="the attribute CNN's directory")
    add("--seed", type=int, default=0, help="seed of every choice and of projection's starting codes")
    add("--out", default=None, help="output directory (default: <run>/facemath)")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)


def mode_parser():
    parser = runs.OneLineParser(prog="facemath.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    modes = parser.add_mutually_exclusive_group(required=True)
    modes.add_argument("--analogy", nargs="*", metavar="FACE", help="three photos or data file names A B C")
    modes.add_argument("--edit", nargs="*", metavar="FACE", help="one photo to edit with --add or --sweep")
    modes.add_argument("--describe", nargs="+", metavar="FACE", help="photos to describe by their top attributes")
    modes.add_argument("--average", nargs="+", metavar="FACE", help="photos to average into one face")
    modes.add_argument("--interpolate", nargs="+", metavar="FACE", help="two photos to walk between")
    modes.add_argument("--map", action="store_true", help="a 2-D map of a split's codes and a TensorBoard projector")
    add("--examples", action="store_true",
        help="--analogy, --edit: held-out faces chosen by their labels (A a man, B a man with glasses, C a woman)")
    add("--add", action="append", default=[], metavar="ATTR=S",
        help="--edit: an edit, e.g. Smiling=1.5, Eyeglasses=-1, 'Smiling|Male=2' (conditional); repeatable")
    add("--sweep", action="append", default=[], metavar="ATTR", help="--edit: strengths -3 to 3 in a row")
    add("--size", type=int, default=8, help="--analogy: the grid is size x size")
    add("--linear", action="store_true", help="interpolate linearly instead of spherically (slerp)")
    add("--frames", type=int, default=8, help="--interpolate: faces in the strip")
    add("--split", default="test", choices=list(data_prep.SPLITS), help="--map: the split whose codes are mapped")
    add("--limit", type=int, default=500, help="--map: faces of the split")
    add("--color-by", default="Male", help="--map: the attribute that colours the map")
    add("--center-crop", dest="fallback_crop", action="store_true",
        help="use a plain centre crop for a photo without a face instead of refusing it")
    add_run_flags(add)
    return parser


def subcommand_parser(command):
    parser = runs.OneLineParser(prog=f"facemath.py {command}", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add_run_flags(add)
    if command == "demo":
        add("--encoder-epochs", type=int, default=2, help="epochs of the short E trained when the run has none")
        add("--encoder-steps", type=int, default=150, help="steps per epoch of that E")
        add("--sweep", action="append", default=None, metavar="ATTR",
            help=f"attributes of the edit sweep (default: {', '.join(DEMO_SWEEPS)})")
    return parser


def parse_args(argv=None):
    """(command, args): a subcommand's name and flags, or "math" and the face-math flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MOVED:
        raise data_prep.DataError(f"`facemath.py {argv[0]}` moved: run `python scores.py {MOVED[argv[0]]}` with the "
                                  "same flags")
    if argv and argv[0] in SUBCOMMANDS:
        return argv[0], subcommand_parser(argv[0]).parse_args(argv[1:])
    return "math", mode_parser().parse_args(argv)


def classifier_or_none(path, run):
    """The attribute CNN when it exists and measures this run's data, else None (with a note)."""
    try:
        evaluate.check_run(run.directory, evaluate.classifier_config(path))
        return evaluate.load_classifier(path)
    except ValueError as error:
        print(f"note: no attribute CNN for this run ({str(error).splitlines()[0]})")
        return None


def directions_for(run, args, *, classifier=None):
    """(Directions, Codes) fitted on the training split's codes (or samples), cached codes reused."""
    method = resolve_method(run, args.method, dataset=True, classifier_ready=classifier is not None)
    codes = dataset_codes(run, method=method, split="train", limit=args.fit_limit, steps=args.steps, seed=args.seed,
                          classifier=classifier)
    return fit_directions(codes.codes, codes.labels, seed=args.seed), codes


def output_dir(run, args):
    return args.out or os.path.join(run.directory, "facemath")


def record(run, args, *, command, inputs, method, **extra):
    return {"command": command, "inputs": list(inputs), "run": run.directory, "method": method, "seed": args.seed,
            **extra}


def input_faces(run, args, paths, *, count=3):
    """(faces, names, encoding, method): the named photos or data files, or with --examples `count` held-out
    faces chosen by their labels (EXAMPLE_FILTERS: a man, a man with glasses, a woman)."""
    if args.examples:
        if paths:
            raise data_prep.DataError("--examples picks the faces itself; name no faces with it")
        faces, names = example_faces(run.config, filters=EXAMPLE_FILTERS[:count], seed=args.seed)
        print("--examples: " + ", ".join(f"{name} ({text})" for name, text in zip(names, EXAMPLE_FILTERS)))
    else:
        faces, names = read_faces(paths, run.config, fallback=args.fallback_crop)
    method = resolve_method(run, args.method)
    encoding = encode_faces(run, faces, method=method, steps=args.steps, seed=args.seed)
    return faces, names, encoding, method


def run_analogy(run, args):
    if not args.examples and len(args.analogy) != 3:
        raise data_prep.DataError(f"--analogy takes exactly three faces A B C (D = C + B - A), got "
                                  f"{len(args.analogy)}; or pass --examples")
    faces, names, encoding, method = input_faces(run, args, args.analogy, count=3)
    grid = analogy_grid(*encoding.codes, size=args.size, spherical=not args.linear)
    images = dcgan.generate(run.generator, grid.reshape(-1, grid.shape[-1]))
    size, interpolation = args.size, "linear" if args.linear else "slerp"
    stem = os.path.join(output_dir(run, args), f"analogy-{file_stem(names)}-{method}-{interpolation}-seed{args.seed}")
    labels = ["A -> B"] + [""] * (size - 2) + ["C -> D"]
    data_prep.save_grid(stem + ".png", images, columns=size, row_labels=labels)
    data_prep.save_grid(stem + "-inputs.png", np.concatenate([data_prep.to_float(faces), encoding.reconstructions]),
                        columns=3, row_labels=["photo", "G(z)"], column_labels=["A", "B", "C"])
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, grid=grid, a=encoding.codes[0], b=encoding.codes[1], c=encoding.codes[2],
                 d=grid[-1, -1], names=np.asarray(names), run=run.directory, method=method, seed=args.seed,
                 interpolation=interpolation)
    save_gif(stem + ".gif", serpentine(images.reshape(size, size, *images.shape[1:])))
    write_record(stem + ".json", record(run, args, command="analogy", inputs=names, method=method, size=size,
                                       interpolation=interpolation, reconstruction_mse=encoding.losses.tolist()))
    print(f"analogy D = C + B - A with A {names[0]}, B {names[1]}, C {names[2]} ({run.directory}, {method}, "
          f"{interpolation}): wrote {stem}.png, .npz, .gif, -inputs.png, .json")
    return stem


def run_edit(run, args):
    if not args.examples and len(args.edit) != 1:
        raise data_prep.DataError(f"--edit takes one photo (or --examples), got {len(args.edit)}")
    if not args.add and not args.sweep:
        raise data_prep.DataError("--edit needs at least one --add ATTR=STRENGTH or --sweep ATTR")
    edits = [parse_edit(text) for text in args.add]
    sweeps = [parse_direction(text) for text in args.sweep]
    faces, names, encoding, method = input_faces(run, args, args.edit, count=1)
    directions, codes = directions_for(run, args, classifier=classifier_or_none(args.classifier, run))
    code = encoding.codes[0]
    stem = os.path.join(output_dir(run, args), f"edit-{file_stem(names)}-{method}-{args.kind}-seed{args.seed}")
    outputs = []
    if edits:
        rows = [apply_edits(code, [edit], directions, kind=args.kind) for edit in edits]
        labels = [edit_label(*edit) for edit in edits]
        if len(edits) > 1:
            rows.append(apply_edits(code, edits, directions, kind=args.kind))
            labels.append("all together")
        images = np.stack([np.stack([data_prep.to_float(faces[0]), encoding.reconstructions[0], image])
                           for image in dcgan.generate(run.generator, np.stack(rows))])
        outputs.append(data_prep.save_grid(stem + ".png", images.reshape(-1, *images.shape[2:]), columns=3,
                                           row_labels=labels, column_labels=["photo", "G(z)", "edited"]))
    if sweeps:
        rows = [np.stack([apply_edits(code, [(target, conditions, s)], directions, kind=args.kind)
                          for s in SWEEP_STRENGTHS]) for target, conditions in sweeps]
        images = dcgan.generate(run.generator, np.concatenate(rows))
        labels = [edit_label(target, conditions, 0.0).rsplit(" ", 1)[0] for target, conditions in sweeps]
        outputs.append(data_prep.save_grid(stem + "-sweep.png", images, columns=len(SWEEP_STRENGTHS),
                                           row_labels=labels, column_labels=[f"{s:+g}" for s in SWEEP_STRENGTHS]))
    write_record(stem + ".json", record(run, args, command="edit", inputs=names, method=method, kind=args.kind,
                                        edits=args.add, sweeps=args.sweep, directions_from=codes.method,
                                        fit_faces=len(codes.names), strength_unit="mean distance between the "
                                        "groups with and without the attribute, along the direction"))
    print(f"edited {names[0]} ({run.directory}, {method}, {args.kind} directions from {len(codes.names)} "
          f"{codes.method} codes): wrote {', '.join(outputs)} and {stem}.json")
    return stem


def run_describe(run, args):
    faces, names, encoding, method = input_faces(run, args, args.describe)
    classifier = classifier_or_none(args.classifier, run)
    directions, codes = directions_for(run, args, classifier=classifier)
    scores = attribute_scores(directions, encoding.codes)
    top = top_attributes(scores)
    cnn = None
    if classifier is not None:
        cnn = evaluate.predict_attributes(classifier, faces)
    described = []
    for row, name in enumerate(names):
        entry = {"face": name, "top": [[ATTRIBUTES[index], round(float(scores[row, index]), 3)] for index in top[row]]}
        if cnn is not None:
            order = np.argsort(-cnn[row])[:TOP_COUNT]
            entry["cnn_top"] = [[ATTRIBUTES[index], round(float(cnn[row, index]), 3)] for index in order]
        described.append(entry)
        print(f"{name}: " + ", ".join(f"{attribute} {score:+.2f}" for attribute, score in entry["top"])
              + ("; the attribute CNN on the photo: " + ", ".join(f"{attribute} {p:.2f}"
                                                                  for attribute, p in entry["cnn_top"])
                 if cnn is not None else ""))
    stem = os.path.join(output_dir(run, args), f"describe-{file_stem(names)}-{method}-seed{args.seed}")
    data_prep.save_grid(stem + ".png", np.concatenate([data_prep.to_float(faces), encoding.reconstructions]),
                        columns=len(names), row_labels=["photo", "G(z)"])
    write_record(stem + ".json", record(run, args, command="describe", inputs=names, method=method,
                                        directions_from=codes.method, described=described,
                                        score="projection on the normalised mean difference, 0 midway between "
                                        "the groups, in the strength unit"))
    print(f"wrote {stem}.png and {stem}.json")
    return stem


def run_average(run, args):
    if len(args.average) < 2:
        raise data_prep.DataError(f"--average needs at least two photos, got {len(args.average)}")
    faces, names, encoding, method = input_faces(run, args, args.average)
    average = encoding.codes.mean(axis=0, keepdims=True)
    image = dcgan.generate(run.generator, average)
    stem = os.path.join(output_dir(run, args), f"average-{file_stem(names)}-{method}-seed{args.seed}")
    blank = np.ones_like(image)
    data_prep.save_grid(stem + ".png", np.concatenate([data_prep.to_float(faces), image,
                                                       encoding.reconstructions, blank]),
                        columns=len(names) + 1, row_labels=["photo", "G(z)"],
                        column_labels=[*(os.path.splitext(name)[0] for name in names), "average"])
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, codes=encoding.codes, average=average[0], names=np.asarray(names), run=run.directory,
                 method=method, seed=args.seed)
    write_record(stem + ".json", record(run, args, command="average", inputs=names, method=method))
    print(f"the average of {len(names)} faces ({run.directory}, {method}): wrote {stem}.png, .npz, .json")
    return stem


def run_interpolate(run, args):
    if len(args.interpolate) != 2:
        raise data_prep.DataError(f"--interpolate takes exactly two faces, got {len(args.interpolate)}")
    if args.frames < 2:
        raise data_prep.DataError(f"--frames must be at least 2, got {args.frames}")
    faces, names, encoding, method = input_faces(run, args, args.interpolate)
    codes = interpolation_strip(*encoding.codes, steps=args.frames, spherical=not args.linear)
    images = dcgan.generate(run.generator, codes)
    interpolation = "linear" if args.linear else "slerp"
    stem = os.path.join(output_dir(run, args),
                        f"interpolate-{file_stem(names)}-{method}-{interpolation}-seed{args.seed}")
    data_prep.save_grid(stem + ".png", images, columns=len(images))
    save_gif(stem + ".gif", np.concatenate([images, images[::-1]]))
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, codes=codes, names=np.asarray(names), run=run.directory, method=method, seed=args.seed,
                 interpolation=interpolation)
    write_record(stem + ".json", record(run, args, command="interpolate", inputs=names, method=method,
                                        interpolation=interpolation, frames=args.frames))
    print(f"{names[0]} to {names[1]} ({run.directory}, {method}, {interpolation}): wrote {stem}.png, .gif, .npz")
    return stem


def run_map(run, args):
    colour_index = attribute_index(args.color_by)
    method = resolve_method(run, args.method, dataset=True)
    if method == "samples":
        raise data_prep.DataError("--map maps the codes of real faces; pass --method encoder, optimize or hybrid")
    codes = dataset_codes(run, method=method, split=args.split, limit=args.limit, steps=args.steps, seed=args.seed)
    thumbnails = load_faces_split(run.config, split=args.split, limit=args.limit).images
    if len(codes.codes) < 5:
        raise data_prep.DataError(f"--map needs at least 5 faces, the {args.split} split gives {len(codes.codes)}")
    layouts = {"PCA": embed_2d(codes.codes, how="pca", seed=args.seed),
               "t-SNE": embed_2d(codes.codes, how="tsne", seed=args.seed)}
    out = os.path.join(output_dir(run, args), f"map-{args.split}-{method}")
    plot_map(os.path.join(out, "map.png"), layouts, thumbnails, codes.labels[:, colour_index],
             attribute=ATTRIBUTES[colour_index], seed=args.seed)
    write_projector(os.path.join(out, "projector"), codes.codes, codes.names, codes.labels, thumbnails)
    write_record(os.path.join(out, "map.json"), record(run, args, command="map", inputs=[args.split], method=method,
                                                       faces=len(codes.names), color_by=ATTRIBUTES[colour_index]))
    print(f"map of {len(codes.names)} {args.split} codes ({run.directory}, {method}): wrote {out}/map.png, "
          f"map.json and {out}/projector/ (`tensorboard --logdir {out}/projector`)")
    return out


def run_directions(run, args):
    classifier = classifier_or_none(args.classifier, run)
    directions, codes = directions_for(run, args, classifier=classifier)
    out = output_dir(run, args)
    path = os.path.join(out, f"directions-{codes.method}.npz")
    with data_prep.atomic_path(path) as temporary:
        np.savez(temporary, mean=directions.mean, mean_with=directions.mean_with, mean_without=directions.mean_without,
                 normals=directions.normals, partial=directions.partial, accuracy=directions.accuracy,
                 majority=directions.majority,
                 varying=directions.varying, attributes=np.asarray(ATTRIBUTES), run=run.directory,
                 method=codes.method, seed=args.seed, faces=directions.count)
    lines = [f"Directions of {run.directory} from {directions.count} {codes.method} codes (train split); boundary "
             f"accuracy on a held-out {HELD_OUT_FRACTION:.0%} of them.", "",
             "| attribute | faces with it | boundary accuracy | majority | mean-difference length |",
             "|---|---:|---:|---:|---:|"]
    for index in np.flatnonzero(directions.varying):
        lines.append(f"| {ATTRIBUTES[index]} | {int(codes.labels[:, index].sum())} | {directions.accuracy[index]:.3f} "
                     f"| {directions.majority[index]:.3f} | {np.linalg.norm(directions.mean[index]):.3f} |")
    markdown = "\n".join(lines) + "\n"
    data_prep.atomic_write_bytes(os.path.join(out, f"directions-{codes.method}.md"), markdown.encode())
    print(markdown + f"wrote {path} and directions-{codes.method}.md")
    return path


def demo_encoder(run, args):
    """A short E for a GAN run that has none (encoder.py train, CPU-sized), so that the demo's directions come from
    codes of real training faces in seconds rather than from an hour of projection. An unfinished E of the demo's
    own settings (an interrupted demo) is resumed; any other training in <run>/encoder is left alone, in one line."""
    if run_kind(run) == "vae" or has_encoder(run) or args.method not in ("auto", "encoder", "hybrid"):
        return
    out_dir = os.path.join(run.directory, "encoder")
    settings = {"generator_fingerprint": encoder.generator_fingerprint(run.generator), "epochs": args.encoder_epochs,
                "steps_per_epoch": args.encoder_steps, "seed": args.seed}
    flags = ["--run", run.directory, "--epochs", str(args.encoder_epochs), "--steps-per-epoch",
             str(args.encoder_steps), "--seed", str(args.seed)]
    if os.path.exists(out_dir):
        saved = runs.read_config(out_dir) if os.path.isfile(os.path.join(out_dir, "config.json")) else {}
        if any(saved.get(key) != value for key, value in settings.items()):
            raise data_prep.DataError(f"{out_dir} holds another encoder training (another generator or settings); "
                                      f"finish it with `python encoder.py train --run {run.directory} --resume` or "
                                      f"move it away, then run the demo again")
        if os.path.isfile(os.path.join(out_dir, "checkpoints", "last.npz")):
            flags = ["--run", run.directory, "--resume"]
    print(f"demo: {run.directory} has no encoder; training one for {args.encoder_epochs} x {args.encoder_steps} "
          f"steps (python encoder.py train {' '.join(flags)})")
    try:
        encoder.run_train(flags + (["--verbose"] if args.verbose else []))
    except runs.TrainingStopped as stopped:
        raise data_prep.DataError(f"the demo's encoder stopped: {stopped}; try another --seed") from None


def run_demo(run, args):
    """The end of the README's main command: on a freshly trained run, an analogy grid of three held-out faces
    chosen by their labels (a man, a man with glasses, a woman) and an edit sweep of a held-out man, with the
    short E that makes both quick. Returns the two output stems."""
    if args.encoder_epochs < 1 or args.encoder_steps < 1:
        raise data_prep.DataError("--encoder-epochs and --encoder-steps must be positive")
    sweeps = args.sweep or list(DEMO_SWEEPS)
    for name in sweeps:
        parse_direction(name)  # an unknown attribute fails before anything is trained
    started = time.perf_counter()
    demo_encoder(run, args)
    shared = ["--examples", "--run", run.directory, "--method", args.method, "--steps", str(args.steps),
              "--fit-limit", str(args.fit_limit), "--kind", args.kind, "--classifier", args.classifier,
              "--seed", str(args.seed)] + (["--out", args.out] if args.out else [])
    analogy = run_analogy(run, mode_parser().parse_args(["--analogy"] + shared))
    edit = run_edit(run, mode_parser().parse_args(["--edit"] + shared + [f"--sweep={name}" for name in sweeps]))
    print(f"demo done in {time.perf_counter() - started:.0f} s: {analogy}.png (analogy) and {edit}-sweep.png "
          f"(edit sweep)")
    return analogy, edit


def main(argv=None):
    command, args = parse_args(argv)
    run = load_math_run(args.run, runs_dir=args.runs_dir)
    print(f"{command} on {run.directory} ({run_kind(run)}), " + ", ".join(
        f"{key} {value}" for key, value in vars(args).items() if value not in (None, False, [])))
    if command != "math":
        return {"demo": run_demo, "directions": run_directions}[command](run, args)
    mode = next(mode for mode in MODES if getattr(args, mode) not in (None, False))
    return {"analogy": run_analogy, "edit": run_edit, "describe": run_describe, "average": run_average,
            "interpolate": run_interpolate, "map": run_map}[mode](run, args)


if __name__ == "__main__":
    data_prep.run_cli(main)
