"""A face editor in the browser: NVIDIA's DIGITS forms for the GAN face math, as a local Gradio page.

NVIDIA's "Photo editing with generative adversarial networks" (part 2) shows the point of a fast generator: move
an attribute vector and see the face change at once, through DIGITS's web forms. This page does the same for a
run of this repository with facemath.py's arithmetic: a photo (aligned with data_prep.load_face, encoded with
encoder.py) or a random face by seed; one slider per attribute that varies in the run's data, strength -3 to 3, with
mean-difference, boundary or conditional directions; the face's top five attributes (NVIDIA's score) beside the
attribute CNN's view; an analogy grid (D = C + B - A) and an interpolation strip; the face and its code to download.

Safety: it binds to 127.0.0.1 unless --host says otherwise, refuses uploads over --max-upload-mb or that are not
images with a message on the page, and writes only the codes behind its directions (into <run>/facemath/, as
facemath.py caches them, so that the next start reads them at once) and into a temporary directory of its own
(Gradio's files too, through GRADIO_TEMP_DIR) that it removes on exit. Nothing leaves the machine: Gradio's
analytics and the Hugging Face hub look-ups are switched off.

Directions come from E's codes of the training faces where the run has an encoder (encoder.py train), else from
generated samples labelled by the attribute CNN (InterFaceGAN's recipe); with neither, the editor says which
command makes one instead of projecting thousands of faces by optimisation.

Usage:
    python editor.py --run runs/reference                    # http://127.0.0.1:7860 (the page, served until Ctrl-C)
    python editor.py --run runs/demo --steps 50 --port 7861   # CPU-sized: fewer projection steps per photo
    python bench.py editor --run runs/demo --seconds 30 --clients 8   # 8 clients editing: latency percentiles
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports to Gradio's servers
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups (they block for seconds on a closed network)

import argparse
import dataclasses
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

import data_prep
import dcgan
import directions
import encoder
import evaluate
import facemath
import runs

DEFAULT_PORT = 7860
DISPLAY_SIZE = 256  # faces are shown at this size (nearest-neighbour upscaling keeps the pixels honest)
STRENGTH_LIMIT = 3.0  # sliders run from -3 to 3 in facemath's strength unit
STRENGTH_STEP = 0.1
UPLOAD_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_UPLOAD_MB = 8.0
MAX_UPLOAD_PIXELS = 40_000_000  # a decompression bomb is refused before it is decoded
ANALOGY_SIZE = 5
STRIP_STEPS = 8
KIND_LABELS = {"mean": "mean difference (NVIDIA)", "boundary": "boundary normal (InterFaceGAN)",
               "conditional": "conditional (InterFaceGAN)", "partial": "partial effect (regression on all labels)"}


class UploadError(ValueError):
    """An upload the page refuses; its message is shown on the page."""


# ----------------------------------------------------------------------------------------------------------
# The editor's state, shared by every browser session: the run, its directions, the attribute CNN


@dataclasses.dataclass
class Editor:
    run: dcgan.Run
    fitted: directions.Directions
    vectors: dict  # kind -> (40, latent_dim) strength-1 edit vectors, zero where an attribute has none
    varying: list  # attribute indices with a slider, in CELEBA_ATTRIBUTES order
    classifier: object  # the attribute CNN, or None
    photo_method: str  # encoder.py method for uploaded photos
    steps: int  # projection steps for uploaded photos
    fitted_from: str  # what the directions were fitted on, for the page
    render_function: object  # z (n, latent_dim) -> images in [-1, 1], compiled once

    @property
    def latent_dim(self):
        return int(self.run.config["latent_dim"])

    @property
    def image_size(self):
        return int(self.run.config["image_size"])


def edit_vectors(fitted):
    """Strength-1 edit vectors of every kind for every varying attribute, computed once so that a slider's move
    costs one small matrix product. A conditional direction with nothing left to edit stays zero (noted)."""
    vectors = {}
    for kind in directions.KINDS:
        table = np.zeros_like(fitted.mean)
        for index in np.flatnonzero(fitted.varying):
            try:
                table[index] = directions.edit_vector(fitted, int(index), kind=kind)
            except ValueError as error:
                print(f"note: no {kind} direction for {facemath.ATTRIBUTES[index]}: {error}")
        vectors[kind] = table
    return vectors


def compiled_renderer(generator, latent_dim):
    """G(z) in inference mode as one compiled graph: a 1-face call costs a few milliseconds instead of eager
    Keras's per-layer overhead."""
    import tensorflow as tf

    graph = tf.function(lambda z: generator(z, training=False),
                        input_signature=[tf.TensorSpec([None, latent_dim], tf.float32)])
    return lambda z: graph(tf.constant(np.asarray(z, np.float32))).numpy().astype(np.float32)


