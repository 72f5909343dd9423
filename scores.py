"""The downstream measurements, each read through the attribute CNN of evaluate.py: how well each way of
finding a face's code reconstructs held-out faces (the GAN's E, optimisation, the hybrid, a VAE), whether edits,
analogies and descriptions of codes do what they say on held-out faces, and how far a makeover moves held-out faces
towards the target without changing the rest. No other script imports this one.

Usage:
    python scores.py encoders --run runs/demo --vae runs/vae                  # every encoder on 256 test faces
    python scores.py encoders --run runs/demo --vae runs/vae --count 32 --steps 50   # CPU-sized
    python scores.py edits --run runs/reference --vae runs/vae        # GAN codes against VAE codes
    python scores.py analogies --run runs/reference
    python scores.py analogies --run runs/reference --exemplars 3   # A and B each the mean of three faces
    python scores.py descriptions --run runs/reference
    python scores.py edits --run runs/demo --count 50 --fit-limit 1000 --kinds mean   # CPU-sized
    python scores.py makeover --run runs/makeover-m2f --compare runs/makeover-adv runs/makeover-l1
"""

import argparse
import itertools
import os
import time

import numpy as np
from skimage.metrics import structural_similarity

import data_prep
import dcgan
import directions
import encoder
import evaluate
import facemath
import makeover
import runs
import synthetic_celeba

COMMANDS = ("encoders", "edits", "analogies", "descriptions", "makeover")
FACE_MATH = ("edits", "analogies", "descriptions")
FLIP_TARGET, COLLATERAL_TARGET, TARGET_STRENGTH = 0.9, 0.05, 2.0  # the bar for an edit that works


# ----------------------------------------------------------------------------------------------------------
# Encoders: reconstructions of held-out faces, scored


def varying_attributes(labels):
    """(40,) bool: the attributes that take both values in the labels (the rest say nothing about a code)."""
    labels = np.asarray(labels) > 0.5
    return labels.any(axis=0) & ~labels.all(axis=0)


def attribute_agreement(classifier, originals, reconstructions, *, varying):
    """Per image, the fraction of the varying attributes on which the attribute CNN says the same (p > 0.5) of
    the original and its reconstruction. (n,)"""
    flips = evaluate.prediction_flips(evaluate.predict_attributes(classifier, originals),
                                      evaluate.predict_attributes(classifier, reconstructions))
    return (~flips)[:, varying].mean(axis=1)


def reconstruction_scores(originals, reconstructions, *, classifier, varying):
    """Means over images of pixel MSE and PSNR (images in [0, 1]), SSIM, the Euclidean distance in the attribute
    CNN's feature space and attribute agreement."""
    mse = encoder.pixel_mse(reconstructions, originals)
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    ssim = [structural_similarity(a, b, channel_axis=-1, data_range=255)
            for a, b in zip(data_prep.to_uint8(originals), data_prep.to_uint8(reconstructions))]
    distance = np.linalg.norm(evaluate.extract_features(classifier, originals)
                              - evaluate.extract_features(classifier, reconstructions), axis=1)
    agreement = attribute_agreement(classifier, originals, reconstructions, varying=varying)
    return {"mse": float(mse.mean()), "psnr": float(psnr.mean()), "ssim": float(np.mean(ssim)),
            "feature_distance": float(distance.mean()), "attribute_agreement": float(agreement.mean())}


def model_label(run):
    """How a VAE run is named in the tables: "vae-gan" for the VAE-GAN (vae.py --gan), else "vae"."""
    return "vae-gan" if run.config.get("gan") else "vae"


def compare(run, images, *, classifier, varying, vaes=(), steps=200, lr=0.05, lambda_=1e-3, domain_weight=0.0,
            feature_weight=0.0, seed=0, progress=True):
    """Every method (and each labelled VAE run's encoder, [(label, run)]) on the same faces: a row of scores each,
    plus seconds per image; returns (rows, {label: reconstructions})."""
    targets = encoder.as_images(images, run.config["image_size"])
    jobs = [(method, run, method) for method in encoder.METHODS]
    jobs += [(label, vae, "encoder") for label, vae in vaes]
    rows, reconstructions = [], {}
    for label, source, method in jobs:
        encoding = encoder.encode(source, targets, method=method, steps=steps, lr=lr, lambda_=lambda_,
                                  domain_weight=domain_weight if method == "hybrid" else 0.0,
                                  feature_weight=feature_weight, seed=seed, progress=progress)
        scores = reconstruction_scores(targets, encoding.reconstructions, classifier=classifier, varying=varying)
        rows.append({"method": label, **scores, "seconds_per_image": encoding.seconds / len(targets)})
        reconstructions[label] = encoding.reconstructions
        print(f"{label}: " + ", ".join(f"{key} {value:.4g}" for key, value in rows[-1].items() if key != "method"))
    return rows, reconstructions


def compare_markdown(rows, settings):
    header = ("| method | pixel MSE | PSNR (dB) | SSIM | feature distance | attribute agreement | s per image |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {row['method']} | {row['mse']:.4f} | {row['psnr']:.2f} | {row['ssim']:.3f} | "
             f"{row['feature_distance']:.2f} | {row['attribute_agreement']:.3f} | {row['seconds_per_image']:.4g} |"
             for row in rows]
    described = ", ".join(f"{key} {value}" for key, value in settings.items())
    return header + "\n".join(lines) + f"\n\n{described}\n"


def labelled_vaes(paths, run):
    """[(label, VAE run)] for --vae: each a VAE run (vae.py, plain or --gan) trained on the GAN run's data at its
    size, or one line. Labels are model_label's, with the run's name added where two would be the same."""
    vaes = []
    for path in paths:
        vae = dcgan.load_run(path)
        if (vae.config.get("kind") != "vae" or vae.config["image_size"] != run.config["image_size"]
                or os.path.realpath(vae.config["data"]) != os.path.realpath(run.config["data"])):
            raise data_prep.DataError(f"--vae {path} is not a VAE trained on {run.config['data']} at "
                                      f"{run.config['image_size']} pixels")
        vaes.append(vae)
    labels = [model_label(vae) for vae in vaes]
    return [(label if labels.count(label) == 1 else f"{label}-{os.path.basename(os.path.normpath(vae.directory))}",
             vae) for label, vae in zip(labels, vaes)]


