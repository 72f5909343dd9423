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

The arithmetic can also be done one step into the generator: on its 8x8 feature maps (dcgan.generator_maps), where
units stand for parts of a face (GAN Dissection, Bau et al. 2019). `--kind local` edits there, with each
attribute's mean difference of the maps kept at the quarter of positions where it is largest, and `--space maps`
does an analogy's D = C + B - A on the three faces' maps; the rest of the generator draws the result.

Usage:
    python facemath.py --analogy a.jpg b.jpg c.jpg                 # D = C + B - A on an 8x8 grid: PNG, .npz, GIF
    python facemath.py --analogy --examples --run runs/reference    # three held-out faces chosen by their labels
    python facemath.py --analogy 000012.jpg 000031.jpg 000101.jpg --linear --size 5   # faces of the run's data
    python facemath.py --edit photo.jpg --add Smiling=1.5 --add Eyeglasses=-1 --add "Smiling|Male=2"
    python facemath.py --edit photo.jpg --add Smiling=2 --paste     # also the photo with the edited face put back
    python facemath.py --edit photo.jpg --sweep Smiling --kind boundary
    python facemath.py --edit photo.jpg --sweep Eyeglasses --kind local     # edited on the 8x8 feature maps
    python facemath.py --analogy --examples --space maps                     # D = C + B - A on the 8x8 feature maps
    python facemath.py --edit --examples --sweep Smiling --sweep Eyeglasses     # a held-out man, no photo needed
    python facemath.py --describe photo.jpg                        # top five attributes, beside the CNN's view
    python facemath.py --average a.jpg b.jpg c.jpg                 # one face from several photos
    python facemath.py --interpolate a.jpg b.jpg --frames 8        # a strip and a GIF
    python facemath.py --map --run runs/reference --color-by Male  # PCA and t-SNE, and a TensorBoard projector
    python facemath.py demo --run runs/demo                        # a short E, an analogy grid and an edit sweep
    python facemath.py directions --run runs/reference             # the directions and their held-out accuracy
"""

import argparse
import os
import sys
import time

import numpy as np

import data_prep
import dcgan
import directions
import encoder
import evaluate
import runs

ATTRIBUTES = data_prep.CELEBA_ATTRIBUTES
SUBCOMMANDS = ("demo", "directions")
MOVED = {"score-edits": "edits", "score-analogies": "analogies", "score-descriptions": "descriptions"}
MODES = ("analogy", "edit", "describe", "average", "interpolate", "map")
SCORE_STRENGTHS = (0.5, 1.0, 2.0, 3.0)
SWEEP_STRENGTHS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
TOP_COUNT = 5  # attributes that --describe names
ANALOGY_PAIRS = (("Male", "Eyeglasses"), ("Male", "Smiling"), ("Male", "Wearing_Hat"), ("Young", "Eyeglasses"),
                 ("Smiling", "Eyeglasses"), ("Male", "Mouth_Slightly_Open"))  # (X, Y): A x!y, B xy, C !x!y, D !xy
SPACES = ("codes", "maps")  # where an analogy's arithmetic is done: the codes, or the generator's 8x8 feature maps
EXAMPLE_ATTRIBUTES = ("Smiling", "Eyeglasses", "Male", "Blond_Hair", "Wearing_Hat", "Young", "Mustache", "Bangs")
DEMO_SWEEPS = ("Smiling", "Eyeglasses", "Male", "Wearing_Hat")  # the demo's edit sweep, one row each
EXAMPLE_FILTERS = ("Male,-Eyeglasses", "Male,Eyeglasses", "-Male,-Eyeglasses")  # --examples: A, B and C


# ----------------------------------------------------------------------------------------------------------
# Runs and faces


def encode_faces(run, faces, *, method, steps=200, seed=0):
    """Codes of a few faces through encoder.encode; returns the encoder.Encoding (non-finite codes refused)."""
    encoding = encoder.encode(run, faces, method=method, steps=steps, seed=seed, progress=False)
    if not np.isfinite(encoding.codes).all():
        raise data_prep.DataError(f"encoder.py's {method} gave non-finite codes on {run.directory}; try another "
                                  f"--method (encoder, hybrid) or fewer --steps")
    return encoding


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


def edit_step(edits, fitted, *, kind="mean"):
    """The sum of strength x edit vector over (target, conditions, strength) edits of fitted Directions: a step
    for a code, or for a local kind (directions.MAP_KINDS) one for the generator's 8x8 feature maps."""
    steps = [strength * directions.edit_vector(fitted, target, kind=kind, conditions=conditions)
             for target, conditions, strength in edits]
    return np.sum(steps, axis=0).astype(np.float32)