def load_editor(run_dir, *, classifier_dir=None, method="auto", steps=200, fit_limit=4000, seed=0):
    """Everything a page needs, loaded once at start: the run, the attribute CNN (when one measures this run's
    data), directions fitted on the run's training codes (or labelled samples) and their edit vectors."""
    run = dcgan.load_run(run_dir)
    # The CNN of the readout may be a larger one (the 32x32 demo read by the 64-pixel CNN); labelling samples for
    # the directions needs one of the run's own size.
    reader = facemath.classifier_or_none(classifier_dir, run, smaller=True) if classifier_dir else None
    classifier = reader if reader is not None and evaluate.classifier_config(classifier_dir)["image_size"] == \
        run.config["image_size"] else None
    fit_method = directions.resolve_method(run, method, dataset=True, classifier_ready=classifier is not None)
    if method == "auto" and fit_method == "optimize" and not cached_codes(run, fit_method, fit_limit, steps, seed):
        # Projecting thousands of faces by optimisation takes half an hour on a CPU: asked for, never by default.
        raise data_prep.DataError(
            f"{run.directory} has no encoder and there is no attribute CNN to label samples, so the directions would "
            f"need {fit_limit} faces projected by optimisation (minutes to hours on a CPU); run `python encoder.py "
            f"train --run {run.directory}` (or `python evaluate.py classifier`), or pass --method optimize "
            f"--fit-limit 256 to project that many")
    # The codes are cached in <run>/facemath/ (as facemath.py caches them), so the next start reads them at once.
    codes = directions.dataset_codes(run, method=fit_method, split="train", limit=fit_limit, steps=steps, seed=seed,
                                     classifier=classifier)
    fitted_from = f"{len(codes.codes)} {'cached ' if codes.from_cache else ''}{fit_method} codes"
    fitted = directions.fit_directions(codes.codes, codes.labels, seed=seed)
    if not fitted.varying.any():
        raise data_prep.DataError(f"no attribute varies in {run.directory}'s data; the editor has nothing to edit")
    photo_method = directions.resolve_method(run, "auto" if method == "samples" else method)
    latent_dim = int(run.config["latent_dim"])
    return Editor(run, fitted, edit_vectors(fitted), [int(i) for i in np.flatnonzero(fitted.varying)],
                  reader, photo_method, steps, fitted_from, compiled_renderer(run.generator, latent_dim))


def cached_codes(run, method, limit, steps, seed):
    """Whether <run>/facemath/ already holds the training codes that `method` would compute."""
    path = directions.codes_path(run, method=method, split="train", limit=limit)
    key = directions.cache_key(run, method=method, split="train", limit=limit, steps=steps, seed=seed)
    return directions.read_cached_codes(path, key) is not None


# ----------------------------------------------------------------------------------------------------------
# Pure jobs behind the page's controls


def edited_code(editor, base, strengths, kind="mean"):
    """The base code plus each varying attribute's strength times its edit vector of `kind`."""
    if kind not in editor.vectors:
        raise data_prep.DataError(f"unknown kind of direction {kind!r}; expected one of {', '.join(directions.KINDS)}")
    strengths = np.clip(np.asarray(strengths, np.float32), -STRENGTH_LIMIT, STRENGTH_LIMIT)
    if strengths.shape != (len(editor.varying),):
        raise data_prep.DataError(f"expected {len(editor.varying)} strengths, got {strengths.shape}")
    return (np.asarray(base, np.float32) + strengths @ editor.vectors[kind][editor.varying]).astype(np.float32)


