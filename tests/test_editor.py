"""editor.py: its pure jobs on a tiny run (32x32, z of 8) with a tiny attribute CNN, then the page itself in a real
browser (Debian's chromium driven by Playwright): an uploaded astronaut, the Smiling slider moved, the image
changed, no error; a refused upload; 8 clients editing at once; the working directory removed on exit."""

import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data

from conftest import train_settled_tiny_run
import bench
import data_prep
import dcgan
import directions
import editor
import facemath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENT = 8
STEPS = 5  # projection steps for the directions' codes (cached) and uploaded photos
FIT_LIMIT = 160  # the tiny CelebA's whole training split
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
READY_SECONDS = 300  # a loaded 2-core machine imports TensorFlow and Gradio slowly
UPLOAD_SECONDS = 180  # MTCNN's first build and the projection, on a loaded machine


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("editor")


@pytest.fixture(scope="module")
def tiny_run(tiny_celeba, workspace):
    """A one-epoch GAN with z of 8 whose batch norm is settled, so that G(z) depends on z."""
    return train_settled_tiny_run(tiny_celeba, workspace, latent_dim=LATENT)


@pytest.fixture(scope="module")
def cached_codes(tiny_run, tiny_celeba):
    """Codes for the directions as facemath.py caches them (random codes, the training faces' labels), so that
    neither the editor here nor the server spends a minute projecting 160 faces on a loaded machine."""
    run = dcgan.load_run(tiny_run)
    split = data_prep.run_split(run.config, split="train", limit=FIT_LIMIT)
    codes = dcgan.latent_for_seed(7, len(split.names), LATENT)
    key = directions.cache_key(run, method="optimize", split="train", limit=FIT_LIMIT, steps=STEPS, seed=0)
    path = directions.codes_path(run, method="optimize", split="train", limit=FIT_LIMIT)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, codes=codes, names=np.asarray(split.names), labels=split.labels, key=key)
    return path


@pytest.fixture(scope="module")
def tiny_editor(tiny_run, classifier_dir, cached_codes):
    return editor.load_editor(tiny_run, classifier_dir=classifier_dir, method="optimize", steps=STEPS,
                              fit_limit=FIT_LIMIT)


def test_without_an_encoder_or_a_cnn_the_editor_refuses_rather_than_projecting_for_minutes(tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("facemath"))  # no cached codes
    with pytest.raises(data_prep.DataError, match="no encoder") as error:
        editor.load_editor(str(run_copy), classifier_dir=None, method="auto", steps=STEPS, fit_limit=FIT_LIMIT)
    assert f"python encoder.py train --run {run_copy}" in str(error.value) and "--method optimize" in str(error.value)


def test_without_an_encoder_the_directions_come_from_labelled_samples_and_are_cached(tiny_run, classifier_dir,
                                                                                       tmp_path, monkeypatch):
    def pixel_labels(classifier, images):  # the tiny CNN is near chance: label attribute j by pixel j's median split
        pixels = np.asarray(images).reshape(len(images), -1)[:, :40]
        return (pixels > np.median(pixels, axis=0)).astype(np.float32)

    monkeypatch.setattr(directions.evaluate, "predict_attributes", pixel_labels)
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("facemath"))
    first = editor.load_editor(str(run_copy), classifier_dir=classifier_dir, steps=STEPS, fit_limit=FIT_LIMIT)
    assert first.fitted_from == f"{FIT_LIMIT} samples codes" and first.photo_method == "optimize"
    assert "has no encoder" in editor.page_header(first)
    second = editor.load_editor(str(run_copy), classifier_dir=classifier_dir, steps=STEPS, fit_limit=FIT_LIMIT)
    assert second.fitted_from == f"{FIT_LIMIT} cached samples codes"
    assert np.array_equal(first.vectors["mean"], second.vectors["mean"])