def edited_images(run, codes, steps, *, kind):
    """G of codes edited by `steps` (one per code, from edit_step): added to the codes, or for a local kind to
    the generator's 8x8 feature maps on the way."""
    if kind in directions.MAP_KINDS:
        return dcgan.generate(run.generator, codes, maps_offsets=steps)
    return dcgan.generate(run.generator, np.asarray(codes, np.float32) + steps)


def edit_images(run, code, edit_lists, fitted, *, kind):
    """One image of `code` for each list of edits in `edit_lists`."""
    steps = np.stack([edit_step(edits, fitted, kind=kind) for edits in edit_lists])
    return edited_images(run, np.repeat(np.asarray(code, np.float32)[None], len(steps), axis=0), steps, kind=kind)


def attribute_scores(fitted, codes):
    """NVIDIA's description: each code's projection on each normalised mean-difference vector, centred midway
    between the two groups and divided by their distance, so 0 is halfway and +0.5 is the typical face with the
    attribute (the strength unit). (n, 40), nan where the attribute does not vary."""
    difference = fitted.mean
    lengths = np.linalg.norm(difference, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        units = difference / lengths[:, None]
        midpoint = 0.5 * (fitted.mean_with + fitted.mean_without)
        scores = (np.asarray(codes, np.float32) @ units.T - np.sum(midpoint * units, axis=1)) / lengths
    scores[:, ~fitted.varying] = np.nan
    return scores


def top_attributes(scores, *, count=TOP_COUNT):
    """Indices of the `count` highest scores of each row (nan last). (n, count)"""
    return np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1)[:, :count]


# ----------------------------------------------------------------------------------------------------------
# Writing what was made


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
    add("--method", default="auto", choices=directions.METHODS,
        help="how codes are found: auto picks E (a VAE: its encoder) when trained, else projection for photos and "
             "generated samples labelled by the attribute CNN for directions")
    add("--steps", type=int, default=200, help="Adam steps of projection by optimisation (optimize, hybrid)")
    add("--fit-limit", type=int, default=4000, help="training faces (or samples) whose codes fit the directions")
    add("--kind", default="mean", choices=directions.EDIT_KINDS,
        help="kind of direction for edits, sweeps and example grids (local: in the generator's 8x8 feature maps)")
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
    add("--space", default="codes", choices=SPACES, help="--analogy: do the arithmetic on the faces' codes, or on "
        "the generator's 8x8 feature maps of them (maps; the grid then interpolates linearly)")
    add("--frames", type=int, default=8, help="--interpolate: faces in the strip")
    add("--split", default="test", choices=list(data_prep.SPLITS), help="--map: the split whose codes are mapped")
    add("--limit", type=int, default=500, help="--map: faces of the split")
    add("--color-by", default="Male", help="--map: the attribute that colours the map")
    add("--center-crop", dest="fallback_crop", action="store_true",
        help="use a plain centre crop for a photo without a face instead of refusing it")
    add("--paste", action="store_true",
        help="--edit: also write the photo with the edited face (all edits together) put back in place")
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


def classifier_or_none(path, run, *, smaller=False):
    """The attribute CNN when it exists and measures this run's data, else None (with a note); with `smaller`, also
    one of a larger image size, which then reads the run's faces brought up (evaluate.brought_up)."""
    try:
        evaluate.check_run(run.directory, evaluate.classifier_config(path), smaller=smaller)
        return evaluate.load_classifier(path)
    except ValueError as error:
        print(f"note: no attribute CNN for this run ({str(error).splitlines()[0]})")
        return None


def directions_for(run, args, *, classifier=None):
    return directions.fit_for_run(run, method=args.method, limit=args.fit_limit, steps=args.steps, seed=args.seed,
                                  classifier=classifier)


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
        faces, names = data_prep.example_faces(run.config, EXAMPLE_FILTERS[:count], seed=args.seed)
        print("--examples: " + ", ".join(f"{name} ({text})" for name, text in zip(names, EXAMPLE_FILTERS)))
    else:
        faces, names = data_prep.read_faces(paths, run.config, fallback=args.fallback_crop)
    method = directions.resolve_method(run, args.method)
    encoding = encode_faces(run, faces, method=method, steps=args.steps, seed=args.seed)
    return faces, names, encoding, method