def run_encoders(argv):
    args = subcommand_parser("encoders").parse_args(argv)
    run = dcgan.load_run(args.run, kind="gan")
    classifier_config = evaluate.classifier_config(args.classifier)
    evaluate.check_run(args.run, classifier_config)
    vaes = labelled_vaes(args.vae, run)
    test = data_prep.run_split(run.config, split="test")
    if not 0 < args.count <= len(test.images):
        raise data_prep.DataError(f"--count must be 1 to {len(test.images)} (the test split), got {args.count}")
    chosen = data_prep.seeded_subset(len(test.images), args.count, seed=args.seed)
    images = data_prep.to_float(test.images[chosen])
    started = time.perf_counter()
    rows, reconstructions = compare(run, images, classifier=evaluate.load_classifier(args.classifier),
                                    varying=varying_attributes(test.labels), vaes=vaes, steps=args.steps, lr=args.lr,
                                    lambda_=args.lambda_, domain_weight=args.domain_weight,
                                    feature_weight=args.feature_weight, seed=args.seed)
    settings = {"run": run.directory, "vae": [vae.directory for _, vae in vaes] or None, "count": args.count,
                "steps": args.steps, "lr": args.lr, "lambda": args.lambda_, "domain_weight": args.domain_weight,
                "feature_weight": args.feature_weight,
                "seed": args.seed, "varying_attributes": int(varying_attributes(test.labels).sum()),
                "seconds": round(time.perf_counter() - started, 1)}
    out = args.out or os.path.join(run.directory, "encoder", "compare")
    data_prep.write_report(os.path.join(out, "compare"), compare_markdown(rows, settings),
                           {"settings": settings, "rows": rows})
    grid = [images[:encoder.GRID_FACES]] + [reconstructions[label][:encoder.GRID_FACES] for label in reconstructions]
    data_prep.save_grid(os.path.join(out, "compare.png"), np.concatenate(grid),
                        columns=min(encoder.GRID_FACES, len(images)),
                        row_labels=["original", *reconstructions])
    print(compare_markdown(rows, settings) + f"wrote {out}/compare.{{md,json,png}}")

# ----------------------------------------------------------------------------------------------------------
# Makeover: how often the CNN sees the target, what else changed, identity kept, distance to the target faces


def distinguishing_terms(source, target):
    """The target filter's terms that the source filter does not already impose: what the makeover must change
    (for deep-makeover's defaults: -Male and Attractive)."""
    source_terms = set(makeover.filter_terms(source))
    terms = [term for term in makeover.filter_terms(target) if term not in source_terms]
    return terms or makeover.filter_terms(target)


def target_rate(probabilities, terms):
    """Fraction of images whose predicted attributes (probability > 0.5) satisfy every (attribute, wanted)."""
    predicted = np.asarray(probabilities) > 0.5
    columns = [data_prep.CELEBA_ATTRIBUTES.index(name) for name, _ in terms]
    wanted = np.array([value for _, value in terms], bool)
    return float(np.all(predicted[:, columns] == wanted[None, :], axis=1).mean()) if terms else float("nan")


def flip_rates(probabilities_in, probabilities_out, columns):
    """Per column, the fraction of images whose 0/1 prediction (probability > 0.5) differs between input and output."""
    return evaluate.prediction_flips(probabilities_in, probabilities_out)[:, columns].mean(0)


def translation_scores(classifier, inputs, outputs, *, terms, collateral, target_features):
    """One row: target rate (and per term), collateral (mean flip rate of the CNN's 0/1 predictions over the
    collateral attributes), pixel L1, mean CNN-feature distance to the input, Frechet distance to target faces."""
    inputs = data_prep.to_float(inputs) if inputs.dtype == np.uint8 else inputs
    probabilities_in = evaluate.predict_attributes(classifier, inputs)
    probabilities_out = evaluate.predict_attributes(classifier, outputs)
    features_in = evaluate.extract_features(classifier, inputs)
    features_out = evaluate.extract_features(classifier, outputs)
    columns = [data_prep.CELEBA_ATTRIBUTES.index(name) for name in collateral]
    flips = flip_rates(probabilities_in, probabilities_out, columns)  # (len(collateral),)
    return {"target_rate": target_rate(probabilities_out, terms),
            "term_rates": {("" if wanted else "-") + name: target_rate(probabilities_out, [(name, wanted)])
                           for name, wanted in terms},
            "collateral": float(flips.mean()) if columns else 0.0,
            "collateral_by_attribute": {name: float(value) for name, value in zip(collateral, flips)},
            "pixel_l1": float(np.abs(outputs - inputs).mean()),
            "feature_distance": float(np.linalg.norm(features_out - features_in, axis=1).mean()),
            "frechet_distance": evaluate.frechet_distance(target_features, features_out)}


def check_comparable(configs):
    """Runs in one table must translate the same populations of the same data with the same crop."""
    keys = ("data", "source", "target", "crop", "crop_size", "image_size")
    first = configs[0]
    for config in configs[1:]:
        for key in keys:
            if config.get(key) != first.get(key):
                raise data_prep.DataError(f"runs differ in {key} ({first.get(key)!r} and {config.get(key)!r}); "
                                          "only runs of the same populations and crop share a table")


def default_classifier(config):
    return "runs/classifier-makeover" if config["crop"] == "makeover" else "runs/classifier"


def as_run_input(config, images):
    """Full 218x178 renderings in a run's crop and size, float32 in [-1, 1], as its models see its data."""
    return data_prep.to_float(np.stack([data_prep.crop_and_resize(
        image, crop=config.get("crop", "dcgan"), image_size=config["image_size"],
        crop_size=config.get("crop_size", 108)) for image in images]))


