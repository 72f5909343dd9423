"""Image augmentations, written once: DiffAugment's differentiable transforms of every image a GAN's
discriminator sees (Zhao et al. 2020), and the generator and camera artifacts that the texture-robust attribute
CNN trains with. Both act on float batches (n, height, width, 3) in [-1, 1] inside a TensorFlow graph.

dcgan.py and evaluate.py import this module; it imports only runs (for the backend).
"""

import runs  # noqa: F401  (chooses the Keras backend and loads TensorFlow quietly)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


# ----------------------------------------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random,
# differentiable transforms on every image D sees, real or generated, in D's step and in G's, so that D cannot
# memorise the training faces and G still gets gradients through the transform. Images are in [-1, 1].

DIFF_AUGMENTS = ("color", "translation", "cutout")


def parse_diff_augment(policy):
    """'color,translation,cutout' -> a tuple of transform names ('' -> none)."""
    names = tuple(name.strip() for name in (policy or "").split(",") if name.strip())
    unknown = [name for name in names if name not in DIFF_AUGMENTS]
    if unknown:
        raise ValueError(f"unknown DiffAugment transform {unknown[0]!r}; choose from {', '.join(DIFF_AUGMENTS)}")
    return names


def _per_image_uniform(images, seed, low, high):
    batch = keras.ops.shape(images)[0]
    return keras.ops.cast(keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed), images.dtype)


def augment_color(images, seed):
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), each drawn per image."""
    images = images + _per_image_uniform(images, seed, -0.5, 0.5)
    mean = keras.ops.mean(images, axis=3, keepdims=True)
    images = (images - mean) * _per_image_uniform(images, seed, 0.0, 2.0) + mean
    mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
    return (images - mean) * _per_image_uniform(images, seed, 0.5, 1.5) + mean


def _shift_axis(images, shifts, axis):
    """Move each image by its own whole number of pixels along `axis` (1: rows, 2: columns), zeros coming in."""
    size = images.shape[axis]
    source = tf.range(size)[None, :] - shifts[:, None]  # (batch, size): the pixel each output pixel comes from
    inside = tf.cast((source >= 0) & (source < size), images.dtype)
    moved = tf.gather(images, tf.clip_by_value(source, 0, size - 1), axis=axis, batch_dims=1)
    return moved * (inside[:, :, None, None] if axis == 1 else inside[:, None, :, None])


def augment_translation(images, seed, ratio=0.125):
    """A shift of up to 1/8 of the side in each direction, per image, zero-padded."""
    batch = tf.shape(images)[0]
    limit = int(images.shape[1] * ratio + 0.5)
    for axis in (1, 2):
        shifts = keras.random.randint((batch,), -limit, limit + 1, seed=seed, dtype="int32")
        images = _shift_axis(images, shifts, axis)
    return images


def augment_cutout(images, seed, ratio=0.5):
    """One square of half the side set to zero, centred on any pixel (clipped at the border), per image."""
    batch, size = tf.shape(images)[0], images.shape[1]
    side = int(size * ratio + 0.5)
    start = keras.random.randint((batch, 2), 0, size, seed=seed, dtype="int32") - side // 2  # top-left corner
    grid = tf.range(size)[None, :]
    rows = (grid >= start[:, :1]) & (grid < start[:, :1] + side)  # (batch, size)
    columns = (grid >= start[:, 1:]) & (grid < start[:, 1:] + side)
    hole = tf.cast(rows[:, :, None] & columns[:, None, :], images.dtype)[..., None]  # (batch, size, size, 1)
    return images * (1 - hole)


def diff_augment(images, names, seed):
    """The transforms `names` (parse_diff_augment) in DiffAugment's order: colour, translation, cutout."""
    transforms = {"color": augment_color, "translation": augment_translation, "cutout": augment_cutout}
    for name in DIFF_AUGMENTS:
        if name in names:
            images = transforms[name](images, seed)
    return images


# ----------------------------------------------------------------------------------------------------------
# Artifacts of generators and cameras: the attribute CNN's training augmentation


