"""The shared CelebA loader, image helpers and a synthetic CelebA that runs anywhere.

Every script in this repository reads faces through this module. It understands the real CelebA download
(Liu et al. 2015, "Deep Learning Face Attributes in the Wild") in both layouts people have: the original
`img_align_celeba/` + `list_attr_celeba.txt` and the CSV variant (`list_attr_celeba.csv`,
`img_align_celeba/img_align_celeba/`). Faces are selected by split and by an attribute filter such as
"Attractive,-Eyeglasses", cropped as in the reference projects (the DCGAN 108-pixel centre crop, or the makeover box),
decoded once into a uint8 `.npy` cache, and fed to training through `tf.data`.

CelebA cannot be downloaded everywhere, so the embedded default is a synthetic CelebA rendered procedurally in
exactly CelebA's on-disk format with ground-truth attributes (synthetic_celeba.py, rendered on first use).

Usage:
    python data_prep.py synth --out data/synthetic-celeba --count 20000 --seed 0
    python data_prep.py stats                                   # the synthetic default, rendered on first use
    python data_prep.py stats --data ~/celeba --filter "Attractive,-Eyeglasses"
    python data_prep.py prepare --data ~/celeba --split train --image-size 64
    python data_prep.py prepare --count 2000                    # CPU-sized: a small synthetic set
    python data_prep.py face me.jpg --out me_64.png             # a photo aligned and cropped as the models see faces
"""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import json
import os
import sys
import time
import typing
import zlib

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

import synthetic_celeba
# CelebA's on-disk format is defined beside the renderer that writes it; every script reads it from here.
from synthetic_celeba import (ALIGNED_HEIGHT, ALIGNED_WIDTH, CELEBA_ATTRIBUTES, CELEBA_TEMPLATE_LANDMARKS,
                              LANDMARK_COLUMNS, DataError)

DEFAULT_DATA_DIR = os.path.join("data", "synthetic-celeba")
DEFAULT_CACHE_DIR = os.path.join("data", "cache")
VERBOSE_HELP = ("kept for older commands; TensorFlow's start-up lines print while it loads, before flags are "
                "read: set TF_CPP_MIN_LOG_LEVEL=0 to see them")
DEFAULT_SYNTHETIC_COUNT = 20000  # enough for the demo to learn varied faces in a few CPU minutes

SPLITS = {"train": 0, "validation": 1, "test": 2}
# deep-makeover's crop: an 80-wide, 100-tall box whose top-left corner is (x=49, y=90).
MAKEOVER_BOX = (49, 90, 80, 100)
CROPS = ("dcgan", "makeover")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@contextlib.contextmanager
def quiet_tensorflow_start(verbose=False):
    """Silence what TensorFlow's C++ side writes to stderr while it loads and probes its devices (absl, oneDNN,
    a CUDA probe; it ignores TF_CPP_MIN_LOG_LEVEL for these lines), unless `verbose` (a script's --verbose).
    Python errors inside still raise."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# ----------------------------------------------------------------------------------------------------------
# Reading CelebA


@dataclasses.dataclass
class CelebA:
    """A CelebA-layout dataset: attributes (int8, 1 or -1) and partition (0/1/2) are indexed by file name."""

    root: str
    image_dir: str
    attributes: pd.DataFrame
    partition: pd.Series
    landmarks: pd.DataFrame | None
    skipped_missing: int = 0

    @property
    def attribute_names(self):
        return list(self.attributes.columns)


def _find_layout(root):
    """Return (attribute file, image dir, layout) for the original .txt layout or the CSV variant."""
    if not os.path.isdir(root):
        raise DataError(f"data directory not found: {root}")
    text_file = os.path.join(root, "list_attr_celeba.txt")
    csv_file = os.path.join(root, "list_attr_celeba.csv")
    if os.path.isfile(text_file):
        return text_file, os.path.join(root, "img_align_celeba"), "txt"
    if os.path.isfile(csv_file):
        nested = os.path.join(root, "img_align_celeba", "img_align_celeba")
        image_dir = nested if os.path.isdir(nested) else os.path.join(root, "img_align_celeba")
        return csv_file, image_dir, "csv"
    raise DataError(f"no list_attr_celeba.txt or list_attr_celeba.csv in {root}")


def _parse_table_txt(path, *, header_lines, value_names=None, value_parser=int):
    """Parse CelebA's whitespace tables: optional count and names lines, then `file v1 v2 ...` rows."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    names = value_names
    if header_lines == 2:
        if len(lines) < 2:
            raise DataError(f"{path}: expected a count line and a names line, found {len(lines)} lines")
        names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[header_lines:], start=header_lines + 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{number}: expected a file name and {len(names)} values, "
                            f"found {len(parts) - 1} values")
        try:
            rows.append([value_parser(value) for value in parts[1:]])
        except ValueError:
            raise DataError(f"{path}:{number}: non-numeric value in {line.strip()[:80]!r}") from None
        files.append(parts[0])
    if header_lines == 2 and lines[0].strip().isdigit() and int(lines[0]) != len(files):
        print(f"warning: {path} announces {int(lines[0])} rows but holds {len(files)}", file=sys.stderr)
    return pd.DataFrame(rows, index=pd.Index(files, name="image_id"), columns=names)


def _parse_table_csv(path):
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if "image_id" not in table.columns:
        raise DataError(f"{path}: expected an 'image_id' column, found {list(table.columns)[:5]}")
    table = table.set_index("image_id")
    bad = table.isna().any(axis=1) | ~table.apply(pd.api.types.is_numeric_dtype).all()
    if bool(np.any(bad)):
        raise DataError(f"{path}: non-numeric or missing values in the table")
    return table


