"""The synthetic CelebA: cartoon faces drawn procedurally in exactly CelebA's on-disk layout, with the attributes
they were drawn with. It is the embedded default of every script (CelebA cannot be downloaded everywhere):
`data_prep.resolve_data_dir()` renders it on first use.

Each face is drawn from its attributes (sample_attributes gives CelebA-like rates and correlations) plus nuisance
(skin tone, background, clothing, a small turn of the head, scale, shift, light), and every label is visible in
its image: a combination the drawing cannot show (bangs under a hat, sideburns on a bald head) is never sampled.

Usage (through data_prep's command line, which every script shares):
    python data_prep.py synth --out data/synthetic-celeba --count 20000 --seed 0
    python data_prep.py synth --out /tmp/faces --count 2000                      # CPU-sized: about 2 seconds
"""

import json
import multiprocessing
import os

import cv2
import numpy as np
from tqdm import tqdm

# CelebA's on-disk format, which the renderer writes and data_prep.py reads.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")  # CelebA's 40, in CelebA's order
LANDMARK_COLUMNS = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]
ALIGNED_WIDTH, ALIGNED_HEIGHT = 178, 218
# Mean (x, y) of left eye, right eye, nose, left and right mouth corner in CelebA's aligned images.
CELEBA_TEMPLATE_LANDMARKS = np.array([[69, 111], [108, 111], [88, 135], [72, 152], [105, 152]], np.float32)


class DataError(ValueError):
    """Bad input data or arguments: the message is one line that names the problem."""


# The 32 attributes that vary: 31 drawn by render_face, and "Attractive", which is not drawn but labelled by a
# rule on drawn attributes (Young, not Blurry, not Bags_Under_Eyes, not Chubby, not Big_Nose). The other 8 are
# always -1: Double_Chin, High_Cheekbones, Oval_Face, Pointy_Nose, Straight_Hair, Wavy_Hair, Wearing_Necklace,
# Wearing_Necktie.
RENDERED_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Pale_Skin", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Young")
HAIR_COLOURS = {"Black_Hair": (28, 24, 24), "Brown_Hair": (100, 62, 35), "Blond_Hair": (225, 190, 110),
                "Gray_Hair": (175, 175, 178), "other": (150, 60, 30)}  # "other": auburn, no CelebA label


def sample_attributes(rng, *, male=None):
    """All 40 CelebA attributes as booleans, with CelebA-like rates and its correlations (beards and baldness
    on men, make-up and earrings mostly on women, grey hair mostly on older faces). Only what the drawing shows
    is labelled: a hat hides the hairline, so no bangs or receding hairline under one; no sideburns on a bald
    head. The random draws stay in one fixed order whatever is kept, so `male` (True or False) forces the sex
    and every other draw stays as it was: the same person, as this data would have drawn them as a man or woman."""
    drawn_male, young = rng.random() < 0.42, rng.random() < 0.75
    male = drawn_male if male is None else bool(male)
    p = lambda male_rate, female_rate: rng.random() < (male_rate if male else female_rate)  # noqa: E731
    a = dict.fromkeys(CELEBA_ATTRIBUTES, False)
    a.update(Male=male, Young=young, Smiling=rng.random() < 0.48, Eyeglasses=rng.random() < (0.1 if young else 0.2),
             Wearing_Hat=rng.random() < 0.08, Blurry=rng.random() < 0.06, Narrow_Eyes=rng.random() < 0.12,
             Big_Lips=rng.random() < 0.24, Pale_Skin=rng.random() < 0.06, Chubby=p(0.1, 0.04),
             Big_Nose=p(0.4, 0.1), Bushy_Eyebrows=p(0.3, 0.06), Arched_Eyebrows=p(0.05, 0.45),
             Bags_Under_Eyes=rng.random() < (0.12 if young else 0.45), Rosy_Cheeks=p(0.01, 0.12))
    a["Mouth_Slightly_Open"] = rng.random() < (0.7 if a["Smiling"] else 0.25)
    a["Bald"] = male and rng.random() < (0.03 if young else 0.3)
    if not a["Bald"]:
        weights = {"Black_Hair": 0.3, "Brown_Hair": 0.3, "Blond_Hair": 0.1 if male else 0.3,
                   "Gray_Hair": 0.03 if young else 0.6, "other": 0.1}
        names = list(weights)
        colour = names[rng.choice(len(names), p=np.array(list(weights.values())) / sum(weights.values()))]
        a[colour] = colour != "other"
        a["Bangs"] = p(0.08, 0.3) and not a["Wearing_Hat"]
        a["Receding_Hairline"] = male and not young and rng.random() < 0.35 and not a["Wearing_Hat"]
    if male:
        a.update(Mustache=rng.random() < 0.15, Goatee=rng.random() < 0.2,
                 Sideburns=rng.random() < 0.15 and not a["Bald"])
        a["5_o_Clock_Shadow"] = not a["Goatee"] and rng.random() < 0.25
    else:
        a.update(Wearing_Lipstick=rng.random() < 0.75, Heavy_Makeup=rng.random() < 0.5,
                 Wearing_Earrings=rng.random() < 0.4)
    a["No_Beard"] = not (a["Goatee"] or a["Mustache"])
    a["Attractive"] = young and not (a["Blurry"] or a["Bags_Under_Eyes"] or a["Chubby"] or a["Big_Nose"])
    return a