def run_analogy(run, args):
    if not args.examples and len(args.analogy) != 3:
        raise data_prep.DataError(f"--analogy takes exactly three faces A B C (D = C + B - A), got "
                                  f"{len(args.analogy)}; or pass --examples")
    if args.space == "maps":
        dcgan.split_generator(run.generator)  # refuses a generator without 8x8 feature maps before any encoding
    faces, names, encoding, method = input_faces(run, args, args.analogy, count=3)
    size, interpolation = args.size, "linear" if args.linear or args.space == "maps" else "slerp"
    if args.space == "maps":
        corners = dcgan.generator_maps(run.generator, encoding.codes)
        grid = analogy_grid(*corners.reshape(3, -1), size=size, spherical=False)
        images = dcgan.generate_from_maps(run.generator, grid.reshape(-1, *corners.shape[1:]))
    else:
        grid = analogy_grid(*encoding.codes, size=size, spherical=interpolation == "slerp")
        images = dcgan.generate(run.generator, grid.reshape(-1, grid.shape[-1]))
    space = "-maps" if args.space == "maps" else ""
    stem = os.path.join(output_dir(run, args),
                        f"analogy-{file_stem(names)}-{method}{space}-{interpolation}-seed{args.seed}")
    labels = ["A -> B"] + [""] * (size - 2) + ["C -> D"]
    data_prep.save_grid(stem + ".png", images, columns=size, row_labels=labels)
    data_prep.save_grid(stem + "-inputs.png", np.concatenate([data_prep.to_float(faces), encoding.reconstructions]),
                        columns=3, row_labels=["photo", "G(z)"], column_labels=["A", "B", "C"])
    # The grid, and D, are codes, or with --space maps the corners' and grid's 8x8 maps (flattened per face).
    grids = ({"grid": grid, "d": grid[-1, -1]} if args.space == "codes" else
             {"grid_maps": grid, "d_maps": grid[-1, -1], "a_maps": grid[0, 0], "b_maps": grid[0, -1],
              "c_maps": grid[-1, 0]})
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, a=encoding.codes[0], b=encoding.codes[1], c=encoding.codes[2], names=np.asarray(names),
                 run=run.directory, method=method, seed=args.seed, interpolation=interpolation, space=args.space,
                 **grids)
    data_prep.save_gif(stem + ".gif", serpentine(images.reshape(size, size, *images.shape[1:])))
    write_record(stem + ".json", record(run, args, command="analogy", inputs=names, method=method, size=size,
                                       interpolation=interpolation, space=args.space,
                                       reconstruction_mse=encoding.losses.tolist()))
    where = "8x8 feature maps" if args.space == "maps" else "codes"
    print(f"analogy D = C + B - A with A {names[0]}, B {names[1]}, C {names[2]} ({run.directory}, {method}, "
          f"{interpolation}, on the {where}): wrote {stem}.png, .npz, .gif, -inputs.png, .json")
    return stem


def run_edit(run, args):
    if not args.examples and len(args.edit) != 1:
        raise data_prep.DataError(f"--edit takes one photo (or --examples), got {len(args.edit)}")
    if not args.add and not args.sweep:
        raise data_prep.DataError("--edit needs at least one --add ATTR=STRENGTH or --sweep ATTR")
    if args.paste and (args.examples or not os.path.isfile(args.edit[0]) or args.fallback_crop or not args.add):
        raise data_prep.DataError("--paste puts an --add edit back into a photo file whose face is detected (not "
                                  "with --examples, a file of the run's data or --center-crop)")
    edits = [directions.parse_edit(text) for text in args.add]
    sweeps = [directions.parse_direction(text) for text in args.sweep]
    if args.kind in directions.MAP_KINDS and any(edit[1] for edit in [*edits, *sweeps]):
        raise data_prep.DataError(f"{args.kind} directions take no conditions (drop the |ATTR part)")
    if args.kind in directions.MAP_KINDS:
        dcgan.split_generator(run.generator)  # refuses a generator without 8x8 feature maps before any encoding
    faces, names, encoding, method = input_faces(run, args, args.edit, count=1)
    fitted, codes = directions_for(run, args, classifier=classifier_or_none(args.classifier, run))
    code = encoding.codes[0]
    stem = os.path.join(output_dir(run, args), f"edit-{file_stem(names)}-{method}-{args.kind}-seed{args.seed}")
    outputs = []
    if edits:
        lists = [[edit] for edit in edits] + ([edits] if len(edits) > 1 else [])
        labels = [directions.edit_label(*edit) for edit in edits] + (["all together"] if len(edits) > 1 else [])
        edited = edit_images(run, code, lists, fitted, kind=args.kind)
        images = np.stack([np.stack([data_prep.to_float(faces[0]), encoding.reconstructions[0], image])
                           for image in edited])
        outputs.append(data_prep.save_grid(stem + ".png", images.reshape(-1, *images.shape[2:]), columns=3,
                                           row_labels=labels, column_labels=["photo", "G(z)", "edited"]))
    if sweeps:
        images = np.concatenate([edit_images(run, code, [[(target, conditions, s)] for s in SWEEP_STRENGTHS],
                                             fitted, kind=args.kind) for target, conditions in sweeps])
        labels = [directions.edit_label(target, conditions, 0.0).rsplit(" ", 1)[0] for target, conditions in sweeps]
        outputs.append(data_prep.save_grid(stem + "-sweep.png", images, columns=len(SWEEP_STRENGTHS),
                                           row_labels=labels, column_labels=[f"{s:+g}" for s in SWEEP_STRENGTHS]))
    if args.paste:
        outputs.append(paste_edit(run, args, edited[-1] if edits else None, stem))
    write_record(stem + ".json", record(run, args, command="edit", inputs=names, method=method, kind=args.kind,
                                        edits=args.add, sweeps=args.sweep, directions_from=codes.method,
                                        fit_faces=len(codes.names), strength_unit="mean distance between the "
                                        "groups with and without the attribute, along the direction"))
    print(f"edited {names[0]} ({run.directory}, {method}, {args.kind} directions from {len(codes.names)} "
          f"{codes.method} codes): wrote {', '.join(outputs)} and {stem}.json")
    return stem


