"""Face completion (Yeh et al. 2016, "Semantic Image Inpainting with Deep Generative Models"; bamos's
dcgan-completion): the pixels of a hole are found by projection on the known pixels only (encoder.project with a
mask: a pixel loss on what is known plus lambda times the discriminator's realism loss), then G(z) is blended
into the hole.

Usage:
    python complete.py --run runs/demo --mask center photo.jpg
    python complete.py --run runs/demo --mask lowres --split test --limit 8 --steps 100    # CPU-sized
"""

import argparse
import dataclasses
import os

import cv2
import numpy as np

import data_prep
import dcgan
import encoder
import runs

MASKS = ("center", "left", "random", "grid", "lowres")  # bamos's dcgan-completion masks
BLENDS = ("poisson", "feather", "none")
RANDOM_MASK_FRACTION = 0.2  # bamos: a fifth of the pixels missing
GRID_STEP = 4  # bamos: every fourth pixel of every fourth row known
LOWRES_FACTOR = 4  # bamos: the face known only at a quarter of its resolution
FEATHER_PIXELS = 4  # width of the feathered blend's ramp inside the hole



def make_mask(name, image_size, *, seed=0):
    """bamos's masks as (size, size) float32, 1 where the pixel is known: center (the central half square
    missing), left (the left half), random (a fifth of the pixels), grid (all but every fourth pixel of every
    fourth row), lowres (nothing known exactly: the loss compares images pooled by LOWRES_FACTOR)."""
    mask = np.ones((image_size, image_size), np.float32)
    if name == "center":
        low, high = int(0.25 * image_size), int(0.75 * image_size)
        mask[low:high, low:high] = 0.0
    elif name == "left":
        mask[:, :image_size // 2] = 0.0
    elif name == "random":
        mask[np.random.default_rng(seed).random((image_size, image_size)) < RANDOM_MASK_FRACTION] = 0.0
    elif name == "grid":
        mask[:] = 0.0
        mask[::GRID_STEP, ::GRID_STEP] = 1.0
    elif name == "lowres":
        mask[:] = 0.0
    else:
        raise data_prep.DataError(f"unknown mask {name!r}; expected one of {', '.join(MASKS)}")
    return mask


def masked_view(image, mask, name):
    """What the completion knows of a face, for display: the hole grey, or the pooled face for lowres."""
    if name == "lowres":
        size = image.shape[0]
        small = cv2.resize(image, (size // LOWRES_FACTOR, size // LOWRES_FACTOR), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)
    return image * mask[..., None]


def blend_into_hole(image, generated, mask, *, blend="poisson"):
    """The generated pixels put into the hole (mask 0) of `image` (float [-1, 1], (h, w, 3)); known pixels stay
    exactly. poisson: cv2.seamlessClone (Perez et al. 2003) against the photo with its hole inpainted, so the
    unknown pixels never leak in; feather: a ramp FEATHER_PIXELS wide inside the hole from the inpainted photo
    to the generated face; none: the generated pixels as they are."""
    if blend not in BLENDS:
        raise data_prep.DataError(f"unknown blend {blend!r}; expected one of {', '.join(BLENDS)}")
    hole = (np.asarray(mask) < 0.5).astype(np.uint8)  # (h, w) 1 = missing
    if blend == "none" or hole.all() or not hole.any():
        return np.where(hole[..., None] > 0, generated, image).astype(np.float32)
    photo, face = data_prep.to_uint8(image), data_prep.to_uint8(generated)
    filled = cv2.inpaint(photo, hole, 3, cv2.INPAINT_TELEA)  # the hole guessed from its border only
    if blend == "feather":
        ramp = cv2.distanceTransform(hole, cv2.DIST_L2, 3) / FEATHER_PIXELS
        alpha = np.clip(ramp, 0.0, 1.0)[..., None]  # 0 at the hole's edge, 1 deep inside
        result = alpha * data_prep.to_float(face) + (1 - alpha) * data_prep.to_float(filled)
    else:
        pad = 8  # seamlessClone misbehaves where the region touches the border
        big = [cv2.copyMakeBorder(array, pad, pad, pad, pad, cv2.BORDER_REFLECT) for array in (face, filled)]
        region = cv2.copyMakeBorder(cv2.dilate(hole, np.ones((3, 3), np.uint8)) * 255, pad, pad, pad, pad,
                                    cv2.BORDER_CONSTANT, value=0)
        x, y, width, height = cv2.boundingRect(region)
        cloned = cv2.seamlessClone(big[0], big[1], region, (x + width // 2, y + height // 2), cv2.NORMAL_CLONE)
        result = data_prep.to_float(cloned[pad:-pad, pad:-pad])
    return np.where(hole[..., None] > 0, result, image).astype(np.float32)


@dataclasses.dataclass
class Completion:
    masked: np.ndarray  # (n, size, size, 3) what the optimisation saw
    generated: np.ndarray  # (n, size, size, 3) G(z) of the projection
    completed: np.ndarray  # (n, size, size, 3) the generated pixels blended into the hole
    mask: np.ndarray  # (size, size), 1 = known
    projection: encoder.Projection


def complete(generator, discriminator, images, *, mask="center", blend="poisson", steps=300, lr=0.05,
             lambda_=1e-3, loss="l1", prior="gaussian", prior_weight=0.01, seed=0, batch_size=64, progress=True):
    """Fill the hole of a mask in each face: project with the pixel loss counted only where the mask keeps
    pixels (Yeh et al.'s contextual loss, L1 as bamos), then blend G(z) into the hole."""
    size = generator.output_shape[1]
    known = make_mask(mask, size, seed=seed)
    targets = encoder.as_images(images, size)
    projection = encoder.project(generator, discriminator, targets, steps=steps, lr=lr, lambda_=lambda_, loss=loss,
                         prior=prior, prior_weight=prior_weight, mask=None if mask == "lowres" else known,
                         lowres_factor=LOWRES_FACTOR if mask == "lowres" else None, batch_size=batch_size,
                         seed=seed, progress=progress)
    masked = np.stack([masked_view(image, known, mask) for image in targets])
    completed = np.stack([blend_into_hole(image, generated, known, blend=blend)
                          for image, generated in zip(targets, projection.images)])
    return Completion(masked, projection.images, completed, known, projection)


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = runs.OneLineParser(prog="complete.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--run", required=True, help="the GAN run directory")
    add("--mask", default="center", help=f"which pixels are missing: {', '.join(MASKS)}")
    add("--blend", default="poisson", choices=BLENDS, help="how G(z) goes into the hole")
    add("--pixel-loss", dest="loss", default="l1", choices=encoder.PIXEL_LOSSES, help="pixel loss on the known pixels")
    encoder.add_input_flags(add)
    encoder.add_projection_flags(add)
    parser.set_defaults(steps=300)
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    make_mask(args.mask, 8)  # a bad mask name fails before anything loads
    run = dcgan.load_run(args.run, kind="gan")
    faces, names, _ = encoder.input_faces(args, run.config)
    completion = complete(run.generator, run.discriminator, faces, mask=args.mask, blend=args.blend,
                          steps=args.steps, lr=args.lr, lambda_=args.lambda_, loss=args.loss,
                          prior=args.prior or encoder.default_prior(run.config), prior_weight=args.prior_weight,
                          seed=args.seed,
                          batch_size=args.batch_size)
    out = args.out or os.path.join(run.directory, "encoder", "completions")
    for index, name in enumerate(names):
        triple = np.stack([data_prep.to_float(faces[index]), completion.masked[index], completion.completed[index]])
        path = data_prep.save_grid(os.path.join(out, f"{os.path.splitext(name)[0]}_{args.mask}.png"), triple,
                                   columns=3)
        print(f"wrote {path} (original, masked, completed)")


if __name__ == "__main__":
    runs.run_cli(main)