def test_the_pasted_photo_holds_the_current_face_where_the_face_was(tiny_editor, tmp_path):
    photo = skimage.data.astronaut()
    path = str(tmp_path / "astronaut.png")
    cv2.imwrite(path, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    code = editor.seed_code(tiny_editor, 3)
    pasted = editor.pasted_picture(tiny_editor, path, code)
    assert pasted.shape == photo.shape
    nose = data_prep.detect_faces(photo)[0]["landmarks"][2].round().astype(int)
    around = (slice(nose[1] - 10, nose[1] + 10), slice(nose[0] - 10, nose[0] + 10))
    assert np.abs(pasted[around].astype(int) - photo[around]).mean() > 5
    assert np.array_equal(pasted[:60, -60:], photo[:60, -60:])
    with pytest.raises(editor.UploadError, match="upload a photo first"):
        editor.pasted_picture(tiny_editor, None, code)


def files_under(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, _, names in os.walk(directory) for name in names)


# ----------------------------------------------------------------------------------------------------------
# The jobs behind the page, without a browser


def test_sliders_are_the_varying_attributes_and_zero_strength_keeps_the_face(tiny_editor):
    assert tiny_editor.varying == [int(i) for i in np.flatnonzero(tiny_editor.fitted.varying)]
    smiling = tiny_editor.varying.index(directions.attribute_index("Smiling"))
    base = editor.seed_code(tiny_editor, 0)
    strengths = np.zeros(len(tiny_editor.varying))
    assert np.array_equal(editor.edited_code(tiny_editor, base, strengths), base)
    strengths[smiling] = 2.0
    for kind in directions.KINDS:
        expected = base + 2.0 * directions.edit_vector(tiny_editor.fitted, tiny_editor.varying[smiling],
                                                            kind=kind)
        assert np.allclose(editor.edited_code(tiny_editor, base, strengths, kind), expected, atol=1e-5)
    strengths[smiling] = 99.0  # beyond the slider's range: clipped to 3
    assert np.allclose(editor.edited_code(tiny_editor, base, strengths), base + 3.0 * tiny_editor.vectors["mean"][
        tiny_editor.varying[smiling]], atol=1e-5)


def test_rendered_faces_match_the_generator_and_are_shown_enlarged(tiny_editor):
    codes = dcgan.latent_for_seed(5, 2, LATENT)
    expected = dcgan.generate(tiny_editor.run.generator, codes)
    assert np.abs(tiny_editor.render_function(codes) - expected).max() < 1e-4
    faces = editor.render(tiny_editor, codes)
    assert faces.dtype == np.uint8 and faces.shape == (2, 32, 32, 3)
    shown = editor.display(faces[0])
    assert shown.shape == (editor.DISPLAY_SIZE, editor.DISPLAY_SIZE, 3) and np.array_equal(shown[::8, ::8], faces[0])


def test_description_names_five_attributes_beside_the_attribute_cnn(tiny_editor):
    code = editor.seed_code(tiny_editor, 3)
    table = editor.describe(tiny_editor, code, editor.render(tiny_editor, code)[0])
    rows = table.splitlines()[2:]
    assert len(rows) == 5
    scores = facemath.attribute_scores(tiny_editor.fitted, code[None])[0]
    best = facemath.ATTRIBUTES[int(np.nanargmax(scores))]
    assert rows[0].startswith(f"| {best} |")
    assert all(float(row.split("|")[4]) >= 0 for row in rows)  # the CNN's probabilities


def test_analogy_strip_and_saved_code_rebuild_the_face(tiny_editor, tmp_path):
    a, b, c = (editor.seed_code(tiny_editor, seed) for seed in (1, 2, 3))
    grid = editor.analogy_picture(tiny_editor, a, b, c, size=3)
    strip = editor.strip_picture(tiny_editor, a, b, steps=4)
    assert grid.ndim == 3 and grid.shape[0] == grid.shape[1] and strip.shape[1] > 3 * strip.shape[0]
    png, npz = editor.save_current(tiny_editor, c, str(tmp_path), label="mean: Smiling=+1.0")
    with np.load(npz) as saved:
        assert np.array_equal(saved["code"], c) and str(saved["edit"]) == "mean: Smiling=+1.0"
    assert np.abs(cv2.imread(png)[..., ::-1].astype(int) - editor.render(tiny_editor, c)[0]).max() <= 1


def test_uploads_that_are_not_photos_or_too_large_are_refused_in_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(editor.UploadError, match="not a photo this page takes"):
        editor.check_upload(str(text))
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8 certainly not a JPEG" * 10)
    with pytest.raises(editor.UploadError, match="not an image that can be read"):
        editor.check_upload(str(fake))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.random.default_rng(0).integers(0, 255, (600, 600, 3), np.uint8))
    with pytest.raises(editor.UploadError, match="the limit is"):
        editor.check_upload(str(big), max_bytes=100_000)
    with pytest.raises(editor.UploadError, match="megapixels"):
        editor.check_upload(str(big), max_pixels=1000)
    assert editor.check_upload(str(big)) == str(big)