def renderer_seed(config, names):
    """The seed the run's data was rendered with when its files `names` are the synthetic CelebA's own faces (so
    the renderer can draw them again), else None."""
    seed = synthetic_celeba.rendered_seed(config["data"])
    image_dir = data_prep.read_celeba(config["data"]).image_dir
    return seed if synthetic_celeba.is_rendered(image_dir, list(names), seed=seed) else None


def drawn_translations(config, names, *, terms):
    """Two more baselines where the run's data is the synthetic CelebA and the populations differ in Male alone:
    each source face drawn again by the renderer as the other sex the way this data draws that sex (beards off,
    make-up, lipstick and earrings at the data's rates) and with the fewest changes (Male flipped, what only the
    old sex wears taken off; synthetic_celeba.draw_other_sex). [] otherwise."""
    seed = renderer_seed(config, names) if [name for name, _ in terms] == ["Male"] else None
    if seed is None:
        return []

    def drawn(minimal):
        return as_run_input(config, [synthetic_celeba.draw_other_sex(synthetic_celeba.face_index(name), seed=seed,
                                                                     minimal=minimal)[1] for name in names])

    return [("drawn as the other sex, as the data draws it", "baseline", drawn(False)),
            ("drawn as the other sex, fewest changes", "baseline", drawn(True))]


def score_rows(run_dirs, *, classifier_dir, count=None, seed=0, epoch=None, cross_checks=()):
    """The score table's rows: the identity and the mean target face (the trivial baselines), then each run, all
    on the same held-out (test split) source faces; plus the settings and the images of the grid."""
    configs = [runs.read_config(run_dir, model="makeover") for run_dir in run_dirs]
    check_comparable(configs)
    for run_dir, run_config in zip(run_dirs, configs):
        evaluate.check_run(run_dir, evaluate.classifier_config(classifier_dir))
        keepers = makeover.keep_classifiers(run_config) if run_config.get("keep_weight", 0.0) > 0 else []
        scorer = evaluate.classifier_directory(classifier_dir)
        own = [keeper for keeper in keepers if os.path.exists(keeper)
               and evaluate.same_directory(evaluate.classifier_directory(keeper), scorer)]
        if own:
            raise data_prep.DataError(f"{run_dir} was trained to keep {own[0]}'s view of the attributes; scoring it "
                                      "with the same CNN would grade it on its own loss: pass another --classifier")
    config = configs[0]
    classifier = evaluate.load_classifier(classifier_dir)
    celeba = data_prep.read_celeba(config["data"])
    sources = makeover.population(config, split="test", which="source", celeba=celeba)
    targets = makeover.population(config, split="test", which="target", celeba=celeba)
    count = min(len(sources), evaluate.DEFAULT_COUNT) if count is None else count
    if not 2 <= count <= len(sources):
        raise data_prep.DataError(f"--n must be from 2 to the {len(sources)} held-out source faces, got {count}")
    inputs = data_prep.to_float(sources[data_prep.seeded_subset(len(sources), count, seed=seed)])
    mean_target = data_prep.to_float(makeover.population(config, split="train", which="target", celeba=celeba)).mean(0)
    measure = {"classifier": classifier, "terms": distinguishing_terms(config["source"], config["target"]),
               "collateral": makeover.collateral_attributes(celeba.attributes, config["source"], config["target"]),
               "target_features": evaluate.extract_features(classifier, targets)}
    candidates = [("identity (the input)", "baseline", inputs),
                  ("mean target face", "baseline", np.broadcast_to(mean_target, inputs.shape).copy())]
    names = data_prep.prepare_images(config["data"], split="test", filter=config["source"], crop=config["crop"],
                                     image_size=config["image_size"], crop_size=config["crop_size"],
                                     cache_dir=config["cache_dir"], celeba=celeba).names
    chosen = [names[index] for index in data_prep.seeded_subset(len(sources), count, seed=seed)]
    candidates += drawn_translations(config, chosen, terms=measure["terms"])
    candidates += [(os.path.basename(os.path.normpath(run_dir)), "trained",
                    makeover.translate(makeover.load_translator(run_dir, epoch=epoch), inputs)) for run_dir in run_dirs]
    rows = [{"name": name, "kind": kind, **translation_scores(outputs=outputs, inputs=inputs, **measure)}
            for name, kind, outputs in candidates]
    cross_checks = list(dict.fromkeys(os.path.realpath(evaluate.classifier_directory(path)) for path in cross_checks))
    columns = [data_prep.CELEBA_ATTRIBUTES.index(name) for name in measure["collateral"]]
    for other_dir in cross_checks:  # the same outputs through other CNNs: do they see the same change?
        evaluate.check_run(run_dirs[0], evaluate.classifier_config(other_dir))
        other = evaluate.load_classifier(other_dir)
        probabilities_in = evaluate.predict_attributes(other, inputs)
        for row, (_, _, outputs) in zip(rows, candidates):
            probabilities_out = evaluate.predict_attributes(other, outputs)
            row.setdefault("cross_checks", {})[other_dir] = {
                "target_rate": target_rate(probabilities_out, measure["terms"]),
                "collateral": float(flip_rates(probabilities_in, probabilities_out, columns).mean())
                if columns else 0.0}
    settings = {"runs": [str(run_dir) for run_dir in run_dirs], "classifier": str(classifier_dir), "count": count,
                "cross_checks": cross_checks,
                "seed": seed, "epoch": epoch, "target_faces": int(len(targets)), "source": config["source"],
                "target": config["target"], "terms": [("" if w else "-") + n for n, w in measure["terms"]],
                "collateral_attributes": measure["collateral"], "data": config["data"], "crop": config["crop"],
                "image_size": config["image_size"]}
    return rows, settings, [outputs[:8] for _, _, outputs in candidates]


def target_checks(rows):
    """The targets for the first trained row: target rate >= 0.9, collateral <= 0.1, feature distance
    below the mean target face's."""
    trained = [row for row in rows if row["kind"] == "trained"]
    if not trained:
        return {}
    row, mean_face = trained[0], next(row for row in rows if row["name"] == "mean target face")
    return {"run": row["name"], "target_rate_at_least_0.9": row["target_rate"] >= 0.9,
            "collateral_at_most_0.1": row["collateral"] <= 0.1,
            "feature_distance_below_mean_target_face": row["feature_distance"] < mean_face["feature_distance"]}