def _check_attribute_values(attributes, path):
    values = attributes.to_numpy()
    bad_rows = np.flatnonzero(~np.isin(values, (-1, 0, 1)).all(axis=1))
    if len(bad_rows):
        raise DataError(f"{path}: values must be 1 or -1; row for {attributes.index[bad_rows[0]]} is not")
    # Some re-exports write 0 for absent; the loader speaks CelebA's 1/-1.
    return attributes.where(attributes != 0, -1).astype(np.int8)


def default_partition(file_names):
    """A deterministic 80/10/10 split by file name for datasets that ship no partition file."""
    buckets = np.array([zlib.crc32(name.encode()) % 100 for name in file_names])
    return pd.Series(np.where(buckets < 80, 0, np.where(buckets < 90, 1, 2)).astype(np.int8),
                     index=pd.Index(file_names, name="image_id"), name="partition")


def read_celeba(root, *, strict=False):
    """Read a CelebA directory (either layout). Rows whose image file is missing are skipped with a count,
    or raise with `strict=True`."""
    attribute_file, image_dir, layout = _find_layout(root)
    if not os.path.isdir(image_dir):
        raise DataError(f"image directory not found: {image_dir}")
    if layout == "txt":
        attributes = _parse_table_txt(attribute_file, header_lines=2)
    else:
        attributes = _parse_table_csv(attribute_file)
    attributes = _check_attribute_values(attributes, attribute_file)
    present = set(os.listdir(image_dir))
    missing = ~attributes.index.isin(list(present))
    if missing.any():
        if strict:
            raise DataError(f"{int(missing.sum())} images listed in {attribute_file} are missing from "
                            f"{image_dir}, first {attributes.index[missing][0]}")
        print(f"warning: skipping {int(missing.sum())} attribute rows whose image is missing", file=sys.stderr)
        attributes = attributes[~missing]
    partition = _read_partition(root, layout, attributes.index)
    landmarks = _read_landmarks(root, layout)
    return CelebA(root, image_dir, attributes, partition, landmarks, int(missing.sum()))


def _read_partition(root, layout, file_names):
    path = os.path.join(root, f"list_eval_partition.{layout}")
    if not os.path.isfile(path):
        return default_partition(list(file_names))
    if layout == "txt":
        table = _parse_table_txt(path, header_lines=0, value_names=["partition"])
    else:
        table = _parse_table_csv(path)
    partition = table.iloc[:, 0].astype(np.int8).rename("partition")
    if not partition.isin((0, 1, 2)).all():
        raise DataError(f"{path}: partition values must be 0, 1 or 2")
    unlisted = ~file_names.isin(partition.index)
    if unlisted.any():
        raise DataError(f"{path}: no partition for {int(unlisted.sum())} images, first {file_names[unlisted][0]}")
    return partition.reindex(file_names)


def _read_landmarks(root, layout):
    path = os.path.join(root, f"list_landmarks_align_celeba.{layout}")
    if not os.path.isfile(path):
        return None
    if layout == "txt":
        return _parse_table_txt(path, header_lines=2)
    return _parse_table_csv(path)


# ----------------------------------------------------------------------------------------------------------
# Attribute filters: "Attractive,-Eyeglasses" keeps attractive faces without eyeglasses.


def parse_filter(text, attribute_names):
    """Parse a filter into [(attribute, wanted)]. A leading '-' means the attribute must be absent."""
    terms = []
    for raw in (text or "").split(","):
        term = raw.strip()
        if not term:
            continue
        wanted = not term.startswith("-")
        name = term.lstrip("+-").strip()
        matches = [known for known in attribute_names if known.lower() == name.lower()]
        if not matches:
            close = difflib.get_close_matches(name, attribute_names, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"unknown attribute {name!r} in filter {text!r}; {hint}"
                            f"valid names: {', '.join(attribute_names)}")
        terms.append((matches[0], wanted))
    return terms


def filter_mask(attributes, text):
    """Boolean mask of the rows of `attributes` that satisfy the filter; an empty result is an error."""
    terms = parse_filter(text, list(attributes.columns))
    mask = np.ones(len(attributes), dtype=bool)
    counts = []
    for name, wanted in terms:
        term_mask = (attributes[name].to_numpy() == 1) == wanted
        counts.append(f"{'' if wanted else '-'}{name} keeps {int(term_mask.sum())}")
        mask &= term_mask
    if terms and not mask.any():
        raise DataError(f"filter {text!r} keeps no image of {len(attributes)}: {', '.join(counts)}")
    return mask


def select_files(celeba, *, split="train", filter=None, limit=None):
    """File names of one split ('train', 'validation', 'test' or 'all') that pass the filter, in file order."""
    if split not in (*SPLITS, "all"):
        raise DataError(f"unknown split {split!r}; expected one of {', '.join([*SPLITS, 'all'])}")
    attributes = celeba.attributes
    if split != "all":
        attributes = attributes[celeba.partition.to_numpy() == SPLITS[split]]
        if attributes.empty:
            raise DataError(f"the {split} split of {celeba.root} is empty")
    names = list(attributes.index[filter_mask(attributes, filter)])
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit must be positive, got {limit}")
        names = names[:limit]
    return names


# ----------------------------------------------------------------------------------------------------------
# Crops and image helpers. Images are RGB; uint8 in caches, float32 in [-1, 1] for the models.


def crop_output_shape(crop="dcgan", image_size=64):
    """(height, width) of a crop's output: square for DCGAN, the box's 5:4 aspect for the makeover crop."""
    if crop == "dcgan":
        return image_size, image_size
    if crop == "makeover":
        return round(image_size * MAKEOVER_BOX[3] / MAKEOVER_BOX[2]), image_size
    raise DataError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")