# What a generator's or a camera's pixels do to a face that a person still reads the same: each training image
# gets each artifact with its probability, at a strength drawn from the range (pixel noise and colour as fractions
# of the 0-1 range). The controls' degradations (blur 0.5 and 1, JPEG 30, 3% noise, 32 pixels and back) lie inside.
ARTIFACTS = {"noise": (0.4, (0.0, 0.05)), "blur": (0.25, (0.3, 1.5)), "jpeg": (0.25, (20, 95)),
             "resize": (0.2, (0.4, 0.8)), "colour": (0.5, (0.1, 0.2)), "shift": (0.5, (3, 0.1))}


def gaussian_blur(images, sigma, *, radius=4):
    """Separable Gaussian blur of a float batch (n, h, w, c) with one standard deviation (pixels), reflected edges."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-0.5 * tf.square(offsets / sigma))
    weights /= tf.reduce_sum(weights)
    channels = tf.shape(images)[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(weights, [-1, 1, 1, 1]), [1, 1, channels, 1])  # (9, 1, c, 1)
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, tf.transpose(rows, [1, 0, 2, 3]), [1, 1, 1, 1], "VALID")


def add_artifacts(images, generator):
    """A float [-1, 1] batch with ARTIFACTS applied, each image drawing its own (tf.random.Generator `generator`):
    the texture-robust classifier's training input."""
    count, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]

    def chosen(name):  # (count, 1, 1, 1) bool: the images that get this artifact
        return generator.uniform([count, 1, 1, 1]) < ARTIFACTS[name][0]

    def strength(name, shape=()):
        low, high = ARTIFACTS[name][1]
        return generator.uniform(shape, low, high)

    pixels = (images + 1.0) / 2.0  # [0, 1]
    low, high = ARTIFACTS["colour"][1]
    brightness = generator.uniform([count, 1, 1, 1], -low, low)
    contrast = generator.uniform([count, 1, 1, 1], 1.0 - high, 1.0 + high)
    grey = tf.reduce_mean(pixels, axis=-1, keepdims=True)
    saturation = generator.uniform([count, 1, 1, 1], 1.0 - high, 1.0 + high)
    coloured = grey + saturation * (pixels - grey)
    coloured = tf.reduce_mean(coloured, axis=[1, 2, 3], keepdims=True) * (1 - contrast) + contrast * coloured
    pixels = tf.where(chosen("colour"), coloured + brightness, pixels)
    shift, scale = ARTIFACTS["shift"][1]
    size = tf.cast(tf.cast(tf.stack([height, width]), tf.float32) * generator.uniform([], 1 - scale, 1 + scale),
                   tf.int32)
    moved = tf.image.resize_with_crop_or_pad(tf.image.resize(pixels, size), height, width)
    moved = tf.roll(moved, generator.uniform([2], -shift, shift + 1, dtype=tf.int32), axis=[1, 2])
    pixels = tf.where(chosen("shift"), moved, pixels)
    pixels = tf.where(chosen("blur"), gaussian_blur(pixels, strength("blur")), pixels)
    small = tf.cast(tf.cast(tf.stack([height, width]), tf.float32) * strength("resize"), tf.int32)
    resized = tf.image.resize(tf.image.resize(pixels, small, antialias=True), [height, width])
    pixels = tf.where(chosen("resize"), resized, pixels)
    qualities = tf.cast(strength("jpeg", [count]), tf.int32)
    compressed = tf.map_fn(lambda pair: tf.image.adjust_jpeg_quality(tf.clip_by_value(pair[0], 0.0, 1.0), pair[1]),
                           (pixels, qualities), fn_output_signature=tf.float32)
    pixels = tf.where(chosen("jpeg"), tf.reshape(compressed, tf.shape(pixels)), pixels)
    noisy = pixels + strength("noise", [count, 1, 1, 1]) * generator.normal(tf.shape(pixels))
    pixels = tf.where(chosen("noise"), noisy, pixels)
    return tf.clip_by_value(pixels, 0.0, 1.0) * 2.0 - 1.0