def scores_markdown(rows, settings):
    lines = [f"{settings['count']} held-out (test split) source faces ({settings['source']}) translated towards "
             f"{settings['target']}; Frechet distance against {settings['target_faces']} held-out target faces; "
             f"classifier {settings['classifier']}. Target rate: the CNN sees {', '.join(settings['terms'])}. "
             f"Collateral: mean flip rate of the CNN's predictions over the "
             f"{len(settings['collateral_attributes'])} varying attributes the filters do not name.", "",
             "| row | target rate | collateral | pixel L1 | feature distance to input | Frechet distance to target |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['target_rate']:.3f} | {row['collateral']:.3f} | {row['pixel_l1']:.3f} "
                     f"| {row['feature_distance']:.2f} | {row['frechet_distance']:.1f} |")
    checks = target_checks(rows)
    if checks:
        lines += ["", f"Targets for {checks.pop('run')}: " + ", ".join(
            f"{name.replace('_', ' ')}: {'met' if met else 'missed'}" for name, met in checks.items())]
    if settings.get("cross_checks"):
        names = [os.path.basename(os.path.normpath(other)) for other in settings["cross_checks"]]
        lines += ["", "The same outputs through other attribute CNNs (target rate / collateral):", "",
                  "| row | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for row in rows:
            lines.append(f"| {row['name']} | " + " | ".join(
                f"{check['target_rate']:.3f} / {check['collateral']:.3f}" for check in row["cross_checks"].values())
                + " |")
    return "\n".join(lines) + "\n"


def score_run(run_dir, *, compare=(), classifier_dir=None, count=None, seed=0, epoch=None, out_dir=None,
              cross_checks=()):
    """`python scores.py makeover`: scores.md, scores.json and grid.png (columns: 8 held-out faces; rows: the
    input, each baseline's and each run's output) in out_dir (default <run>/scores). Returns (rows, out_dir)."""
    config = runs.read_config(run_dir, model="makeover")
    classifier_dir = classifier_dir or default_classifier(config)
    rows, settings, examples = score_rows([run_dir, *compare], classifier_dir=classifier_dir, count=count,
                                          seed=seed, epoch=epoch, cross_checks=cross_checks)
    out_dir = out_dir or os.path.join(run_dir, "scores")
    markdown = scores_markdown(rows, settings)
    data_prep.write_report(os.path.join(out_dir, "scores"), markdown,
                           {"settings": settings, "rows": rows, "targets": target_checks(rows)})
    labels = ["input"] + [row["name"] for row in rows]
    data_prep.save_grid(os.path.join(out_dir, "grid.png"), np.concatenate([examples[0], *examples]), columns=8,
                        row_labels=labels, scale=2)
    print(markdown)
    return rows, out_dir

# ----------------------------------------------------------------------------------------------------------
# Face math: edits, analogies and descriptions on held-out faces, read by the attribute CNN


def cnn_outputs(classifier, images):
    """The attribute CNN's (probabilities (n, 40), features (n, 256)) of images."""
    return evaluate.predict_attributes(classifier, images), evaluate.extract_features(classifier, images)


def edit_measures(probabilities, features, start_probabilities, start_features, *, target, others, add):
    """One row's figures: flip rate (the CNN now says the attribute is there when adding, absent when removing),
    mean change of its probability, collateral (mean absolute change of the other varying attributes'
    probabilities) and identity distance (CNN features, edited against the unedited reconstruction)."""
    has = probabilities[:, target] > 0.5
    return {"flip_rate": float(np.mean(has if add else ~has)),
            "probability_change": float(np.mean(probabilities[:, target] - start_probabilities[:, target])),
            "collateral": float(np.mean(np.abs(probabilities - start_probabilities)[:, others])),
            "identity_distance": float(np.mean(np.linalg.norm(features - start_features, axis=1)))}


def edit_groups(labels, fitted, *, count, seed=0, attributes=None):
    """{target: {"add": faces without it, "remove": faces with it}}, up to `count` held-out faces each, for every
    target of `attributes` (default: every varying one); the same faces for every kind and every model."""
    rng = np.random.default_rng(seed)
    return {int(target): {sense: rng.permutation(np.flatnonzero((labels[:, target] > 0.5) == present))[:count]
                          for sense, present in (("add", False), ("remove", True))}
            for target in (np.flatnonzero(fitted.varying) if attributes is None else attributes)}


def edit_rows(run, fitted, held, *, classifier, kinds, strengths, count, seed=0, label="gan", attributes=None):
    """`scores.py edits` for one run: per attribute (`attributes`, default every varying one), kind, sense (add to
    held-out faces without it, remove from faces with it; the same faces for every kind) and strength, the
    figures of edit_measures; strength 0 is the unedited reconstruction (the rate at which it already has it)."""
    start_probabilities, start_features = cnn_outputs(classifier, dcgan.generate(run.generator, held.codes))
    rows = []
    for target, groups in edit_groups(held.labels, fitted, count=count, seed=seed, attributes=attributes).items():
        others = fitted.varying.copy()
        others[target] = False
        jobs = [(sense, strength, faces) for sense, faces in groups.items() if len(faces) >= 2
                for strength in (0.0, *strengths)]
        if not jobs:
            continue
        for kind in kinds:
            vector = directions.edit_vector(fitted, int(target), kind=kind)
            signed = np.concatenate([np.full(len(faces), strength if sense == "add" else -strength, np.float32)
                                     for sense, strength, faces in jobs])
            codes = np.concatenate([held.codes[faces] for _, _, faces in jobs])
            steps = signed.reshape(-1, *[1] * vector.ndim) * vector  # a step for each code, or for its 8x8 maps
            probabilities, features = cnn_outputs(classifier, facemath.edited_images(run, codes, steps, kind=kind))
            offset = 0
            for sense, strength, faces in jobs:
                part = slice(offset, offset + len(faces))
                offset += len(faces)
                rows.append({"run": label, "kind": kind, "attribute": facemath.ATTRIBUTES[target], "sense": sense,
                             "strength": strength, "faces": int(len(faces)),
                             **edit_measures(probabilities[part], features[part], start_probabilities[faces],
                                             start_features[faces], target=int(target), others=others,
                                             add=sense == "add")})
    return rows


def drawn_edit_rows(config, fitted, held, *, classifier, count, seed=0, attributes=None):
    """The ceiling of any edit on the synthetic CelebA: the same held-out faces as edit_rows adds to, each drawn
    again by the renderer with the attribute added and only what that implies changed
    (synthetic_celeba.with_attribute), read by the same CNN against the face as drawn. [] with a line saying why
    when the run's data is not the renderer's."""
    if held.method == "samples":
        print("no drawn edits: the held-out faces are generated samples, which the renderer cannot draw again")
        return []
    seed_rendered = renderer_seed(config, held.names)
    if seed_rendered is None:
        print(f"no drawn edits: {config['data']} is not the synthetic CelebA, so its faces cannot be drawn again")
        return []

    rows = []
    for target, groups in edit_groups(held.labels, fitted, count=count, seed=seed, attributes=attributes).items():
        faces = groups["add"]
        if len(faces) < 2:
            continue
        name = facemath.ATTRIBUTES[target]
        pairs = [synthetic_celeba.draw_edit(synthetic_celeba.face_index(held.names[face]), name, seed=seed_rendered)
                 for face in faces]
        before = cnn_outputs(classifier, as_run_input(config, [first for first, _ in pairs]))
        after = cnn_outputs(classifier, as_run_input(config, [second for _, second in pairs]))
        others = fitted.varying.copy()
        others[target] = False
        rows.append({"run": "drawn", "kind": "drawn", "attribute": name, "sense": "add", "faces": int(len(faces)),
                     **edit_measures(*after, *before, target=target, others=others, add=True)})
    return rows


def edits_summary(rows, *, strength=TARGET_STRENGTH):
    """Per run and attribute, at `strength` when adding: each kind's flip rate and collateral, the best kind (the
    highest flip rate among those within the collateral bar, else the highest flip rate) and whether it meets
    the bar."""
    table = {}
    for row in rows:
        if row["sense"] == "add" and row["strength"] == strength:
            table.setdefault((row["run"], row["attribute"]), {})[row["kind"]] = row
    summary = []
    for (run, attribute), by_kind in table.items():
        within = [row for row in by_kind.values() if row["collateral"] <= COLLATERAL_TARGET]
        best = max(within or by_kind.values(), key=lambda row: row["flip_rate"])
        summary.append({"run": run, "attribute": attribute, "best_kind": best["kind"],
                        "flip_rate": best["flip_rate"], "collateral": best["collateral"],
                        "meets": meets_bar(best),
                        "by_kind": {kind: [row["flip_rate"], row["collateral"]] for kind, row in by_kind.items()}})
    return summary


def meets_bar(row):
    return row["flip_rate"] >= FLIP_TARGET and row["collateral"] <= COLLATERAL_TARGET


def edits_markdown(rows, summary, settings, drawn=()):
    """The summary table (with the renderer's own edit of the same faces as its last column when there is one),
    how many attributes meet the bar per model, and the means per kind, sense and strength."""
    kinds = sorted({row["kind"] for row in rows}, key=directions.EDIT_KINDS.index)
    drawn = {row["attribute"]: row for row in drawn}
    lines = [f"Adding each attribute at strength {TARGET_STRENGTH:g} to held-out faces without it: flip rate / "
             f"collateral per kind; the bar is flip >= {FLIP_TARGET} with collateral <= {COLLATERAL_TARGET}."
             + (" drawn: the same faces drawn again by the renderer with the attribute added (the ceiling of any "
                "edit on this data)." if drawn else ""), "",
             "| run | attribute | " + " | ".join(kinds) + " | best | meets |" + (" drawn |" if drawn else ""),
             "|---|---|" + "---:|" * len(kinds) + "---|---|" + ("---:|" if drawn else "")]
    for entry in summary:
        cells = [f"{entry['by_kind'][kind][0]:.2f} / {entry['by_kind'][kind][1]:.3f}" if kind in entry["by_kind"]
                 else "" for kind in kinds]
        ceiling = drawn.get(entry["attribute"])
        lines.append(f"| {entry['run']} | {entry['attribute']} | " + " | ".join(cells)
                     + f" | {entry['best_kind']} | {'yes' if entry['meets'] else 'no'} |"
                     + ((f" {ceiling['flip_rate']:.2f} / {ceiling['collateral']:.3f} |" if ceiling else " |")
                        if drawn else ""))
    for run in sorted({entry["run"] for entry in summary}):
        met = [entry["attribute"] for entry in summary if entry["run"] == run and entry["meets"]]
        wins = {kind: sum(entry["best_kind"] == kind for entry in summary if entry["run"] == run) for kind in kinds}
        lines += ["", f"{run}: the bar holds for {len(met)} of {sum(e['run'] == run for e in summary)} attributes"
                  + (f" ({', '.join(met)})" if met else "") + "; best kind per attribute: "
                  + ", ".join(f"{kind} {wins[kind]}" for kind in kinds)]
    if drawn:
        met = [name for name, row in drawn.items() if meets_bar(row)]
        lines += ["", f"drawn (the renderer's edit): the bar holds for {len(met)} of {len(drawn)} attributes"
                  + (f"; not for {', '.join(name for name in drawn if name not in met)}" if len(met) < len(drawn)
                     else "")]
    lines += ["", "| run | kind | sense | strength | flip rate | probability change | collateral | identity distance |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    ordered = sorted(rows, key=lambda row: (row["run"], directions.EDIT_KINDS.index(row["kind"]), row["sense"],
                                            row["strength"]))
    for key, group in itertools.groupby(ordered,
                                        key=lambda row: (row["run"], row["kind"], row["sense"], row["strength"])):
        group = list(group)
        means = [np.mean([row[field] for row in group]) for field in
                 ("flip_rate", "probability_change", "collateral", "identity_distance")]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {means[0]:.3f} | {means[1]:+.3f} | "
                     f"{means[2]:.3f} | {means[3]:.2f} |")
    described = ", ".join(f"{key} {value}" for key, value in settings.items())
    return "\n".join(lines) + f"\n\n(means over attributes in the last table) {described}\n"