def display(images, size=DISPLAY_SIZE):
    """uint8 images (or float in [-1, 1]) enlarged by a whole factor with nearest neighbours, for the page."""
    images = data_prep.to_uint8(images) if images.dtype != np.uint8 else images
    factor = max(1, size // images.shape[-2])
    return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def render(editor, codes):
    """G(codes) as uint8 faces (n, size, size, 3)."""
    return data_prep.to_uint8(editor.render_function(np.reshape(codes, (-1, editor.latent_dim))))


def seed_code(editor, seed):
    """The generator's code for a seed (dcgan.latent_for_seed, as `dcgan.py sample` draws it)."""
    return dcgan.latent_for_seed(int(seed), 1, editor.latent_dim,
                                 editor.run.config.get("latent_distribution", "normal"))[0]


def check_upload(path, *, max_bytes=int(MAX_UPLOAD_MB * 2**20), max_pixels=MAX_UPLOAD_PIXELS):
    """Refuse what is not a photo we can read, in one line for the page: wrong extension, too large a file or
    picture, or bytes that do not decode as an image."""
    from PIL import Image

    name = os.path.basename(path)
    if not name.lower().endswith(UPLOAD_TYPES):
        raise UploadError(f"{name} is not a photo this page takes; upload {', '.join(UPLOAD_TYPES)}")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise UploadError(f"{name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # PIL raises several kinds for bytes that are not an image
        raise UploadError(f"{name} is not an image that can be read (JPEG, PNG, WebP or BMP)") from None
    if width * height > max_pixels:
        raise UploadError(f"{name} is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
    return path


def encode_photo(editor, path, *, progress=None):
    """An uploaded photo: checked, aligned (data_prep.load_face; a centre crop when no face is found), encoded.
    Returns (aligned crop uint8, code, reconstruction uint8, a note for the page)."""
    check_upload(path)
    step = progress or (lambda fraction, desc=None: None)
    step(0.05, desc="finding and aligning the face")
    face, details = data_prep.load_face(path, image_size=editor.image_size,
                                        crop_size=editor.run.config.get("crop_size", 108), fallback=True,
                                        return_details=True)
    step(0.2, desc=f"encoding ({editor.photo_method}, {editor.steps} steps)")
    encoding = encoder.encode(editor.run, face[None], method=editor.photo_method, steps=editor.steps,
                              progress=progress is not None)
    note = ("no face found: a centre crop of the photo was used" if details["fallback"]
            else f"{details['faces_found']} face(s) found; the largest aligned")
    note += f"; encoded with {editor.photo_method} in {encoding.seconds:.1f} s, pixel MSE {encoding.losses[0]:.4f}"
    return data_prep.to_uint8(face), encoding.codes[0], data_prep.to_uint8(encoding.reconstructions)[0], note


def describe(editor, code, face):
    """Markdown: the code's top five attributes by NVIDIA's score beside the attribute CNN's top five on the face."""
    scores = facemath.attribute_scores(editor.fitted, np.asarray(code, np.float32)[None])[0]
    top = facemath.top_attributes(scores[None], count=facemath.TOP_COUNT)[0]
    lines = ["| from the code (NVIDIA's score) | | the attribute CNN on the face | |", "|---|---:|---|---:|"]
    if editor.classifier is not None:
        face = evaluate.brought_up(face[None], editor.classifier.input_shape[1:3])
        probabilities = evaluate.predict_attributes(editor.classifier, face)[0]
        cnn = [(facemath.ATTRIBUTES[i], f"{probabilities[i]:.2f}") for i in np.argsort(-probabilities)[:len(top)]]
    else:
        cnn = [("no attribute CNN for this run", "")] + [("", "")] * (len(top) - 1)
    for index, (name, probability) in zip(top, cnn):
        lines.append(f"| {facemath.ATTRIBUTES[index]} | {scores[index]:+.2f} | {name} | {probability} |")
    return "\n".join(lines)


def analogy_picture(editor, a, b, c, *, size=ANALOGY_SIZE):
    """facemath's analogy grid (A top-left, B top-right, C bottom-left, D = C + B - A bottom-right) as one image."""
    grid = facemath.analogy_grid(a, b, c, size=int(size))
    images = render(editor, grid.reshape(-1, editor.latent_dim))
    return display(data_prep.to_uint8(data_prep.make_grid(data_prep.to_float(images), columns=int(size))),
                   size=size * 96)


def strip_picture(editor, start, end, *, steps=STRIP_STEPS):
    """facemath's interpolation strip (spherical) from one code to another as one image."""
    images = render(editor, facemath.interpolation_strip(start, end, steps=int(steps)))
    return display(data_prep.to_uint8(data_prep.make_grid(data_prep.to_float(images), columns=int(steps))),
                   size=steps * 96)


def save_current(editor, code, out_dir, *, label):
    """The current face (PNG, the generator's own pixels) and its code (.npz with the run and the edit) in
    `out_dir`; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"face-{int(time.time() * 1000)}")
    data_prep.write_image(stem + ".png", data_prep.to_float(render(editor, code)[0]))
    with data_prep.atomic_path(stem + ".npz") as temporary:
        np.savez(temporary, code=np.asarray(code, np.float32), run=editor.run.directory, edit=label)
    return [stem + ".png", stem + ".npz"]


def pasted_picture(editor, path, code):
    """The uploaded photo with the current face put back where its face was found (data_prep.paste_into_photo)."""
    if not path:
        raise UploadError("upload a photo first: a random face has no photo to go back into")
    config = editor.run.config
    return data_prep.paste_into_photo(path, render(editor, code)[0], crop=config.get("crop", "dcgan"),
                                      image_size=editor.image_size, crop_size=config.get("crop_size", 108))


def edit_label(editor, strengths, kind):
    parts = [f"{facemath.ATTRIBUTES[index]}={value:+.1f}" for index, value in zip(editor.varying, strengths) if value]
    return f"{kind}: " + (", ".join(parts) if parts else "no edit")


# ----------------------------------------------------------------------------------------------------------
# The page


def page_errors(function):
    """Bad input raises gr.Error, which Gradio shows on the page as one line (never a traceback)."""
    import functools

    import gradio as gr

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            raise gr.Error(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    return wrapped


def page_header(editor):
    run = editor.run
    kind = "VAE" if run.config.get("kind") == "vae" else "GAN"
    cnn = "the attribute CNN of evaluate.py" if editor.classifier is not None else "no attribute CNN for this run"
    no_encoder = ("" if editor.photo_method in ("encoder", "hybrid") else
                  f" (this run has no encoder, so a photo is found by optimisation alone, from a random start; "
                  f"`python encoder.py train --run {run.directory}` trains one for the hybrid)")
    return (f"## facemath editor: {os.path.basename(run.directory)}\n"
            f"{kind} run `{run.directory}`, {run.config['image_size']}x{run.config['image_size']} faces, z of "
            f"{editor.latent_dim}. Directions fitted on {editor.fitted_from}; photos encoded with "
            f"{editor.photo_method} ({editor.steps} steps){no_encoder}; {cnn}. Strength 1 moves a face by the mean distance "
            f"between faces with and without the attribute (facemath.py's unit).")


def build_page(editor, *, workdir, max_upload_mb=MAX_UPLOAD_MB):
    """The Gradio Blocks: inputs (photo or seed) on the left, the edited face and its description in the middle,
    one slider per varying attribute on the right, then the analogy and interpolation panels."""
    import gradio as gr

    names = [facemath.ATTRIBUTES[index] for index in editor.varying]
    start_code = seed_code(editor, 0)
    start_face = render(editor, start_code)[0]
    limit_bytes = int(max_upload_mb * 2**20)

    def current(base, kind, strengths):
        return edited_code(editor, base, strengths, kind)

    def on_edit(base, kind, *strengths):
        return display(render(editor, current(base, kind, strengths))[0])

    def on_describe(base, kind, *strengths):
        code = current(base, kind, strengths)
        return describe(editor, code, render(editor, code)[0])

    def on_seed(seed):
        code = seed_code(editor, seed)
        face = render(editor, code)[0]
        return (code, display(face), describe(editor, code, face), None, None, f"random face, seed {int(seed)}",
                None, None, *[0.0] * len(names))

    def on_photo(path, progress=gr.Progress(track_tqdm=True)):
        if not path:
            raise UploadError("no photo received")
        check_upload(path, max_bytes=limit_bytes)
        aligned, code, reconstruction, note = encode_photo(editor, path, progress=progress)
        return (code, display(reconstruction), describe(editor, code, reconstruction), display(aligned),
                display(reconstruction), note, path, None, *[0.0] * len(names))

    def on_paste(path, base, kind, *strengths):
        return pasted_picture(editor, path, current(base, kind, strengths))

    def on_save(base, kind, *strengths):
        return save_current(editor, current(base, kind, strengths), os.path.join(workdir, "downloads"),
                            label=edit_label(editor, strengths, kind))

    def on_analogy(seed_a, seed_b, seed_c, use_current, size, base, kind, *strengths):
        c = current(base, kind, strengths) if use_current else seed_code(editor, seed_c)
        return analogy_picture(editor, seed_code(editor, seed_a), seed_code(editor, seed_b), c, size=size)

    def on_strip(seed_end, base, kind, *strengths):
        return strip_picture(editor, current(base, kind, strengths), seed_code(editor, seed_end))

    image_options = {"format": "png", "interactive": False, "buttons": ["download"]}
    render_queue = {"concurrency_limit": 4, "concurrency_id": "render"}  # G is cheap: a few events at once
    with gr.Blocks(title="facemath editor", delete_cache=(600, 1800)) as page:
        base = gr.State(start_code)  # the session's unedited code: a seed's, or an uploaded photo's
        photo = gr.State(None)  # the uploaded photo's path, for pasting the edited face back
        gr.Markdown(page_header(editor), elem_id="header")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Upload a photo ({', '.join(UPLOAD_TYPES)}; at most {max_upload_mb:g} MB)",
                                 file_types=list(UPLOAD_TYPES), type="filepath", elem_id="upload")
                with gr.Row():
                    seed = gr.Number(label="seed", value=0, precision=0, minimum=0, elem_id="seed")
                    random_button = gr.Button("Random face", elem_id="random")
                note = gr.Markdown("random face, seed 0", elem_id="note")
                with gr.Row():
                    aligned = gr.Image(label="aligned crop", elem_id="aligned", **image_options)
                    reconstruction = gr.Image(label="reconstruction G(z)", elem_id="reconstruction", **image_options)
            with gr.Column(scale=2):
                edited = gr.Image(display(start_face), label="edited face", elem_id="edited", **image_options)
                description = gr.Markdown(describe(editor, start_code, start_face), elem_id="description")
                save_button = gr.Button("Save face (PNG) and code (.npz)", elem_id="save")
                downloads = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads")
                paste_button = gr.Button("Paste the edited face into the photo", elem_id="paste")
                pasted = gr.Image(label="the photo with the edited face", elem_id="pasted", **image_options)
            with gr.Column(scale=2):
                kind = gr.Radio([(label, name) for name, label in KIND_LABELS.items()], value="mean",
                                label="kind of direction", elem_id="kind")
                sliders = []
                for first in range(0, len(names), 2):  # two sliders a row keep the column short
                    with gr.Row():
                        sliders += [gr.Slider(-STRENGTH_LIMIT, STRENGTH_LIMIT, value=0.0, step=STRENGTH_STEP,
                                              label=name, elem_id=f"slider-{name}", min_width=160)
                                    for name in names[first:first + 2]]
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Analogy: D = C + B - A (A top-left, B top-right, C bottom-left, D bottom-right)")
                with gr.Row():
                    seed_a = gr.Number(label="A: seed", value=1, precision=0, minimum=0)
                    seed_b = gr.Number(label="B: seed", value=2, precision=0, minimum=0)
                    seed_c = gr.Number(label="C: seed", value=3, precision=0, minimum=0)
                with gr.Row():
                    use_current = gr.Checkbox(label="C is the current face", value=True)
                    size = gr.Slider(2, 8, value=ANALOGY_SIZE, step=1, label="grid size")
                analogy_button = gr.Button("Make the analogy grid", elem_id="analogy-button")
                analogy = gr.Image(label="analogy grid", elem_id="analogy", **image_options)
            with gr.Column():
                gr.Markdown("### Interpolation: from the current face to a seed's (spherical)")
                seed_end = gr.Number(label="end: seed", value=4, precision=0, minimum=0)
                strip_button = gr.Button("Make the strip", elem_id="strip-button")
                strip = gr.Image(label="interpolation strip", elem_id="strip", **image_options)

        codes_in = [base, kind, *sliders]
        gr.on([slider.input for slider in sliders] + [kind.input], page_errors(on_edit), codes_in, edited,
              api_name="edit", trigger_mode="always_last", show_progress="hidden", **render_queue
              ).then(page_errors(on_describe), codes_in, description, api_visibility="undocumented", show_progress="hidden",
                     **render_queue)
        face_out = [base, edited, description, aligned, reconstruction, note, photo, pasted, *sliders]
        random_button.click(page_errors(on_seed), seed, face_out, api_name="seed", **render_queue)
        upload.upload(page_errors(on_photo), upload, face_out, api_name="photo", concurrency_limit=1,
                      concurrency_id="encode")
        save_button.click(page_errors(on_save), codes_in, downloads, api_name="save", **render_queue)
        paste_button.click(page_errors(on_paste), [photo, *codes_in], pasted, api_name="paste", **render_queue)
        analogy_button.click(page_errors(on_analogy), [seed_a, seed_b, seed_c, use_current, size, *codes_in],
                             analogy, api_name="analogy", **render_queue)
        strip_button.click(page_errors(on_strip), [seed_end, *codes_in], strip, api_name="strip",
                           **render_queue)
    return page


def serve(editor, *, host="127.0.0.1", port=DEFAULT_PORT, workdir, max_upload_mb=MAX_UPLOAD_MB):
    """Build the page and serve it until interrupted (Ctrl-C or SIGTERM)."""
    page = build_page(editor, workdir=workdir, max_upload_mb=max_upload_mb)
    page.queue(default_concurrency_limit=2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this machine can use the page", file=sys.stderr)
    print(f"editor at http://{host}:{port} (working files in {workdir}, removed on exit; Ctrl-C stops)", flush=True)
    page.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb:g}mb", share=False,
                inbrowser=False, show_error=False, quiet=True, prevent_thread_lock=True)
    signal.signal(signal.SIGTERM, stop_on_terminate)  # after launch, so that nothing replaces it
    try:
        page.block_thread()
    finally:
        page.close()


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = runs.OneLineParser(prog="editor.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--run", default=None, help="the run (GAN or VAE); default: the newest run in runs/ with a generator")
    add("--host", default="127.0.0.1", help="address to bind; anything but loopback exposes the page to others")
    add("--port", type=int, default=DEFAULT_PORT, help="port to serve on")
    add("--classifier", default=os.path.join("runs", "classifier"), help="the attribute CNN's directory")
    add("--method", default="auto", choices=directions.METHODS,
        help="how codes are found (facemath.py's --method): for the directions and for uploaded photos")
    add("--steps", type=int, default=200, help="Adam steps of projection for an uploaded photo")
    add("--fit-limit", type=int, default=4000, help="training faces (or samples) whose codes fit the directions")
    add("--seed", type=int, default=0, help="seed of the directions' fit and of projection's starting codes")
    add("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="uploads larger than this are refused")
    add("--load-test", type=float, default=None, metavar="SECONDS", help="moved: `python bench.py editor`")
    add("--clients", type=int, default=8, help="moved with --load-test")
    add("--load-out", default=None, help="moved with --load-test")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.steps < 1 or args.fit_limit < 1 or args.max_upload_mb <= 0 or args.clients < 1:
        parser.error("--steps, --fit-limit, --max-upload-mb and --clients must be positive")
    return args


def stop_on_terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the server as Ctrl-C does, so the working directory is removed


def main(argv=None):
    args = parse_args(argv)
    print("editor: " + ", ".join(f"{key} {value}" for key, value in vars(args).items() if value not in (None, False)))
    if args.load_test is not None:
        raise data_prep.DataError(f"`editor.py --load-test` moved: run `python bench.py editor --run RUN --seconds "
                                  f"{args.load_test:g} --clients {args.clients}`")
    workdir = tempfile.mkdtemp(prefix="facemath-editor-")
    tempfile.tempdir = workdir  # every later temporary file (TensorFlow's autograph sources too) goes in here
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "gradio")  # Gradio's uploads and outputs go here
    signal.signal(signal.SIGTERM, stop_on_terminate)
    try:
        editor = load_editor(args.run, classifier_dir=args.classifier, method=args.method, steps=args.steps,
                             fit_limit=args.fit_limit, seed=args.seed)
        serve(editor, host=args.host, port=args.port, workdir=workdir, max_upload_mb=args.max_upload_mb)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"stopped; removed {workdir}", flush=True)
    sys.stderr.flush()
    os._exit(0)  # Gradio's and TensorFlow's worker threads may otherwise keep a stopped server's process alive


if __name__ == "__main__":
    runs.run_cli(main)