def paste_edit(run, args, face, stem):
    """<stem>-pasted.png: the photo with the edited face put back where its face was found."""
    if face is None:
        raise data_prep.DataError("--paste needs an --add edit to paste (a sweep has no single face)")
    photo = data_prep.paste_into_photo(args.edit[0], face, crop=run.config.get("crop", "dcgan"),
                                       image_size=run.config["image_size"],
                                       crop_size=run.config.get("crop_size", 108))
    data_prep.write_image(stem + "-pasted.png", photo)
    return stem + "-pasted.png"


def run_describe(run, args):
    faces, names, encoding, method = input_faces(run, args, args.describe)
    classifier = classifier_or_none(args.classifier, run)
    fitted, codes = directions_for(run, args, classifier=classifier)
    scores = attribute_scores(fitted, encoding.codes)
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
    data_prep.save_gif(stem + ".gif", np.concatenate([images, images[::-1]]))
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, codes=codes, names=np.asarray(names), run=run.directory, method=method, seed=args.seed,
                 interpolation=interpolation)
    write_record(stem + ".json", record(run, args, command="interpolate", inputs=names, method=method,
                                        interpolation=interpolation, frames=args.frames))
    print(f"{names[0]} to {names[1]} ({run.directory}, {method}, {interpolation}): wrote {stem}.png, .gif, .npz")
    return stem


def run_map(run, args):
    colour_index = directions.attribute_index(args.color_by)
    method = directions.resolve_method(run, args.method, dataset=True)
    if method == "samples":
        raise data_prep.DataError("--map maps the codes of real faces; pass --method encoder, optimize or hybrid")
    codes = directions.dataset_codes(run, method=method, split=args.split, limit=args.limit, steps=args.steps, seed=args.seed)
    thumbnails = data_prep.run_split(run.config, split=args.split, limit=args.limit).images
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
    fitted, codes = directions_for(run, args, classifier=classifier_or_none(args.classifier, run))
    return directions.save_directions(output_dir(run, args), fitted, codes, run=run, seed=args.seed)


def demo_encoder(run, args):
    """A short E for a GAN run that has none (encoder.py train, CPU-sized), so that the demo's directions come from
    codes of real training faces in seconds rather than from an hour of projection. An unfinished E of the demo's
    own settings (an interrupted demo) is resumed; any other training in <run>/encoder is left alone, in one line."""
    if run.kind == "vae" or directions.has_encoder(run) or args.method not in ("auto", "encoder", "hybrid"):
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
        directions.parse_direction(name)  # an unknown attribute fails before anything is trained
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
    run = dcgan.load_run(args.run, runs_dir=args.runs_dir)
    print(f"{command} on {run.directory} ({run.kind}), " + ", ".join(
        f"{key} {value}" for key, value in vars(args).items() if value not in (None, False, [])))
    if command != "math":
        return {"demo": run_demo, "directions": run_directions}[command](run, args)
    mode = next(mode for mode in MODES if getattr(args, mode) not in (None, False))
    return {"analogy": run_analogy, "edit": run_edit, "describe": run_describe, "average": run_average,
            "interpolate": run_interpolate, "map": run_map}[mode](run, args)


if __name__ == "__main__":
    runs.run_cli(main)