def plot_edit_scores(rows, path):
    """Flip rate and collateral against strength, one line per run and kind (means over attributes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (run, kind), group in itertools.groupby(sorted(rows, key=lambda row: (row["run"], row["kind"])),
                                                key=lambda row: (row["run"], row["kind"])):
        group = [row for row in group if row["sense"] == "add"]
        strengths = sorted({row["strength"] for row in group})
        for axis, field in zip(axes, ("flip_rate", "collateral")):
            axis.plot(strengths, [np.mean([row[field] for row in group if row["strength"] == s]) for s in strengths],
                      marker="o", label=f"{run} {kind}")
    for axis, title in zip(axes, ("flip rate (adding)", "collateral (adding)")):
        axis.set_xlabel("strength")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend()
    return data_prep.save_figure(figure, path)


def edit_examples(run, fitted, held, *, kind, attributes=facemath.EXAMPLE_ATTRIBUTES,
                  strengths=facemath.SWEEP_STRENGTHS, seed=0):
    """A grid: for each of `attributes` that varies (the first eight varying ones when none does), one held-out
    face without it, swept through `strengths`."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    chosen = [directions.attribute_index(name) for name in attributes if fitted.varying[directions.attribute_index(name)]]
    for target in chosen or np.flatnonzero(fitted.varying)[:8]:
        without = np.flatnonzero(held.labels[:, target] < 0.5)
        if len(without) == 0:
            continue
        code = held.codes[int(rng.choice(without))]
        rows.append(facemath.edit_images(run, code, [[(int(target), None, strength)] for strength in strengths],
                                         fitted, kind=kind))
        labels.append(facemath.ATTRIBUTES[target][:14])
    return np.concatenate(rows), labels