def crop_and_resize(image, *, crop="dcgan", image_size=64, crop_size=108):
    """The reference projects' crops on a 178x218 aligned image: a centred `crop_size` square (DCGAN) or the makeover
    box, resized to `image_size` (area interpolation when shrinking)."""
    height, width = image.shape[:2]
    if crop == "dcgan":
        if crop_size > min(height, width):
            raise DataError(f"crop size {crop_size} does not fit a {width}x{height} image")
        left, top, box_width, box_height = (width - crop_size) // 2, (height - crop_size) // 2, crop_size, crop_size
    elif crop == "makeover":
        left, top, box_width, box_height = MAKEOVER_BOX
    else:
        raise DataError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")
    box = image[top:top + box_height, left:left + box_width]
    out_height, out_width = crop_output_shape(crop, image_size)
    shrinking = out_width < box_width
    return cv2.resize(box, (out_width, out_height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def seeded_subset(total, count, *, seed=0):
    """Indices of `count` of `total` items drawn without replacement from `seed`, in ascending order, so that the
    same seed always picks the same faces, in the data's order."""
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


def to_float(images):
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


def to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255], clipping what a generator overshoots."""
    return np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def decode_image(data, *, source="image"):
    """Decode JPEG/PNG bytes (whatever the extension says) into RGB uint8; grey images become 3 channels."""
    if len(data) == 0:
        raise DataError(f"{source}: empty file (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{source}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_uint8(path):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected an image file, got a directory: {path}") from None
    return decode_image(data, source=path)


def read_image(path):
    """Read an image file as RGB float32 in [-1, 1]."""
    return to_float(read_image_uint8(path))


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write to; renamed over `path` when the block succeeds, removed when it
    fails. Readers see the old file or the whole new one, never a half-written one. The temporary name keeps
    the full extension (".weights.h5", ".keras", ".npz"), which Keras and NumPy check or append."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, dot, extension = name.partition(".")
    temporary = os.path.join(directory, f"{stem}.tmp-{os.getpid()}{dot}{extension}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_bytes(path, data):
    """Write a file so that readers see the old file or the whole new one, never a half-written one."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def atomic_save_npy(path, array):
    """np.save through a temporary file and a rename; returns the path."""
    with atomic_path(path) as temporary:
        np.save(temporary, array)
    return path


def write_json(path, payload):
    """JSON (indented, keys in insertion order), written atomically; returns the path."""
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())
    return path


def write_report(stem, markdown, payload):
    """A measurement's two files: <stem>.md (the table a person reads) and <stem>.json (the figures behind it)."""
    atomic_write_bytes(stem + ".md", markdown.encode())
    write_json(stem + ".json", payload)
    return stem + ".md", stem + ".json"