def test_the_page_binds_to_loopback_unless_told():
    args = editor.parse_args(["--run", "runs/x"])
    assert args.host == "127.0.0.1" and args.port == editor.DEFAULT_PORT
    assert editor.parse_args(["--host", "0.0.0.0", "--port", "8000"]).host == "0.0.0.0"


# ----------------------------------------------------------------------------------------------------------
# The page in a real browser


def find_chromium():
    for path in (os.environ.get("CHROMIUM_PATH"), *CHROMIUM_CANDIDATES):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def server(tiny_run, classifier_dir, cached_codes, workspace):
    """`python editor.py` on the tiny run, in a process of its own whose temporary directory is watched. With
    EDITOR_TEST_RUN=runs/x in the environment, the page serves that run with editor.py's defaults instead, so the
    latency that the astronaut test prints is measured on a real run (`-s` shows it)."""
    temporary = workspace / "server-tmp"
    temporary.mkdir()
    port = bench.free_port()
    log = open(workspace / "server.log", "w")
    environment = dict(os.environ, TMPDIR=str(temporary), PYTHONUNBUFFERED="1")
    chosen = os.environ.get("EDITOR_TEST_RUN")
    run = os.path.abspath(chosen) if chosen else tiny_run
    flags = [] if chosen else ["--classifier", str(classifier_dir), "--method", "optimize", "--steps", str(STEPS),
                               "--fit-limit", str(FIT_LIMIT)]
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "editor.py"), "--run", run, "--port", str(port),
                                *flags], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        bench.wait_for_page(url, process, timeout=READY_SECONDS)
    except RuntimeError:
        process.kill()
        log.close()
        pytest.fail((workspace / "server.log").read_text()[-3000:])
    yield {"url": url, "process": process, "temporary": str(temporary), "log": workspace / "server.log",
           "run_files": files_under(run), "run": run}
    if process.poll() is None:
        process.kill()
        process.wait(timeout=60)
    log.close()


@pytest.fixture(scope="module")
def page(server):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium found (looked for " + ", ".join(CHROMIUM_CANDIDATES) + "); `.ci/run` installs "
                    "Debian's chromium, or set CHROMIUM_PATH")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1500})
        tab.set_default_timeout(60_000)
        tab.goto(server["url"], wait_until="load", timeout=120_000)
        tab.wait_for_selector("#edited img", state="visible")
        yield tab
        browser.close()


SLIDER_MOVE = """async ([slider, image, value]) => {
    const source = () => { const shown = document.querySelector(image); return shown ? shown.src : null; };
    const before = source();
    const range = document.querySelector(slider);
    const started = performance.now();
    range.value = String(value);
    range.dispatchEvent(new Event("input", {bubbles: true}));
    range.dispatchEvent(new Event("change", {bubbles: true}));
    while (source() === before) {
        if (performance.now() - started > 60000) return -1;
        await new Promise(resolve => requestAnimationFrame(resolve));
    }
    const shown = document.querySelector(image);
    if (!shown.complete) await new Promise(resolve => { shown.onload = resolve; shown.onerror = resolve; });
    return performance.now() - started;
}"""


def page_errors(tab):
    """The text of any error Gradio shows (its toasts), empty when there is none."""
    return [text for text in tab.locator(".toast-body").all_inner_texts() if "error" in text.lower()]