def analogy_triples(labels, pair, *, count, seed=0, exemplars=1):
    """Up to `count` rows of face indices for the attribute pair (X, Y): A has X and not Y, B has both, C has
    neither; the expected D has Y and not X. Each row is `exemplars` faces of A, as many of B (distinct where the
    group allows; their mean codes stand for A and B, as Radford et al. averaged three exemplars per concept),
    then one face C: (count, 2 * exemplars + 1)."""
    x, y = directions.attribute_index(pair[0]), directions.attribute_index(pair[1])
    has = np.asarray(labels) > 0.5
    groups = [np.flatnonzero(has[:, x] & ~has[:, y]), np.flatnonzero(has[:, x] & has[:, y]),
              np.flatnonzero(~has[:, x] & ~has[:, y])]
    if min(len(group) for group in groups) == 0:
        return np.zeros((0, 2 * exemplars + 1), int)
    rng = np.random.default_rng(seed)
    if exemplars == 1:
        return np.stack([rng.choice(group, count) for group in groups], axis=1)
    chosen = [np.stack([rng.choice(group, exemplars, replace=len(group) < exemplars) for _ in range(count)])
              for group in groups[:2]]
    return np.concatenate([*chosen, rng.choice(groups[2], count)[:, None]], axis=1)


def drawn_faces(config, names, name):
    """The faces `names` of the run's data drawn again with attribute `name` added (synthetic_celeba.draw_edit),
    in the run's crop and size as the models see them; None unless the data is the renderer's."""
    seed = renderer_seed(config, names)
    if seed is None:
        return None
    return as_run_input(config, [synthetic_celeba.draw_edit(synthetic_celeba.face_index(face), name, seed=seed)[1]
                                 for face in names])


def score_analogies(run, held, *, classifier, pairs=facemath.ANALOGY_PAIRS, count=200, seed=0, exemplars=1,
                    space="codes"):
    """Per attribute pair: the fraction of D = C + B - A on which the attribute CNN says the expected X and Y
    (both, and each), beside D = C (no arithmetic: Y stays absent) as the floor, and, on the synthetic CelebA,
    C's face drawn again with Y added (the ceiling: "drawn"). `space` "maps" does the arithmetic on the
    generator's 8x8 feature maps of the three faces instead of their codes."""
    maps = dcgan.generator_maps(run.generator, held.codes) if space == "maps" else None
    rows = []
    for pair in pairs:
        triples = analogy_triples(held.labels, pair, count=count, seed=seed, exemplars=exemplars)
        if len(triples) == 0:
            print(f"skipping {pair[0]}/{pair[1]}: the held-out faces lack one of its three groups")
            continue
        # A and B: the mean codes (or, on the maps, the mean maps) of their exemplars
        a, b = ((held.codes if maps is None else maps)[triples[:, part * exemplars:(part + 1) * exemplars]].mean(axis=1)
                for part in range(2))
        c = held.codes[triples[:, -1]]
        x, y = directions.attribute_index(pair[0]), directions.attribute_index(pair[1])
        row = {"x": pair[0], "y": pair[1], "triples": int(len(triples)), "exemplars": exemplars, "space": space}
        analogy = (dcgan.generate(run.generator, facemath.analogy_corner(a, b, c)) if maps is None
                   else dcgan.generate(run.generator, c, maps_offsets=b - a))  # C's maps + B's - A's
        outputs = {"analogy": analogy,
                   "c_alone": dcgan.generate(run.generator, c)}
        if held.method != "samples":
            drawn = drawn_faces(run.config, [held.names[face] for face in triples[:, -1]], pair[1])
            if drawn is not None:
                outputs["drawn"] = drawn
        for name, images in outputs.items():
            said = evaluate.predict_attributes(classifier, images) > 0.5
            row[f"{name}_both"] = float(np.mean(~said[:, x] & said[:, y]))
            row[f"{name}_x"], row[f"{name}_y"] = float(np.mean(~said[:, x])), float(np.mean(said[:, y]))
        rows.append(row)
    return rows