def save_figure(figure, path, *, dpi=100):
    """Save a matplotlib figure as PNG atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi)
    plt.close(figure)
    return path


def write_image(path, image):
    """Write an RGB image (float in [-1, 1] or uint8) as PNG or JPEG, chosen by the extension."""
    if np.asarray(image).dtype != np.uint8:
        image = to_uint8(image)
    extension = os.path.splitext(path)[1].lower() or ".png"
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"cannot encode an image as {extension}: {path}")
    atomic_write_bytes(path, encoded.tobytes())


def make_grid(images, *, columns=None, row_labels=None, column_labels=None, padding=2, scale=1):
    """Tile images (float [-1, 1] or uint8, (n, h, w, 3)) into one uint8 grid with optional text labels."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"expected images of shape (n, height, width, 3), got {images.shape}")
    if images.dtype != np.uint8:
        images = to_uint8(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    count, height, width = images.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    height, width = height * scale, width * scale
    left = 8 + 7 * max((len(label) for label in row_labels or []), default=-1) if row_labels else 0
    top = 16 if column_labels else 0
    grid = np.full((top + rows * (height + padding) + padding, left + columns * (width + padding) + padding, 3),
                   255, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        y, x = top + padding + row * (height + padding), left + padding + column * (width + padding)
        grid[y:y + height, x:x + width] = np.kron(image, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else image
    font = cv2.FONT_HERSHEY_SIMPLEX
    for row, label in enumerate(row_labels or []):
        y = top + padding + row * (height + padding) + height // 2 + 4
        cv2.putText(grid, str(label), (4, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for column, label in enumerate(column_labels or []):
        x = left + padding + column * (width + padding)
        cv2.putText(grid, str(label)[: max(1, width // 7)], (x, 12), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def save_grid(path, images, **grid_options):
    """Save images as one PNG grid (see make_grid for the options); returns the path."""
    write_image(path, make_grid(images, **grid_options))
    return path


# ----------------------------------------------------------------------------------------------------------
# The prepared-image cache: each (dataset, split, filter, crop, size) is decoded once into a uint8 .npy.


@dataclasses.dataclass
class PreparedImages:
    """uint8 images (n, height, width, 3), memory-mapped from the cache, and their file names."""

    images: np.ndarray
    names: list
    cache_path: str
    from_cache: bool


def save_gif(path, frames, *, frame_ms=120, scale=2):
    """An animated, looping GIF of float [-1, 1] or uint8 frames, written atomically; returns the path."""
    from PIL import Image

    images = [Image.fromarray(np.kron(to_uint8(frame) if frame.dtype != np.uint8 else frame,
                                      np.ones((scale, scale, 1), np.uint8))) for frame in frames]
    with atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def _cache_key(celeba, names, settings):
    """Hash of everything the prepared array depends on: settings, file list, and each file's size and mtime."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    digest.update(os.path.abspath(celeba.root).encode())
    for name in names:
        status = os.stat(os.path.join(celeba.image_dir, name))
        digest.update(f"{name}:{status.st_size}:{status.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _decode_chunk(output, start, paths, crop_options):
    """Decode paths into output[start:...]; returns {index: error message} for the files that failed."""
    failures = {}
    for offset, path in enumerate(paths):
        try:
            output[start + offset] = crop_and_resize(read_image_uint8(path), **crop_options)
        except (DataError, cv2.error) as error:
            failures[start + offset] = str(error)
    return failures


def decode_files(paths, output, *, crop_options, workers=2, progress=True, chunk_size=256):
    """Decode, crop and resize `paths` into `output` with `workers` threads (OpenCV releases the GIL, so
    threads use every core without the cost of processes). Returns {index: error message} for failures."""
    cv2.setNumThreads(1)  # one image per thread; OpenCV's own pool would fight ours for the two cores
    starts = range(0, len(paths), chunk_size)
    failures = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc="preparing", unit="img", disable=not progress, mininterval=1.0) as bar:
        jobs = {pool.submit(_decode_chunk, output, start, paths[start:start + chunk_size], crop_options):
                len(paths[start:start + chunk_size]) for start in starts}
        for job in concurrent.futures.as_completed(jobs):
            failures.update(job.result())
            bar.update(jobs[job])
    return failures


def prepare_images(data_dir=None, *, split="train", filter=None, crop="dcgan", image_size=64, crop_size=108,
                   limit=None, cache_dir=None, workers=2, strict=False, progress=True, celeba=None):
    """Decode one (dataset, split, filter, crop, size) into a cached uint8 array and memory-map it.

    The cache is reused while every input is unchanged and rebuilt when any changes (settings, file list,
    or any image's size or modification time). Unreadable images are skipped with a count (or raise with
    `strict=True`). The array is written to a temporary file and renamed, so no cache is ever half written.
    """
    if image_size < 8:
        raise DataError(f"image size must be at least 8, got {image_size}")
    celeba = celeba or read_celeba(resolve_data_dir(data_dir), strict=strict)
    names = select_files(celeba, split=split, filter=filter, limit=limit)
    settings = {"split": split, "filter": filter or "", "crop": crop, "image_size": image_size,
                "crop_size": crop_size, "limit": limit, "version": 1}
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    base = os.path.join(cache_dir, f"{crop}{image_size}-{split}-{_cache_key(celeba, names, settings)}")
    if os.path.isfile(base + ".json") and os.path.isfile(base + ".npy"):
        return _read_cache(base, strict=strict)
    height, width = crop_output_shape(crop, image_size)
    paths = [os.path.join(celeba.image_dir, name) for name in names]
    crop_options = {"crop": crop, "image_size": image_size, "crop_size": crop_size}
    with atomic_path(base + ".npy") as temporary:
        output = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8,
                                           shape=(len(names), height, width, 3))
        failures = decode_files(paths, output, crop_options=crop_options, workers=workers, progress=progress)
        if failures and strict:
            raise DataError(f"{len(failures)} unreadable images; first {failures[min(failures)]}")
        if failures:
            print(f"warning: skipped {len(failures)} unreadable images, e.g. {failures[min(failures)]}",
                  file=sys.stderr)
            keep = np.array([index not in failures for index in range(len(names))])
            if not keep.any():
                raise DataError(f"none of the {len(names)} selected images could be read")
            output = _compact(temporary, output, keep)
            names = [name for name, kept in zip(names, keep) if kept]
        output.flush()
        del output
    skipped = [failures[index] for index in sorted(failures)]
    write_json(base + ".json", {"names": names, "settings": settings, "skipped": skipped})
    return PreparedImages(np.load(base + ".npy", mmap_mode="r"), names, base + ".npy", False)


def _read_cache(base, *, strict):
    """A prepared array from the cache (memory-mapped), saying how many images were skipped when it was built."""
    with open(base + ".json") as handle:
        saved = json.load(handle)
    skipped = saved.get("skipped", [])
    if skipped and strict:
        raise DataError(f"{len(skipped)} unreadable images (skipped when {base}.npy was built); first {skipped[0]}")
    if skipped:
        print(f"warning: {len(skipped)} unreadable images were skipped, e.g. {skipped[0]}", file=sys.stderr)
    return PreparedImages(np.load(base + ".npy", mmap_mode="r"), saved["names"], base + ".npy", True)


def _compact(temporary, output, keep):
    """Rewrite the temporary array without the rows that failed to decode."""
    compact_path = temporary.replace(".npy", "-compact.npy")
    compact = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8,
                                        shape=(int(keep.sum()), *output.shape[1:]))
    compact[:] = output[keep]
    del output
    os.replace(compact_path, temporary)
    return compact


def attribute_labels(celeba, names):
    """(n, 40) float32 labels in {0, 1} for the files `names`, columns in CELEBA_ATTRIBUTES order."""
    table = celeba.attributes.loc[list(names), list(CELEBA_ATTRIBUTES)]
    return (table.to_numpy() == 1).astype(np.float32)


class Split(typing.NamedTuple):
    images: np.ndarray  # (n, height, width, 3) uint8
    names: list  # file names, in the images' order
    labels: np.ndarray  # (n, 40) float32 in {0, 1}, CELEBA_ATTRIBUTES order


def load_split(data_dir=None, *, split, crop="dcgan", image_size=64, crop_size=108, filter=None, limit=None,
               cache_dir=None, progress=True, celeba=None):
    """One split's faces as every script uses them: uint8 images of either crop (through the cache), their file
    names and their 40 labels; unpacks as `images, names, labels = load_split(...)`."""
    celeba = celeba or read_celeba(resolve_data_dir(data_dir))
    prepared = prepare_images(data_dir, split=split, filter=filter, crop=crop, image_size=image_size,
                              crop_size=crop_size, limit=limit, cache_dir=cache_dir, progress=progress, celeba=celeba)
    return Split(np.asarray(prepared.images), list(prepared.names), attribute_labels(celeba, prepared.names))


def parse_oversample(terms, attribute_names=CELEBA_ATTRIBUTES):
    """Parse ["Bald=3", "Chubby=2,Sideburns=2", ...] into {attribute: factor}, each factor a whole number of at
    least 1 (an attribute named twice keeps its larger factor), in CelebA's order of the attributes."""
    factors = {}
    for term in (part.strip() for text in terms or [] for part in text.split(",") if part.strip()):
        name, equals, value = (part.strip() for part in term.partition("="))
        if not equals or not name or name[0] in "+-" or not value.isdecimal() or int(value) < 1:
            raise DataError(f"--oversample {term!r} is not ATTRIBUTE=N with N a whole number of at least 1 "
                            f"(e.g. Bald=3)")
        matches = [known for known in attribute_names if known.lower() == name.lower()]
        if not matches:
            close = difflib.get_close_matches(name, list(attribute_names), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"--oversample {term!r}: unknown attribute {name!r}; {hint}"
                            f"valid names: {', '.join(attribute_names)}")
        factors[matches[0]] = max(int(value), factors.get(matches[0], 1))
    return {name: factors[name] for name in attribute_names if name in factors}


def oversample_repeats(labels, factors):
    """How many times each image appears in an epoch: the largest factor among the oversampled attributes it
    has, 1 for an image with none of them. `labels` is (n, 40) in CELEBA_ATTRIBUTES order, 1 for present."""
    repeats = np.ones(len(labels), np.int64)
    for attribute, factor in factors.items():
        has = np.asarray(labels)[:, CELEBA_ATTRIBUTES.index(attribute)] > 0.5
        repeats[has] = np.maximum(repeats[has], factor)
    return repeats


def run_repeats(config, labels):
    """The times each training face appears per epoch under a run's `oversample` setting (None without one);
    `labels` are the training split's (n, 40) labels."""
    factors = parse_oversample(config.get("oversample"))
    return oversample_repeats(labels, factors) if factors else None


def make_dataset(images, *, labels=None, batch_size=64, shuffle=True, flip=False, seed=0, drop_remainder=True,
                 scale=True, repeats=None):
    """A tf.data pipeline over uint8 images: shuffle indices, gather a batch, optional horizontal flip, scale
    to float32 [-1, 1] (or keep uint8 with `scale=False`, for a model that scales on its own), prefetch.
    With `labels` ((n, ...) per image) each batch is (images, float32 labels). With `repeats` (n whole numbers)
    image i appears repeats[i] times in each epoch. Gathering whole batches from one in-memory tensor avoids
    per-image work."""
    import tensorflow as tf  # imported here so that the data tools start without TensorFlow

    order = np.arange(len(images)) if repeats is None else np.repeat(np.arange(len(images)), repeats)
    if len(order) < batch_size and drop_remainder:
        raise DataError(f"only {len(order)} images for a batch of {batch_size}")
    pixels = tf.constant(np.asarray(images))
    targets = None if labels is None else tf.constant(np.asarray(labels, np.float32))
    indices = tf.data.Dataset.range(len(order)) if repeats is None else tf.data.Dataset.from_tensor_slices(order)
    if shuffle:
        indices = indices.shuffle(len(order), seed=seed, reshuffle_each_iteration=True)
    # Each batch's flips come from its own seed in a seeded stream, not from one shared random state: the batches
    # are loaded in parallel, and a shared state would hand out its draws in whatever order the threads ran.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def load(batch_indices, batch_seed):
        batch = tf.gather(pixels, batch_indices)
        if flip:
            flips = tf.random.stateless_uniform([tf.shape(batch)[0], 1, 1, 1], seed=tf.stack([batch_seed, 0])) < 0.5
            batch = tf.where(flips, tf.reverse(batch, axis=[2]), batch)
        batch = tf.cast(batch, tf.float32) / 127.5 - 1.0 if scale else batch
        return batch if targets is None else (batch, tf.gather(targets, batch_indices))

    dataset = tf.data.Dataset.zip((indices.batch(batch_size, drop_remainder=drop_remainder), seeds))
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------------------
# Faces in user photos: find the face with MTCNN, align it to CelebA's landmarks, then crop as for training.

DETECTION_MAX_SIDE = 1024  # MTCNN's pyramid costs ~ pixel count; a face in a 1024 copy is still far above 20 px
DETECTION_MIN_SIDE = 160  # tiny photos are enlarged to this: LFW's 25x25 crops go from 95% to 100% detected
DETECTION_PAD_FRACTION = 0.25  # ... and given a border, since MTCNN misses faces that fill the whole frame


@functools.lru_cache(maxsize=1)
def face_detector():
    """MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
    Networks"), built once on first use: importing mtcnn imports TensorFlow, which takes seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # only takes effect if TensorFlow is not yet imported
    from mtcnn import MTCNN
    return MTCNN()


def _detection_copy(image):
    """The copy of `image` that MTCNN sees, with the (x, y) scale and the padding that map its coordinates
    back: large photos shrunk (speed), tiny ones enlarged and padded (MTCNN's smallest face is ~20 px)."""
    height, width = image.shape[:2]
    if max(height, width) > DETECTION_MAX_SIDE:
        factor = DETECTION_MAX_SIDE / max(height, width)
    elif min(height, width) < DETECTION_MIN_SIDE:
        factor = DETECTION_MIN_SIDE / min(height, width)
    else:
        return image, np.ones(2, np.float32), 0
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    copy = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    pad = round(DETECTION_PAD_FRACTION * min(size)) if factor > 1 else 0
    copy = cv2.copyMakeBorder(copy, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return copy, np.array([size[0] / width, size[1] / height], np.float32), pad


def detect_faces(image, *, detector=None):
    """Faces in an RGB uint8 photo of any size, largest box first, as dicts: "box" (x, y, width, height),
    "confidence" and "landmarks", a (5, 2) float array in CELEBA_TEMPLATE_LANDMARKS's order (MTCNN's left_eye
    is the image's left). We read MTCNN's numpy output because its JSON output rounds keypoints to pixels."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    copy, scale, pad = _detection_copy(image)
    rows = (detector or face_detector()).detect_faces(copy, output_type="numpy", box_format="xyxy")
    faces = []
    for row in np.asarray(rows, np.float32).reshape(-1, 16):  # image id, x1, y1, x2, y2, confidence, 5 x, 5 y
        corners = (row[1:5].reshape(2, 2) - pad) / scale
        faces.append({"box": np.concatenate([corners[0], corners[1] - corners[0]]), "confidence": float(row[5]),
                      "landmarks": (np.stack([row[6:11], row[11:16]], axis=1) - pad) / scale})
    return sorted(faces, key=lambda face: face["box"][2] * face["box"][3], reverse=True)


def alignment_matrix(landmarks):
    """The 2x3 similarity (rotation, uniform scale, shift) taking a face's five landmarks onto CelebA's mean
    landmarks; LMEDS so that one badly placed landmark cannot tilt the face."""
    landmarks = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks, CELEBA_TEMPLATE_LANDMARKS, method=cv2.LMEDS)
    if matrix is None:
        raise DataError(f"cannot align a face to landmarks {landmarks.round(1).tolist()}")
    return matrix


def align_face(image, landmarks):
    """Warp a photo to a 178x218 uint8 image aligned as CelebA's img_align_celeba: the face's five landmarks
    moved onto CELEBA_TEMPLATE_LANDMARKS, what lies outside the photo filled by reflection."""
    matrix = alignment_matrix(landmarks)
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 1:  # warpAffine has no area filter: shrink the photo first so a large face does not alias
        height, width = image.shape[:2]
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        factors = np.array([image.shape[1] / width, image.shape[0] / height])
        matrix = np.column_stack([matrix[:, :2] / factors,  # cv2.resize maps pixel centres: x = (x' + .5) / f - .5
                                  matrix[:, 2] + matrix[:, :2] @ (0.5 / factors - 0.5)])
    return cv2.warpAffine(image, matrix, (ALIGNED_WIDTH, ALIGNED_HEIGHT), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def centre_crop_aligned(image):
    """The largest centred region with CelebA's 178:218 aspect, resized to 178x218: the stand-in for alignment
    when no face is found, right for photos already framed like a passport picture."""
    height, width = image.shape[:2]
    crop_width = min(width, round(height * ALIGNED_WIDTH / ALIGNED_HEIGHT))
    crop_height = min(height, round(crop_width * ALIGNED_HEIGHT / ALIGNED_WIDTH))
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    box = image[top:top + crop_height, left:left + crop_width]
    return cv2.resize(box, (ALIGNED_WIDTH, ALIGNED_HEIGHT),
                      interpolation=cv2.INTER_AREA if crop_width > ALIGNED_WIDTH else cv2.INTER_CUBIC)


def load_face(path, *, image_size=64, crop="dcgan", crop_size=108, fallback=False, detector=None,
              return_details=False):
    """A user's photo (JPEG or PNG, colour or grey, any size) as the models see CelebA: the largest face,
    aligned like img_align_celeba, then the training crop, float32 in [-1, 1]. With `return_details` also a
    dict: "aligned" (178x218 uint8), "landmarks" (5x2 in the photo, None on fallback), "faces_found",
    "fallback". Without a face: DataError, or with `fallback=True` a plain centre crop."""
    crop_output_shape(crop, image_size)  # a bad crop name fails now, before TensorFlow loads
    image = read_image_uint8(path)
    faces = detect_faces(image, detector=detector)
    if len(faces) > 1:
        print(f"note: {len(faces)} faces in {path}; using the largest", file=sys.stderr)
    if faces:
        landmarks, aligned = faces[0]["landmarks"], align_face(image, faces[0]["landmarks"])
    elif fallback:
        landmarks, aligned = None, centre_crop_aligned(image)
    else:
        raise DataError(f"no face found in {path}; pass --center-crop to use a plain centre crop of the photo "
                        f"(right for a photo framed like a passport picture)")
    face = to_float(crop_and_resize(aligned, crop=crop, image_size=image_size, crop_size=crop_size))
    if not return_details:
        return face
    return face, {"aligned": aligned, "landmarks": landmarks, "faces_found": len(faces), "fallback": not faces}


# ----------------------------------------------------------------------------------------------------------
# Faces for a trained run: its split, photos, or file names of its data


def run_split(config, *, split, filter=None, limit=None):
    """A split of a run's data in the run's crop, size, filter and cache; `filter` narrows it further."""
    combined = ",".join(part for part in (config.get("filter"), filter) if part) or None
    return load_split(config["data"], split=split, image_size=config["image_size"],
                      crop_size=config.get("crop_size", 108), filter=combined, limit=limit,
                      cache_dir=config.get("cache_dir"), progress=False)


def photo_paths(paths):
    """Photos named on the command line, folders expanded to the images inside, in order; a name that is neither
    stays, for read_faces to look up in the run's data."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(PHOTO_EXTENSIONS))
        else:
            found.append(path)
    if not found:
        raise DataError("no photos: name photos or folders of photos")
    return found


def read_faces(paths, config, *, fallback=False):
    """uint8 faces (n, size, size, 3) in a run's crop and size, and their base names, for photos or folders of
    photos (aligned with load_face) or file names of the run's data (000012.jpg, already aligned). Every face
    loads before anything is written."""
    paths, faces, celeba = photo_paths(paths), [], None
    size, crop_size = config["image_size"], config.get("crop_size", 108)
    for path in paths:
        if os.path.isfile(path):
            faces.append(to_uint8(load_face(path, image_size=size, crop_size=crop_size, fallback=fallback)))
            continue
        celeba = celeba or read_celeba(config["data"])
        in_data = os.path.join(celeba.image_dir, os.path.basename(path))
        if os.path.basename(path) != path or not os.path.isfile(in_data):
            raise DataError(f"photo not found: {path} (neither a file nor an image of {config['data']})")
        faces.append(crop_and_resize(read_image_uint8(in_data), image_size=size, crop_size=crop_size))
    return np.stack(faces), [os.path.basename(path) for path in paths]


def example_faces(config, filters, *, seed=0):
    """One held-out (test split) face of a run's data per attribute filter, chosen with `seed`; (uint8, names)."""
    rng = np.random.default_rng(seed)
    splits = [run_split(config, split="test", filter=text) for text in filters]
    chosen = [int(rng.integers(len(split.names))) for split in splits]
    return (np.stack([split.images[index] for split, index in zip(splits, chosen)]),
            [split.names[index] for split, index in zip(splits, chosen)])


# ----------------------------------------------------------------------------------------------------------
# The synthetic default


def resolve_data_dir(data_dir=None, *, count=DEFAULT_SYNTHETIC_COUNT, seed=0, progress=True):
    """The given directory, or the synthetic CelebA at data/synthetic-celeba, rendered on first use."""
    if data_dir:
        return os.path.expanduser(data_dir)
    if not os.path.isfile(os.path.join(DEFAULT_DATA_DIR, "list_attr_celeba.txt")):
        print(f"no --data given: rendering the synthetic CelebA ({count} faces) into {DEFAULT_DATA_DIR}")
        synthetic_celeba.render_synthetic_celeba(DEFAULT_DATA_DIR, count=count, seed=seed, progress=progress)
    return DEFAULT_DATA_DIR


# ----------------------------------------------------------------------------------------------------------
# Putting an edited face back into its photo


def crop_box(crop="makeover", crop_size=108):
    """(left, top, width, height) of a training crop inside the 178x218 aligned image."""
    if crop == "makeover":
        return MAKEOVER_BOX
    if crop == "dcgan":
        return ((ALIGNED_WIDTH - crop_size) // 2, (ALIGNED_HEIGHT - crop_size) // 2,
                crop_size, crop_size)
    raise DataError(f"unknown crop {crop!r}; expected one of {', '.join(CROPS)}")


def output_to_photo_matrix(alignment, *, crop="makeover", image_size=64, crop_size=108):
    """The 2x3 affine taking an output's pixel (x, y) (an image of the crop) to the photo: the crop's resize undone (pixel
    centres, as cv2.resize maps them), then the inverse of `alignment` (photo -> aligned, 2x3)."""
    left, top, box_width, box_height = crop_box(crop, crop_size)
    out_height, out_width = crop_output_shape(crop, image_size)
    scale_x, scale_y = box_width / out_width, box_height / out_height
    output_to_aligned = np.array([[scale_x, 0.0, left + 0.5 * scale_x - 0.5],
                                  [0.0, scale_y, top + 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])
    aligned_to_photo = np.vstack([cv2.invertAffineTransform(np.asarray(alignment, np.float64)), [0.0, 0.0, 1.0]])
    return (aligned_to_photo @ output_to_aligned)[:2]


def feather_mask(height, width, *, feather=0.1):
    """(height, width) float32 weights: 1 inside, falling linearly to 0 over the outer `feather` of the shorter
    side, so a pasted face has no hard seam (feather 0: all ones)."""
    if feather <= 0:
        return np.ones((height, width), np.float32)
    ramp = max(1.0, feather * min(height, width))
    rows = np.minimum(np.arange(height) + 0.5, height - np.arange(height) - 0.5)[:, None]
    columns = np.minimum(np.arange(width) + 0.5, width - np.arange(width) - 0.5)[None, :]
    return np.clip(np.minimum(rows, columns) / ramp, 0.0, 1.0).astype(np.float32)


def paste_back(photo, face, *, alignment, crop="makeover", image_size=64, crop_size=108, feather=0.1):
    """The photo (uint8 RGB) with `face` (a model's output for its aligned crop, float [-1, 1] or uint8) warped back to where its
    crop came from, through the inverse of the alignment warp, and blended in with feathered edges."""
    face = np.asarray(face)
    face = to_uint8(face) if face.dtype != np.uint8 else face
    matrix = output_to_photo_matrix(alignment, crop=crop, image_size=image_size, crop_size=crop_size)
    height, width = photo.shape[:2]
    warped = cv2.warpAffine(face, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(feather_mask(*face.shape[:2], feather=feather), matrix, (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    blended = mask * warped.astype(np.float32) + (1.0 - mask) * photo.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def paste_into_photo(path, face, *, crop="dcgan", image_size=64, crop_size=108, detector=None):
    """The photo at `path` (uint8 RGB) with `face` (a model's output for the aligned crop of its largest face) put
    back where that face is, as paste_back does; a photo without a detected face has no alignment to invert."""
    photo = read_image_uint8(path)
    faces = detect_faces(photo, detector=detector)
    if not faces:
        raise DataError(f"no face found in {path}: pasting the face back needs the alignment of a detected face")
    return paste_back(photo, face, alignment=alignment_matrix(faces[0]["landmarks"]), crop=crop,
                      image_size=image_size, crop_size=crop_size)


# ----------------------------------------------------------------------------------------------------------
# Command line


def run_cli(main_function, argv=None):
    """Run a script's main(): bad input prints one line naming the problem and exits 2, never a traceback."""
    try:
        return main_function(argv)
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def describe_dataset(celeba, *, filter=None):
    """Counts per split and each attribute's frequency (after the filter), as printable text."""
    attributes = celeba.attributes
    partition = celeba.partition
    if filter:
        mask = filter_mask(attributes, filter)
        attributes, partition = attributes[mask], partition[mask]
    lines = [f"{celeba.root}: {len(attributes)} images" + (f" pass {filter!r}" if filter else "")]
    lines.append("  " + ", ".join(f"{split} {int((partition == code).sum())}" for split, code in SPLITS.items()))
    frequencies = (attributes == 1).mean()
    for name, frequency in frequencies.items():
        lines.append(f"  {name:<22s} {100 * frequency:5.1f}%  {'#' * int(round(40 * frequency))}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="render a synthetic CelebA",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    synth.add_argument("--out", default=DEFAULT_DATA_DIR, help="directory to create")
    synth.add_argument("--count", type=int, default=DEFAULT_SYNTHETIC_COUNT, help="number of faces")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.add_argument("--workers", type=int, default=2, help="rendering processes")
    for name, text in (("stats", "print counts and attribute frequencies, save example faces"),
                       ("prepare", "decode a split into the uint8 cache and report the rate")):
        command = commands.add_parser(name, help=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        command.add_argument("--data", default=None, help="CelebA directory (default: the synthetic CelebA)")
        command.add_argument("--filter", default=None, help='attribute filter, e.g. "Attractive,-Eyeglasses"')
        command.add_argument("--strict", action="store_true", help="fail on missing or unreadable images")
    face = commands.add_parser("face", help="align a photo's face as CelebA's and save the training crop",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    face.add_argument("photo", help="a JPEG or PNG with a face")
    face.add_argument("--out", default=None, help="PNG to write (default: <photo>_aligned.png beside it)")
    face.add_argument("--image-size", type=int, default=64, help="output size in pixels")
    face.add_argument("--crop", default="dcgan", choices=CROPS, help="training crop")
    face.add_argument("--center-crop", action="store_true", help="no face found: use a plain centre crop")
    stats = commands.choices["stats"]
    stats.add_argument("--out", default=os.path.join("runs", "data-stats", "examples.png"),
                       help="grid of example faces (64 random faces of the filter, DCGAN crop)")
    prepare = commands.choices["prepare"]
    prepare.add_argument("--split", default="train", choices=[*SPLITS, "all"], help="which split")
    prepare.add_argument("--crop", default="dcgan", choices=CROPS, help="training crop")
    prepare.add_argument("--image-size", type=int, default=64, help="output size in pixels")
    prepare.add_argument("--crop-size", type=int, default=108, help="side of the DCGAN centre crop")
    prepare.add_argument("--limit", type=int, default=None, help="use only the first N images")
    prepare.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="where prepared arrays live")
    prepare.add_argument("--workers", type=int, default=2, help="decoding threads")
    prepare.add_argument("--count", type=int, default=DEFAULT_SYNTHETIC_COUNT,
                         help="faces to render when the synthetic default does not exist yet")
    for command in commands.choices.values():
        command.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "synth":
        started = time.perf_counter()
        synthetic_celeba.render_synthetic_celeba(args.out, count=args.count, seed=args.seed, workers=args.workers)
        elapsed = time.perf_counter() - started
        print(f"rendered {args.count} faces into {args.out} in {elapsed:.1f} s ({args.count / elapsed:.0f} images/s)")
        return
    if args.command == "face":
        face, details = load_face(args.photo, image_size=args.image_size, crop=args.crop,
                                  fallback=args.center_crop, return_details=True)
        out = args.out or os.path.splitext(args.photo)[0] + "_aligned.png"
        write_image(out, face)
        how = "centre crop (no face found)" if details["fallback"] else f"{details['faces_found']} face(s) found"
        print(f"{how}; wrote {out}")
        return
    data_dir = resolve_data_dir(args.data, count=getattr(args, "count", DEFAULT_SYNTHETIC_COUNT))
    celeba = read_celeba(data_dir, strict=args.strict)
    if args.command == "stats":
        print(describe_dataset(celeba, filter=args.filter))
        names = select_files(celeba, split="all", filter=args.filter)
        chosen = np.random.default_rng(0).permutation(len(names))[:64]
        faces = [crop_and_resize(read_image_uint8(os.path.join(celeba.image_dir, names[i]))) for i in chosen]
        print(f"saved {len(faces)} example faces to {save_grid(args.out, np.stack(faces), columns=8)}")
        return
    started = time.perf_counter()
    prepared = prepare_images(data_dir, split=args.split, filter=args.filter, crop=args.crop,
                              image_size=args.image_size, crop_size=args.crop_size, limit=args.limit,
                              cache_dir=args.cache_dir, workers=args.workers, strict=args.strict, celeba=celeba)
    elapsed = time.perf_counter() - started
    how = "reused the cache" if prepared.from_cache else f"{len(prepared.names) / elapsed:.0f} images/s"
    print(f"{len(prepared.names)} images {prepared.images.shape[1:]} -> {prepared.cache_path} "
          f"in {elapsed:.1f} s ({how})")


if __name__ == "__main__":
    run_cli(main)
