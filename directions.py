"""Attribute directions in latent space, fitted on the codes of a run's faces.

The codes of a split of the run's data come from encoder.py (E, projection or both; a VAE run's encoder) or, with
method "samples", from the prior with the attribute CNN's labels of G(z) (InterFaceGAN's recipe, Shen et al.
2020). They are computed once and cached in <run>/facemath/ with their labels. On them, per CelebA attribute:
NVIDIA's mean-difference vector (mean code with the attribute minus mean code without, "Photo editing with
generative adversarial networks", part 2), InterFaceGAN's boundary normal (logistic regression) and its
conditional form that leaves chosen attributes alone, and the partial effect (the attribute's coefficient when
the codes are regressed on every label). One kind lives in the generator rather than its codes: `local`, the mean
difference of the generator's 8x8 feature maps, kept where it is largest. facemath.py does the arithmetic with them.

Strength has one unit for every kind of direction: strength 1 moves a code by the mean distance between faces
with and without the attribute, measured along the direction (so mean-difference strength 1 adds NVIDIA's vector).
"""

import dataclasses
import difflib
import json
import os
import time

import numpy as np

import data_prep
import dcgan
import encoder
import evaluate

ATTRIBUTES = data_prep.CELEBA_ATTRIBUTES
KINDS = ("mean", "boundary", "conditional", "partial")  # NVIDIA's mean difference, InterFaceGAN's normal and its
# conditional, and the partial effect: the attribute's coefficient when the codes are regressed on every label
MAP_KINDS = ("local",)  # directions in the generator's 8x8 feature maps rather than in its codes (fit_local)
EDIT_KINDS = KINDS + MAP_KINDS
LOCAL_QUANTILE = 0.75  # a local direction keeps the quarter of the 8x8 positions where the maps differ most
METHODS = ("auto", "encoder", "optimize", "hybrid", "samples")  # "samples": G(z) labelled by the attribute CNN
MIN_GROUP = 10  # faces needed on each side of an attribute before it has a direction
HELD_OUT_FRACTION = 0.2  # of the fitted codes, kept out of the boundary's fit to measure its accuracy
CONDITION_COUNT = 3  # a conditional direction leaves alone the attributes most correlated with its own


# ----------------------------------------------------------------------------------------------------------
# Which codes


def has_encoder(run):
    """A VAE run always has one; a GAN run when `encoder.py train` made one for this very generator."""
    if run.kind == "vae":
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
        if run.kind == "vae" and method in ("optimize", "hybrid"):
            raise data_prep.DataError(f"{run.directory} is a VAE run; its codes come from --method encoder")
        if method == "samples" and not dataset:  # samples fit the directions; photos are encoded as by auto
            return resolve_method(run, "auto")
        return method
    if has_encoder(run):
        return "encoder" if dataset or run.kind == "vae" else "hybrid"
    if dataset:
        return "samples" if classifier_ready else "optimize"
    return "optimize"


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
    if method in ("encoder", "hybrid") and run.kind == "gan":  # a retrained E gives other codes
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
        images, names, labels = data_prep.run_split(run.config, split=split, limit=limit)
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
    local: np.ndarray = None  # (40, 8, 8, channels) fit_local: mean differences of the generator's 8x8 feature maps

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