def analogies_markdown(rows, settings):
    drawn = any("drawn_both" in row for row in rows)
    lines = ["| A -> B (C -> D) | triples | D right on both | D: X absent | D: Y present | D = C (floor): both | "
             "C: X absent |" + (" drawn: C with Y, both |" if drawn else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if drawn else "")]
    for row in rows:
        lines.append(f"| {row['x']} without {row['y']} -> with (not-{row['x']} -> with {row['y']}) | "
                     f"{row['triples']} | {row['analogy_both']:.3f} | {row['analogy_x']:.3f} | "
                     f"{row['analogy_y']:.3f} | {row['c_alone_both']:.3f} | {row['c_alone_x']:.3f} |"
                     + (f" {row['drawn_both']:.3f} |" if "drawn_both" in row else (" |" if drawn else "")))
    described = ", ".join(f"{key} {value}" for key, value in settings.items())
    return "\n".join(lines) + f"\n\n{described}\n"


def score_descriptions(fitted, held, *, train_labels, classifier=None, images=None, count=facemath.TOP_COUNT):
    """Precision of the top `count` attributes named from each held-out code, against its true labels, beside
    always naming the `count` most frequent training attributes (and the attribute CNN on the photo itself)."""
    truth = np.asarray(held.labels) > 0.5
    named = facemath.top_attributes(facemath.attribute_scores(fitted, held.codes), count=count)
    frequent = np.argsort(-np.asarray(train_labels).mean(axis=0))[:count]
    result = {"faces": int(len(truth)), "top": count,
              "precision": float(np.take_along_axis(truth, named, axis=1).mean()),
              "base_rate_precision": float(truth[:, frequent].mean()),
              "most_frequent": [facemath.ATTRIBUTES[index] for index in frequent]}
    if classifier is not None and images is not None:
        probabilities = evaluate.predict_attributes(classifier, images)
        cnn_top = np.argsort(-probabilities, axis=1)[:, :count]
        result["cnn_precision"] = float(np.take_along_axis(truth, cnn_top, axis=1).mean())
    return result


def classifier_for_scores(path, run):
    evaluate.check_run(run.directory, evaluate.classifier_config(path))
    return evaluate.load_classifier(path)


def held_out_for(run, args, *, classifier):
    """Codes of held-out faces for the scores: the test split's, encoded as the directions' codes were (E when
    the directions come from samples and E exists); with samples and no E, fresh samples (another seed)
    labelled by the attribute CNN, as InterFaceGAN measures its edits."""
    method = directions.resolve_method(run, args.method, dataset=True, classifier_ready=classifier is not None)
    if method == "samples" and directions.has_encoder(run):
        method = "encoder"
    if method == "samples":
        print(f"held-out faces: {args.test_limit} fresh samples (seed {args.seed + 1}) labelled by the attribute CNN")
    return directions.dataset_codes(run, method=method, split="test", limit=args.test_limit, steps=args.steps,
                         seed=args.seed + 1 if method == "samples" else args.seed, classifier=classifier)


def run_score_edits(run, args):
    kinds = [kind.strip() for kind in (args.kinds or ",".join(directions.EDIT_KINDS)).split(",") if kind.strip()]
    for kind in kinds:
        if kind not in directions.EDIT_KINDS:
            raise data_prep.DataError(f"unknown kind {kind!r} in --kinds; expected {', '.join(directions.EDIT_KINDS)}")
    attributes = [directions.attribute_index(name) for name in args.attributes.split(",") if name.strip()] or None
    classifier = classifier_for_scores(args.classifier, run)
    sources = [(run.kind, run), *labelled_vaes(args.vae, run)]
    if any(kind in directions.MAP_KINDS for kind in kinds) and not all(dcgan.has_maps(s.generator) for _, s in sources):
        if args.kinds:
            raise data_prep.DataError("a generator here has no 8x8 feature maps (an 8-pixel run), so it has no local "
                                      "kind; leave local out of --kinds")
        kinds = [kind for kind in kinds if kind not in directions.MAP_KINDS]
        print("a generator here has no 8x8 feature maps (an 8-pixel run): the local kind is left out")
    rows, started, settings = [], time.perf_counter(), {"run": run.directory, "vae": args.vae}
    out = facemath.output_dir(run, args)
    for label, source in sources:
        fitted, codes = facemath.directions_for(source, args, classifier=classifier)
        held = held_out_for(source, args, classifier=classifier)
        settings[f"{label}_codes"] = f"{codes.method} ({len(codes.names)} fitted), {held.method} (held out)"
        rows += edit_rows(source, fitted, held, classifier=classifier, kinds=kinds, strengths=facemath.SCORE_STRENGTHS,
                          count=args.count, seed=args.seed, label=label, attributes=attributes)
        if source is run:  # the renderer's edit of the same faces, once
            drawn = drawn_edit_rows(run.config, fitted, held, classifier=classifier, count=args.count,
                                    seed=args.seed, attributes=attributes)
        in_codes = [kind for kind in kinds if kind not in directions.MAP_KINDS]
        for kind in in_codes[:1] + [kind for kind in kinds if kind in directions.MAP_KINDS]:
            images, labels = edit_examples(source, fitted, held, kind=kind, seed=args.seed)
            suffix = f"-{kind}" if kind in directions.MAP_KINDS else ""
            data_prep.save_grid(os.path.join(out, f"edit-scores-examples-{label}{suffix}.png"), images,
                                columns=len(facemath.SWEEP_STRENGTHS), row_labels=labels,
                                column_labels=[f"{s:+g}" for s in facemath.SWEEP_STRENGTHS])
    settings.update(count=args.count, seed=args.seed, seconds=round(time.perf_counter() - started, 1))
    summary = edits_summary(rows)
    markdown = edits_markdown(rows, summary, settings, drawn)
    data_prep.write_report(os.path.join(out, "edit-scores"), markdown,
                           {"settings": settings, "summary": summary, "rows": rows, "drawn": drawn})
    plot_edit_scores(rows, os.path.join(out, "edit-scores.png"))
    print(markdown + f"wrote {out}/edit-scores.{{md,json,png}} and edit-scores-examples-*.png")
    return out