def _draw_look(rng):
    """Every random choice of a face that is not an attribute, drawn in a fixed order, so that two faces made
    from equally seeded generators differ only in the attributes that differ."""
    return {"skin": rng.random(), "background": rng.integers(30, 230, 3), "background_top": rng.integers(30, 230, 3),
            "clothes": rng.integers(20, 220, 3), "hat": rng.integers(20, 200, 3),
            "iris": rng.integers(30, 120, 3), "hair_jitter": rng.integers(-15, 16, 3),
            "angle": rng.uniform(-5, 5), "scale": rng.uniform(0.93, 1.07), "shift": rng.uniform(-4, 4, 2),
            "light": rng.uniform(-0.18, 0.18), "long_hair": rng.random(), "makeup": rng.integers(60, 200, 3)}


def _colour(values):
    return tuple(int(v) for v in np.clip(values, 0, 255))


def _skin(attributes, look):
    dark, light = np.array([95, 62, 45]), np.array([235, 198, 172])
    tone = 0.95 + 0.05 * look["skin"] if attributes["Pale_Skin"] else 0.85 * look["skin"]
    skin = dark + tone * (light - dark)
    return skin if not attributes["Pale_Skin"] else skin * 0.9 + np.array([250, 240, 238]) * 0.1


def _draw_hair(canvas, a, look, front):
    """Hair behind the face (front=False), or over it (front=True): sideburns, which show below a hat's brim,
    and unless a hat covers them the cap of hair, a receding hairline and bangs."""
    if a["Bald"]:
        return
    colour = next((HAIR_COLOURS[name] for name in HAIR_COLOURS if name != "other" and a.get(name)), HAIR_COLOURS["other"])
    colour = _colour(np.array(colour) + look["hair_jitter"])
    if not front:
        length = 70 if a["Male"] else 120 + int(40 * look["long_hair"])
        cv2.ellipse(canvas, (89, 110), (56 if a["Male"] else 60, length // 2 + 20), 0, 180, 360, colour, -1, cv2.LINE_AA)
        if not a["Male"]:
            cv2.rectangle(canvas, (29, 110), (149, 90 + length), colour, -1)
        return
    if a["Sideburns"]:
        for x in (49, 121):
            cv2.rectangle(canvas, (x, 96), (x + 8, 132), colour, -1)
    if a["Wearing_Hat"]:
        return
    top = 82 if a["Receding_Hairline"] else 76
    cv2.ellipse(canvas, (89, top + 4), (46, 34), 0, 180, 360, colour, -1, cv2.LINE_AA)
    if a["Receding_Hairline"]:  # bare temples: the hairline recedes at both sides
        cv2.ellipse(canvas, (66, top + 2), (12, 12), 0, 0, 360, _colour(_skin(a, look)), -1, cv2.LINE_AA)
        cv2.ellipse(canvas, (112, top + 2), (12, 12), 0, 0, 360, _colour(_skin(a, look)), -1, cv2.LINE_AA)
    if a["Bangs"]:
        cv2.rectangle(canvas, (52, top - 6), (126, 97), colour, -1)


def _draw_face(canvas, a, look):
    skin = _colour(_skin(a, look))
    width = 41 + (6 if a["Chubby"] else 0) + (3 if a["Male"] else 0)
    cv2.rectangle(canvas, (74, 160), (104, 200), skin, -1)  # neck
    cv2.ellipse(canvas, (89, 232), (80, 40), 0, 0, 360, _colour(look["clothes"]), -1, cv2.LINE_AA)  # shoulders
    for x in (89 - width - 2, 89 + width + 2):  # ears
        cv2.ellipse(canvas, (x, 122), (7, 12), 0, 0, 360, skin, -1, cv2.LINE_AA)
        if a["Wearing_Earrings"]:
            cv2.circle(canvas, (x, 138), 4, (240, 205, 70), -1, cv2.LINE_AA)
    cv2.ellipse(canvas, (89, 120), (width, 58), 0, 0, 360, skin, -1, cv2.LINE_AA)
    if a["Male"]:  # a broader, squarer jaw
        cv2.rectangle(canvas, (89 - width + 6, 120), (89 + width - 6, 166), skin, -1)
        cv2.ellipse(canvas, (89, 166), (width - 6, 12), 0, 0, 180, skin, -1, cv2.LINE_AA)
    if a["5_o_Clock_Shadow"]:
        shadow = canvas.copy()
        cv2.ellipse(shadow, (89, 158), (width - 4, 22), 0, 0, 180, _colour(np.array(skin) * 0.6), -1, cv2.LINE_AA)
        cv2.addWeighted(shadow, 0.55, canvas, 0.45, 0, dst=canvas)
    if not a["Young"]:  # forehead lines and folds beside the mouth
        line = _colour(np.array(skin) * 0.7)
        for y in (86, 91):
            cv2.line(canvas, (74, y), (104, y), line, 1, cv2.LINE_AA)
        cv2.line(canvas, (76, 138), (70, 154), line, 2, cv2.LINE_AA)
        cv2.line(canvas, (101, 138), (107, 154), line, 2, cv2.LINE_AA)
    if a["Rosy_Cheeks"]:  # only rosy cheeks blush: make-up is drawn on the eyes, so the two stay separable
        blush = canvas.copy()
        for x in (66, 112):
            cv2.circle(blush, (x, 134), 10, (235, 90, 110), -1, cv2.LINE_AA)
        cv2.addWeighted(blush, 0.5, canvas, 0.5, 0, dst=canvas)
    return skin


def _draw_eyes(canvas, a, look, skin):
    height = 2 if a["Narrow_Eyes"] else 5
    for (x, y), side in zip(CELEBA_TEMPLATE_LANDMARKS[:2].astype(int), (-1, 1)):
        if a["Heavy_Makeup"]:  # eye shadow above, eyeliner below
            cv2.ellipse(canvas, (x, y - 4), (11, 6), 0, 180, 360, _colour(look["makeup"]), -1, cv2.LINE_AA)
            cv2.ellipse(canvas, (x, y + 1), (10, 5), 0, 0, 180, (25, 20, 30), 2, cv2.LINE_AA)
        if a["Bags_Under_Eyes"]:
            cv2.ellipse(canvas, (x, y + 5), (8, 4), 0, 0, 180, _colour(np.array(skin) * 0.65), 2, cv2.LINE_AA)
        cv2.ellipse(canvas, (x, y), (9, height), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(canvas, (x, y), min(height, 4), _colour(look["iris"]), -1, cv2.LINE_AA)
        brow = 3 + (1 if a["Male"] else 0) + (3 if a["Bushy_Eyebrows"] else 0)
        lift = 5 if a["Arched_Eyebrows"] else 0
        points = np.array([[x - 11, y - 9], [x + side * 2, y - 12 - lift], [x + 11, y - 9]])
        if side < 0:
            points = points[::-1]
        cv2.polylines(canvas, [points], False, (45, 35, 30), brow, cv2.LINE_AA)
    if a["Eyeglasses"]:
        for x, y in CELEBA_TEMPLATE_LANDMARKS[:2].astype(int):
            cv2.rectangle(canvas, (x - 15, y - 9), (x + 15, y + 9), (20, 20, 25), 3, cv2.LINE_AA)
        cv2.line(canvas, (84, 108), (93, 108), (20, 20, 25), 3, cv2.LINE_AA)


def _draw_mouth(canvas, a, skin):
    nose_shade = _colour(np.array(skin) * 0.75)
    nostril = 10 if a["Big_Nose"] else 6
    cv2.line(canvas, (88, 116), (86, 134), nose_shade, 2, cv2.LINE_AA)
    cv2.ellipse(canvas, (88, 135), (nostril, 4 if a["Big_Nose"] else 3), 0, 0, 180, nose_shade, 2, cv2.LINE_AA)
    lips = (200, 30, 60) if a["Wearing_Lipstick"] else _colour(np.array(skin) * np.array([0.85, 0.55, 0.55]))
    thickness = 5 if a["Big_Lips"] else 3
    if a["Mouth_Slightly_Open"]:
        cv2.ellipse(canvas, (88, 153), (13, 6), 0, 0, 360, (60, 20, 25), -1, cv2.LINE_AA)
        if a["Smiling"]:
            cv2.rectangle(canvas, (79, 149), (97, 152), (240, 240, 240), -1)
    if a["Smiling"]:  # corners up: a lower arc
        cv2.ellipse(canvas, (88, 147), (17, 9), 0, 10, 170, lips, thickness, cv2.LINE_AA)
    else:
        cv2.line(canvas, (73, 152), (104, 152), lips, thickness, cv2.LINE_AA)
    if a["Mustache"]:
        cv2.ellipse(canvas, (88, 144), (17, 5), 0, 180, 360, (40, 30, 25), -1, cv2.LINE_AA)
        cv2.rectangle(canvas, (71, 143), (105, 146), (40, 30, 25), -1)
    if a["Goatee"]:
        cv2.ellipse(canvas, (88, 166), (12, 9), 0, 0, 360, (40, 30, 25), -1, cv2.LINE_AA)


def _draw_hat(canvas, a, look):
    if a["Wearing_Hat"]:
        colour = _colour(look["hat"])
        cv2.rectangle(canvas, (48, 22), (130, 80), colour, -1)
        cv2.ellipse(canvas, (89, 82), (66, 11), 0, 0, 360, _colour(np.array(colour) * 0.8), -1, cv2.LINE_AA)


def render_face(attributes, rng):
    """One 218x178 RGB face in CelebA's aligned pose and its 5 landmarks (x, y), drawn with `attributes`.

    Nuisance (skin tone, background, a small turn of the head, scale, shift, light) is drawn from `rng` first,
    in a fixed order, so equally seeded generators give the same face except for the attributes that differ:
    the property the tests and later edit measurements rely on."""
    look = _draw_look(rng)
    a = attributes
    top, bottom = np.array(look["background_top"], np.float32), np.array(look["background"], np.float32)
    rows = np.linspace(0.0, 1.0, ALIGNED_HEIGHT, dtype=np.float32)[:, None, None]
    canvas = np.ascontiguousarray(np.broadcast_to(top + rows * (bottom - top), (ALIGNED_HEIGHT, ALIGNED_WIDTH, 3))
                                  .astype(np.uint8))
    _draw_hair(canvas, a, look, front=False)
    skin = _draw_face(canvas, a, look)
    _draw_hair(canvas, a, look, front=True)
    _draw_eyes(canvas, a, look, skin)
    _draw_mouth(canvas, a, skin)
    _draw_hat(canvas, a, look)
    # A small in-plane turn, scale and shift about the eyes' midpoint keeps the eyes near CelebA's rows.
    matrix = cv2.getRotationMatrix2D((88.5, 111.0), look["angle"], look["scale"])
    matrix[:, 2] += look["shift"]
    canvas = cv2.warpAffine(canvas, matrix, (ALIGNED_WIDTH, ALIGNED_HEIGHT), borderMode=cv2.BORDER_REPLICATE)
    light = 1.0 + look["light"] * np.linspace(-1.0, 1.0, ALIGNED_WIDTH, dtype=np.float32)[None, :, None]
    canvas = np.clip(canvas * light, 0, 255).astype(np.uint8)
    if a["Blurry"]:
        canvas = cv2.GaussianBlur(canvas, (0, 0), 2.5)
    landmarks = CELEBA_TEMPLATE_LANDMARKS @ matrix[:, :2].T + matrix[:, 2]
    return canvas, landmarks.astype(np.float32)


RENDER_SETTINGS = "synthetic_celeba.json"  # the renderer's seed and count, written beside the label files
SEX_ONLY = {True: ("5_o_Clock_Shadow", "Bald", "Goatee", "Mustache", "Sideburns"),  # drawn on men only
            False: ("Heavy_Makeup", "Wearing_Earrings", "Wearing_Lipstick")}  # and on women only
HAIR_LABELS = tuple(name for name in HAIR_COLOURS if name != "other")


def with_attribute(attributes, name):
    """The labels of the same face with `name` added and the fewest others changed so that the drawing shows
    it and every label stays true: a hair colour replaces the other colours and a bald head; a bald head takes
    the hair's colour, bangs, receding hairline and sideburns; a hat hides bangs and a receding hairline, which
    take it off again; No_Beard removes the goatee and mustache; Attractive's rule (young, not blurry, chubby or
    big-nosed, no bags under the eyes) is made true. No_Beard and Attractive are then re-derived by their rules."""
    if name not in RENDERED_ATTRIBUTES:
        raise DataError(f"{name!r} is not drawn by the synthetic CelebA")
    a = dict(attributes, **{name: True})
    cleared = {"Bald": (*HAIR_LABELS, "Bangs", "Receding_Hairline", "Sideburns"),
               "Wearing_Hat": ("Bangs", "Receding_Hairline"), "Bangs": ("Wearing_Hat", "Bald"),
               "Receding_Hairline": ("Wearing_Hat", "Bald"), "Sideburns": ("Bald",), "No_Beard": ("Goatee", "Mustache"),
               **{hair: (*(other for other in HAIR_LABELS if other != hair), "Bald") for hair in HAIR_LABELS}}
    a.update(dict.fromkeys(cleared.get(name, ()), False))
    if name == "Attractive":
        a.update(Young=True, Blurry=False, Bags_Under_Eyes=False, Chubby=False, Big_Nose=False)
    a["No_Beard"] = not (a["Goatee"] or a["Mustache"])
    a["Attractive"] = a["Young"] and not (a["Blurry"] or a["Bags_Under_Eyes"] or a["Chubby"] or a["Big_Nose"])
    return a


def face_index(file_name):
    """The 0-based index behind a rendered file name ("000123.jpg" is face 122), or None for any other name."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return int(stem) - 1 if stem.isdigit() and int(stem) > 0 else None


def draw_edit(index, name, *, seed=0):
    """(before, after): face `index` of the synthetic CelebA rendered with `seed`, as written, and the same face
    (the same nuisance draws) with `name` added by with_attribute. 218x178 RGB uint8 each."""
    rng = np.random.default_rng([seed, index])
    attributes = sample_attributes(rng)
    state = rng.bit_generator.state
    before = render_face(attributes, rng)[0]
    rng.bit_generator.state = state
    return before, render_face(with_attribute(attributes, name), rng)[0]


def as_other_sex(attributes):
    """The fewest label changes that turn a face into the other sex of this data: Male flipped, and what the data
    draws only on the old sex (SEX_ONLY) taken off; a bald head gets the unlabelled auburn hair."""
    a = dict(attributes, Male=not attributes["Male"], **dict.fromkeys(SEX_ONLY[bool(attributes["Male"])], False))
    a["No_Beard"] = not (a["Goatee"] or a["Mustache"])
    return a


def draw_other_sex(index, *, seed=0, minimal=False):
    """(labels, image): face `index` of the synthetic CelebA rendered with `seed`, drawn as the other sex. By
    default as this data draws that sex, every other random draw kept (sample_attributes's `male`): the same age,
    smile and glasses, with the beards, make-up, lipstick, earrings and hair colours the data gives that sex;
    with `minimal`, the face changed only by as_other_sex. Either way the same background, skin, pose and light
    as the face as written. Labels as 40 booleans."""
    rng = np.random.default_rng([seed, index])
    attributes = sample_attributes(rng)  # the face as written; rng now draws its nuisance
    if minimal:
        attributes = as_other_sex(attributes)
    else:
        attributes = sample_attributes(np.random.default_rng([seed, index]), male=not attributes["Male"])
    return attributes, render_face(attributes, rng)[0]


def rendered_seed(data_dir):
    """The seed a synthetic CelebA was rendered with (RENDER_SETTINGS beside its labels; 0, the default, for a copy
    rendered before that file was written)."""
    try:
        with open(os.path.join(data_dir, RENDER_SETTINGS)) as handle:
            return int(json.load(handle)["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def is_rendered(image_dir, file_names, *, seed=0, tolerance=4.0):
    """Whether the first of `file_names` in `image_dir` is this renderer's face of that name with `seed` (mean
    absolute difference at most `tolerance` of 255, which JPEG's rounding stays well within)."""
    if not file_names or face_index(file_names[0]) is None:
        return False
    written = cv2.imread(os.path.join(image_dir, file_names[0]), cv2.IMREAD_COLOR)
    rng = np.random.default_rng([seed, face_index(file_names[0])])
    drawn = render_face(sample_attributes(rng), rng)[0]
    if written is None or written.shape != drawn.shape:
        return False
    return float(np.abs(cv2.cvtColor(written, cv2.COLOR_BGR2RGB).astype(np.float32) - drawn).mean()) <= tolerance


def _render_chunk(job):
    """Render, encode and write the faces numbered first to last - 1 (1-based file names); returns their label rows."""
    image_dir, seed, start, stop = job
    rows = []
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        attributes = sample_attributes(rng)
        image, landmarks = render_face(attributes, rng)
        name = f"{index + 1:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        with open(os.path.join(image_dir, name), "wb") as handle:
            handle.write(encoded.tobytes())
        values = [1 if attributes[key] and key in RENDERED_ATTRIBUTES else -1 for key in CELEBA_ATTRIBUTES]
        rows.append((name, values, np.round(landmarks).astype(int).ravel().tolist()))
    return rows


def _write_label_files(directory, rows):
    """list_attr_celeba.txt, list_eval_partition.txt and list_landmarks_align_celeba.txt in CelebA's format."""
    count = len(rows)
    train_end, validation_end = round(count * 0.803), round(count * 0.901)
    if count >= 3:  # every split non-empty
        train_end, validation_end = min(max(train_end, 1), count - 2), min(max(validation_end, train_end + 1), count - 1)
    with open(os.path.join(directory, "list_attr_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(CELEBA_ATTRIBUTES)} \n")
        handle.writelines(name + "".join(f" {value:2d}" for value in values) + "\n" for name, values, _ in rows)
    with open(os.path.join(directory, "list_eval_partition.txt"), "w") as handle:
        handle.writelines(f"{name} {0 if i < train_end else 1 if i < validation_end else 2}\n"
                          for i, (name, _, _) in enumerate(rows))
    with open(os.path.join(directory, "list_landmarks_align_celeba.txt"), "w") as handle:
        handle.write(f"{count}\n{' '.join(LANDMARK_COLUMNS)}\n")
        handle.writelines(name + "".join(f" {value:4d}" for value in points) + "\n" for name, _, points in rows)


def render_synthetic_celeba(out_dir, *, count=20000, seed=0, workers=2, progress=True):
    """Render `count` faces into `out_dir` in CelebA's aligned layout, with ground-truth attribute, partition
    (CelebA's 80/10/10 proportions, in file order) and landmark files. Image i depends only on (seed, i), so
    the files are the same for any number of workers. Written into a temporary directory, then renamed."""
    if count < 1:
        raise DataError(f"--count must be positive, got {count}")
    if os.path.exists(out_dir):
        raise DataError(f"{out_dir} already exists; remove it or choose another --out")
    temporary = f"{out_dir.rstrip(os.sep)}.tmp-{os.getpid()}"
    image_dir = os.path.join(temporary, "img_align_celeba")
    os.makedirs(image_dir)
    chunk = 250
    jobs = [(image_dir, seed, start, min(start + chunk, count)) for start in range(0, count, chunk)]
    rows = []
    with tqdm(total=count, desc="rendering", unit="img", disable=not progress, mininterval=1.0) as bar:
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for chunk_rows in pool.imap(_render_chunk, jobs):
                    rows.extend(chunk_rows)
                    bar.update(len(chunk_rows))
        else:
            for job in jobs:
                rows.extend(_render_chunk(job))
                bar.update(job[3] - job[2])
    _write_label_files(temporary, rows)
    with open(os.path.join(temporary, RENDER_SETTINGS), "w") as handle:
        json.dump({"seed": seed, "count": count}, handle)
    os.replace(temporary, out_dir)
    return out_dir