def fit_local(generator, codes, labels, varying, *, quantile=LOCAL_QUANTILE, batch_size=256):
    """(40, 8, 8, channels): per varying attribute, the mean difference of the generator's 8x8 feature maps
    (dcgan.generator_maps) between the faces with and without it, kept only at the positions where it is largest
    (the top `1 - quantile` of positions by the squared norm over channels; zero elsewhere), so that an edit
    touches the part of the face the attribute lives in (glasses, the eyes; a hat, the top of the head). Added
    to the maps of a face and drawn by the rest of the generator, it leaves the codes alone. Sums are gathered
    batch by batch, so the faces' maps are never held at once."""
    labels = np.asarray(labels) > 0.5
    total, with_sum = None, None
    for start in range(0, len(codes), batch_size):
        maps = dcgan.generator_maps(generator, codes[start:start + batch_size]).astype(np.float64)
        flat = maps.reshape(len(maps), -1)
        part = labels[start:start + batch_size].T.astype(np.float64) @ flat  # (40, positions x channels)
        total = flat.sum(axis=0) if total is None else total + flat.sum(axis=0)
        with_sum = part if with_sum is None else with_sum + part
    positives = labels.sum(axis=0).astype(np.float64)
    local = np.zeros((len(ATTRIBUTES), *maps.shape[1:]), np.float32)
    for index in np.flatnonzero(varying):
        difference = (with_sum[index] / positives[index]
                      - (total - with_sum[index]) / (len(codes) - positives[index])).reshape(maps.shape[1:])
        energy = np.sum(difference ** 2, axis=-1)
        local[index] = difference * (energy >= np.quantile(energy, quantile))[..., None]
    return local


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
        raise data_prep.DataError(f"unknown kind of direction in the codes {kind!r}; expected one of "
                                  f"{', '.join(KINDS)}")
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
    be small or even negative when a correlated attribute pulls the other way (Goatee on men). A local edit is
    a step in the generator's 8x8 feature maps (fit_local), which dcgan.generate adds as `maps_offsets`; its
    length along itself is its own norm, so strength 1 again moves by the groups' mean distance along it."""
    if kind in MAP_KINDS:
        if conditions:
            raise data_prep.DataError(f"{kind} directions take no conditions (drop the |ATTR part)")
        check_varying(directions, [target])
        if directions.local is None:
            raise data_prep.DataError("these directions have no local kind: it needs the generator's 8x8 feature maps")
        return np.asarray(directions.local[target], np.float32)
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
# Fitted for a run, and written


def fit_for_run(run, *, method="auto", limit=4000, steps=200, seed=0, classifier=None):
    """(Directions, Codes) fitted on the training split's codes (or samples), cached codes reused."""
    method = resolve_method(run, method, dataset=True, classifier_ready=classifier is not None)
    codes = dataset_codes(run, method=method, split="train", limit=limit, steps=steps, seed=seed,
                          classifier=classifier)
    fitted = fit_directions(codes.codes, codes.labels, seed=seed)
    if dcgan.has_maps(run.generator):
        fitted.local = fit_local(run.generator, codes.codes, codes.labels, fitted.varying)
    return fitted, codes


def save_directions(out_dir, directions, codes, *, run, seed):
    """directions-<method>.npz (every kind's vectors and the boundaries' accuracy) and a Markdown table of the
    boundaries beside it; returns the .npz path."""
    stem = os.path.join(out_dir, f"directions-{codes.method}")
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, mean=directions.mean, mean_with=directions.mean_with, mean_without=directions.mean_without,
                 normals=directions.normals, partial=directions.partial, accuracy=directions.accuracy,
                 majority=directions.majority, varying=directions.varying, attributes=np.asarray(ATTRIBUTES),
                 run=run.directory, method=codes.method, seed=seed, faces=directions.count,
                 **({} if directions.local is None else {"local": directions.local}))
    lines = [f"Directions of {run.directory} from {directions.count} {codes.method} codes (train split); boundary "
             f"accuracy on a held-out {HELD_OUT_FRACTION:.0%} of them.", "",
             "| attribute | faces with it | boundary accuracy | majority | mean-difference length |",
             "|---|---:|---:|---:|---:|"]
    for index in np.flatnonzero(directions.varying):
        lines.append(f"| {ATTRIBUTES[index]} | {int(codes.labels[:, index].sum())} | {directions.accuracy[index]:.3f} "
                     f"| {directions.majority[index]:.3f} | {np.linalg.norm(directions.mean[index]):.3f} |")
    markdown = "\n".join(lines) + "\n"
    data_prep.atomic_write_bytes(stem + ".md", markdown.encode())
    print(markdown + f"wrote {stem}.npz and {stem}.md")
    return stem + ".npz"