def run_score_analogies(run, args):
    if args.exemplars < 1:
        raise data_prep.DataError(f"--exemplars must be at least 1, got {args.exemplars}")
    classifier = classifier_for_scores(args.classifier, run)
    held = held_out_for(run, args, classifier=classifier)
    rows = score_analogies(run, held, classifier=classifier, count=args.count, seed=args.seed,
                           exemplars=args.exemplars, space=args.space)
    settings = {"run": run.directory, "codes": held.method, "held_out_faces": len(held.names), "seed": args.seed,
                "exemplars": args.exemplars, "space": args.space}
    out = facemath.output_dir(run, args)
    markdown = analogies_markdown(rows, settings)
    stem = ("analogy-scores" + ("-maps" if args.space == "maps" else "")
            + (f"-exemplars{args.exemplars}" if args.exemplars > 1 else ""))
    data_prep.write_report(os.path.join(out, stem), markdown, {"settings": settings, "rows": rows})
    print(markdown + f"wrote {out}/{stem}.{{md,json}}")
    return out


def run_score_descriptions(run, args):
    classifier = classifier_for_scores(args.classifier, run)
    fitted, codes = facemath.directions_for(run, args, classifier=classifier)
    held = held_out_for(run, args, classifier=classifier)
    # Sampled faces' labels are the CNN's own view, so the CNN is compared only on real held-out photos.
    images = None if held.method == "samples" else data_prep.run_split(run.config, split="test",
                                                                    limit=args.test_limit).images
    result = score_descriptions(fitted, held, train_labels=codes.labels, classifier=classifier, images=images)
    result.update(run=run.directory, codes=f"{codes.method} (directions), {held.method} (held out)", seed=args.seed)
    out = facemath.output_dir(run, args)
    data_prep.write_json(os.path.join(out, "description-scores.json"), result)
    print(f"top-{result['top']} precision on {result['faces']} held-out faces: {result['precision']:.3f} from the "
          f"codes, {result['base_rate_precision']:.3f} always naming {', '.join(result['most_frequent'])}"
          + (f", {result['cnn_precision']:.3f} from the attribute CNN on the photo" if "cnn_precision" in result
             else "") + f"; wrote {out}/description-scores.json")
    return out


# ----------------------------------------------------------------------------------------------------------
# Command line


def subcommand_parser(command):
    parser = runs.OneLineParser(prog=f"scores.py {command}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    if command == "encoders":
        add("--run", required=True, help="the GAN run directory")
        add("--vae", nargs="+", default=[], help="VAE runs (vae.py, plain or --gan) trained on the same data")
        add("--classifier", default=os.path.join("runs", "classifier"), help="the attribute CNN's directory")
        add("--count", type=int, default=256, help="held-out test faces")
        add("--domain-weight", type=float, default=0.0, help="hybrid: weight of |z - E(G(z))|^2 (Zhu et al.)")
        add("--feature-weight", type=float, default=0.0, help="optimisation and hybrid: weight of the squared "
            "difference in D's last block's features (E's perceptual term)")
        add("--out", default=None, help="directory (default: <run>/encoder/compare)")
        encoder.add_projection_flags(add)
    elif command in FACE_MATH:
        facemath.add_run_flags(add)
        add("--test-limit", type=int, default=1000, help="held-out (test split) faces encoded for the scores")
        if command == "edits":
            add("--kinds", default=None, help="comma-separated kinds of direction to score (default: "
                f"{','.join(directions.EDIT_KINDS)}; local only where the generator has 8x8 feature maps)")
            add("--count", type=int, default=200, help="held-out faces per attribute, sense and kind")
            add("--vae", nargs="+", default=[], help="VAE runs on the same data (vae.py, plain or --gan), scored "
                "the same way (GAN codes against VAE codes)")
            add("--attributes", default="",
                help="comma-separated attributes to score (default: every one that varies)")
        elif command == "analogies":
            add("--count", type=int, default=200, help="triples per attribute pair")
            add("--exemplars", type=int, default=1, help="faces averaged for A and for B (Radford et al. used 3); "
                "C stays one face")
            add("--space", default="codes", choices=facemath.SPACES, help="do the arithmetic on the codes, or on "
                "the generator's 8x8 feature maps of them (maps)")
    else:
        add("--run", required=True, help="the makeover run directory (runs/<name>)")
        add("--epoch", type=int, default=None, help="use the translator saved after this epoch (default: final)")
        add("--compare", nargs="*", default=[], help="more runs of the same populations in the same table")
        add("--classifier", default=None, help="the attribute CNN of the run's crop (default: "
            "runs/classifier-makeover, or runs/classifier for the dcgan crop)")
        add("--cross-check", nargs="+", default=[], help="other attribute CNNs of the crop (a run's keepers too): "
            "their target rate and collateral of the same outputs, in a second table")
        add("--n", type=int, default=None, help="held-out source faces (default: all, at most 2000)")
        add("--seed", type=int, default=0, help="seed of the held-out faces' choice")
        add("--out", default=None, help="output directory (default: <run>/scores)")
    if command not in FACE_MATH:  # facemath's run flags have it
        add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser


def run_makeover(argv):
    args = subcommand_parser("makeover").parse_args(argv)
    _, out_dir = score_run(args.run, compare=args.compare, classifier_dir=args.classifier, count=args.n,
                           seed=args.seed, epoch=args.epoch, out_dir=args.out, cross_checks=args.cross_check)
    print(f"wrote {out_dir}/scores.md, scores.json, grid.png")


def main(argv=None):
    command, rest = runs.split_command(argv, COMMANDS, "scores.py")
    argv = [command, *rest]
    if command in FACE_MATH:
        args = subcommand_parser(command).parse_args(argv[1:])
        run = dcgan.load_run(args.run, runs_dir=args.runs_dir)
        score = {"edits": run_score_edits, "analogies": run_score_analogies, "descriptions": run_score_descriptions}
        return score[command](run, args)
    {"encoders": run_encoders, "makeover": run_makeover}[command](argv[1:])


if __name__ == "__main__":
    runs.run_cli(main)