def test_astronaut_upload_and_smiling_slider_change_the_face_in_a_browser(page, server, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    seed_face = page.locator("#edited img").get_attribute("src")
    page.set_input_files("#upload input[type=file]", str(photo))
    page.wait_for_selector("#reconstruction img", state="visible", timeout=UPLOAD_SECONDS * 1000)
    page.wait_for_function("before => document.querySelector('#edited img').src !== before", arg=seed_face)
    assert page.locator("#aligned img").is_visible()
    assert "face(s) found" in page.locator("#note").inner_text()
    uploaded_face = page.locator("#edited img").get_attribute("src")

    latencies = [page.evaluate(SLIDER_MOVE, ["#slider-Smiling input[type=range]", "#edited img", value])
                 for value in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, -3.0)]
    assert min(latencies) > 0, f"the face did not change after a slider move: {latencies}"
    assert page.locator("#edited img").get_attribute("src") != uploaded_face
    assert page_errors(page) == []
    page.screenshot(path=str(tmp_path / "editor.png"), full_page=True)
    assert (tmp_path / "editor.png").stat().st_size > 10_000
    median = float(np.median(latencies))
    print(f"\nslider to image shown, ms: {', '.join(f'{ms:.0f}' for ms in latencies)} (median {median:.0f})")
    (server["log"].parent / "latency.json").write_text(json.dumps({"slider_to_image_ms": latencies}))
    assert median < 5000, f"slider to image took {median:.0f} ms (median) even allowing for a loaded machine"


def test_a_file_that_is_not_a_photo_gets_a_message_on_the_page(page, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8 certainly not a JPEG" * 10)
    clear = page.locator("#upload button[aria-label=Clear]")
    if clear.count():  # the astronaut is still there: clear it, as a user would, to upload again
        clear.first.click()
    page.set_input_files("#upload input[type=file]", str(fake))
    message = page.locator(".toast-body").filter(has_text="not an image").first
    message.wait_for(state="visible", timeout=UPLOAD_SECONDS * 1000)
    assert "Traceback" not in page.content()


def test_eight_clients_editing_at_once_all_get_their_faces(server):
    result = bench.load_test(server["url"], clients=8, seconds=4.0)
    print(f"\nload test (8 clients, 4 s): {result}")
    assert result["errors"] == 0, result["first_errors"]
    assert result["responses"] >= 8


def test_the_server_writes_only_its_own_temporary_directory_and_removes_it(server):
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert files_under(server["temporary"]) == [], files_under(server["temporary"])
    assert files_under(server["run"]) == server["run_files"]


def test_the_load_test_moved_to_bench(capsys):
    with pytest.raises(SystemExit):
        data_prep.run_cli(editor.main, ["--run", "runs/x", "--load-test", "30"])
    assert "python bench.py editor --run RUN --seconds 30 --clients 8" in capsys.readouterr().err


def test_a_larger_attribute_cnn_reads_a_smaller_runs_faces_brought_up(tiny_run, tiny_celeba, cached_codes, tmp_path):
    import evaluate

    wide = tmp_path / "classifier64"
    evaluate.main(["classifier", "--data", tiny_celeba, "--image-size", "64", "--filters", "8", "16", "--epochs", "1",
                   "--batch-size", "32", "--cache-dir", str(tmp_path / "cache"), "--out", str(wide)])
    page = editor.load_editor(tiny_run, classifier_dir=wide, method="optimize", steps=STEPS, fit_limit=FIT_LIMIT)
    code = editor.seed_code(page, 3)
    face = editor.render(page, code)[0]
    table = editor.describe(page, code, face)
    assert "no attribute CNN" not in table
    expected = evaluate.predict_attributes(evaluate.load_classifier(str(wide)),
                                           cv2.resize(face, (64, 64), interpolation=cv2.INTER_LINEAR)[None])[0]
    best = facemath.ATTRIBUTES[int(np.argmax(expected))]
    assert table.splitlines()[2].split("|")[3].strip() == best  # the CNN's top attribute on the face brought up
