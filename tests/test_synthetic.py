"""The synthetic CelebA: CelebA's on-disk format, determinism, correlations, and attributes that show."""

import os

import numpy as np
import pytest

import data_prep
import synthetic_celeba

EYE_BAND = slice(98, 124)
MOUTH_BAND = slice(140, 162)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_celeba.render_synthetic_celeba(str(tmp_path_factory.mktemp("synth") / "celeba"), count=40, seed=3,
                                             workers=1, progress=False)


def render_variants(*changes, seed=11, **fixed):
    """The same face (same nuisance draws) rendered once per dict of attribute changes."""
    base = dict(synthetic_celeba.sample_attributes(np.random.default_rng(seed)), **fixed)
    return [synthetic_celeba.render_face(dict(base, **change), np.random.default_rng([seed, 1]))[0].astype(np.float32)
            for change in changes]


def pair(attribute, value_a, value_b, **fixed):
    return render_variants({attribute: value_a}, {attribute: value_b}, **fixed)


def band_change(images, band):
    return float(np.abs(images[0][band] - images[1][band]).mean())


def test_files_parse_as_celeba(synthetic):
    celeba = data_prep.read_celeba(synthetic, strict=True)
    assert celeba.attribute_names == list(data_prep.CELEBA_ATTRIBUTES)
    assert len(celeba.attributes) == 40 and set(np.unique(celeba.attributes.to_numpy())) <= {-1, 1}
    assert sorted(celeba.partition.unique().tolist()) == [0, 1, 2]
    assert list(celeba.landmarks.columns) == data_prep.LANDMARK_COLUMNS
    image = data_prep.read_image_uint8(os.path.join(celeba.image_dir, "000001.jpg"))
    assert image.shape == (218, 178, 3)
    with open(os.path.join(synthetic, "list_attr_celeba.txt")) as handle:
        assert handle.readline().strip() == "40"


def test_attributes_not_drawn_are_always_absent(synthetic):
    attributes = data_prep.read_celeba(synthetic).attributes
    for name in set(data_prep.CELEBA_ATTRIBUTES) - set(synthetic_celeba.RENDERED_ATTRIBUTES):
        assert (attributes[name] == -1).all(), name
    assert len(synthetic_celeba.RENDERED_ATTRIBUTES) >= 20


def test_same_seed_same_files_other_seed_other_files(synthetic, tmp_path):
    render = synthetic_celeba.render_synthetic_celeba
    again = render(str(tmp_path / "again"), count=40, seed=3, workers=2, progress=False)
    other = render(str(tmp_path / "other"), count=40, seed=4, workers=1, progress=False)
    for name in ("list_attr_celeba.txt", "img_align_celeba/000007.jpg"):
        with open(os.path.join(synthetic, name), "rb") as first, open(os.path.join(again, name), "rb") as second:
            assert first.read() == second.read()
    with open(os.path.join(synthetic, "img_align_celeba/000007.jpg"), "rb") as first, \
            open(os.path.join(other, "img_align_celeba/000007.jpg"), "rb") as second:
        assert first.read() != second.read()


def test_correlations_are_plausible():
    samples = [synthetic_celeba.sample_attributes(np.random.default_rng([5, index])) for index in range(600)]
    women = [a for a in samples if not a["Male"]]
    assert not any(a["Goatee"] or a["Mustache"] or a["Bald"] or a["Sideburns"] for a in women)
    assert all(a["No_Beard"] == (not (a["Goatee"] or a["Mustache"])) for a in samples)
    assert all(not (a["Bald"] and (a["Bangs"] or a["Black_Hair"] or a["Blond_Hair"])) for a in samples)
    assert sum(a["Male"] for a in samples) / len(samples) == pytest.approx(0.42, abs=0.06)
    grey_young = np.mean([a["Gray_Hair"] for a in samples if a["Young"]])
    grey_old = np.mean([a["Gray_Hair"] for a in samples if not a["Young"]])
    assert grey_old > 4 * grey_young


def test_eyeglasses_change_the_eye_band_not_the_mouth():
    images = pair("Eyeglasses", False, True, Wearing_Hat=False)
    assert band_change(images, EYE_BAND) > 10 * max(band_change(images, MOUTH_BAND), 0.1)


def test_smiling_changes_the_mouth_band_not_the_eyes():
    images = pair("Smiling", False, True, Mustache=False)
    assert band_change(images, MOUTH_BAND) > 10 * max(band_change(images, EYE_BAND), 0.1)


def test_hat_changes_the_top_of_the_head():
    images = pair("Wearing_Hat", False, True)
    assert band_change(images, slice(20, 80)) > 20 and band_change(images, MOUTH_BAND) < 0.5


def test_blond_hair_is_brighter_than_black():
    no_hair_colour = dict(Bald=False, Wearing_Hat=False, Black_Hair=False, Brown_Hair=False, Blond_Hair=False,
                          Gray_Hair=False)
    black, blond = render_variants({"Black_Hair": True}, {"Blond_Hair": True}, **no_hair_colour)
    crown = (slice(52, 68), slice(72, 106))
    assert blond[crown].mean() > black[crown].mean() + 60


def test_landmarks_follow_the_head_and_eyes_stay_on_celeba_rows():
    eye_rows = []
    for index in range(200):
        rng = np.random.default_rng([9, index])
        _, landmarks = synthetic_celeba.render_face(synthetic_celeba.sample_attributes(rng), rng)
        eye_rows.extend(landmarks[:2, 1])
        assert np.abs(landmarks - data_prep.CELEBA_TEMPLATE_LANDMARKS).max() < 12
    assert np.abs(np.array(eye_rows) - 111).max() < 8


def test_count_and_existing_directory_are_clear_errors(synthetic, tmp_path):
    with pytest.raises(data_prep.DataError, match="--count must be positive, got 0"):
        synthetic_celeba.render_synthetic_celeba(str(tmp_path / "none"), count=0)
    with pytest.raises(data_prep.DataError, match="already exists"):
        synthetic_celeba.render_synthetic_celeba(synthetic, count=5)


def test_rosy_cheeks_and_make_up_draw_different_things():
    cheeks = (slice(126, 142), slice(56, 76))
    rosy = render_variants({"Rosy_Cheeks": False}, {"Rosy_Cheeks": True}, Heavy_Makeup=False)
    make_up = render_variants({"Heavy_Makeup": False}, {"Heavy_Makeup": True}, Rosy_Cheeks=False)
    assert band_change(rosy, cheeks) > 10 and band_change(make_up, cheeks) < 1
    assert band_change(make_up, EYE_BAND) > 3 * band_change(rosy, EYE_BAND) + 1


def test_every_label_is_drawable():
    """A hat hides the hairline and a bald head has no sideburns: such labels would be invisible, so never drawn."""
    samples = [synthetic_celeba.sample_attributes(np.random.default_rng([6, index])) for index in range(3000)]
    hats = [a for a in samples if a["Wearing_Hat"]]
    assert len(hats) > 150
    assert not any(a["Bangs"] or a["Receding_Hairline"] for a in hats)
    assert not any(a["Sideburns"] for a in samples if a["Bald"])
    assert any(a["Sideburns"] for a in hats)  # sideburns show below the brim, so they stay possible


def test_sideburns_show_under_a_hat():
    sides = (slice(100, 128), slice(50, 57))
    images = pair("Sideburns", False, True, Male=True, Bald=False, Wearing_Hat=True)
    assert band_change(images, sides) > 10


def face(**changes):
    """A face's labels written out: a young clean-shaven brown-haired man with bangs, changed as given."""
    labels = dict.fromkeys(data_prep.CELEBA_ATTRIBUTES, False)
    labels.update(Male=True, Young=True, Brown_Hair=True, Bangs=True, No_Beard=True, Attractive=True)
    return dict(labels, **changes)


def changed(before, after):
    return {name: after[name] for name in before if before[name] != after[name]}


def test_an_added_attribute_changes_only_what_it_implies():
    add = synthetic_celeba.with_attribute
    assert changed(face(), add(face(), "Smiling")) == {"Smiling": True}
    assert changed(face(), add(face(), "Goatee")) == {"Goatee": True, "No_Beard": False}
    assert changed(face(), add(face(), "Bald")) == {"Bald": True, "Brown_Hair": False, "Bangs": False}
    assert changed(face(), add(face(), "Blond_Hair")) == {"Blond_Hair": True, "Brown_Hair": False}
    assert changed(face(), add(face(), "Wearing_Hat")) == {"Wearing_Hat": True, "Bangs": False}
    assert changed(face(Wearing_Hat=True, Bangs=False), add(face(Wearing_Hat=True, Bangs=False), "Bangs")) == {
        "Bangs": True, "Wearing_Hat": False}
    assert changed(face(), add(face(), "Chubby")) == {"Chubby": True, "Attractive": False}  # Attractive's rule
    old = face(Young=False, Chubby=True, Attractive=False)
    assert changed(old, add(old, "Attractive")) == {"Attractive": True, "Young": True, "Chubby": False}
    bearded = face(Mustache=True, No_Beard=False)
    assert changed(bearded, add(bearded, "No_Beard")) == {"No_Beard": True, "Mustache": False}
    with pytest.raises(data_prep.DataError, match="'Wavy_Hair' is not drawn"):
        add(face(), "Wavy_Hair")


def test_a_drawn_edit_is_the_written_face_with_only_the_attribute_added(synthetic):
    image_dir = os.path.join(synthetic, "img_align_celeba")
    assert synthetic_celeba.rendered_seed(synthetic) == 3 and synthetic_celeba.face_index("000007.jpg") == 6
    assert synthetic_celeba.face_index("face.jpg") is None
    assert synthetic_celeba.is_rendered(image_dir, ["000007.jpg"], seed=3)
    assert not synthetic_celeba.is_rendered(image_dir, ["000007.jpg"], seed=4)
    labels = data_prep.read_celeba(synthetic).attributes
    index = next(number for number, name in enumerate(labels.index) if labels.loc[name, "Eyeglasses"] < 0
                 and labels.loc[name, "Wearing_Hat"] < 0)
    before, after = synthetic_celeba.draw_edit(index, "Eyeglasses", seed=3)
    written = data_prep.read_image_uint8(os.path.join(image_dir, f"{index + 1:06d}.jpg")).astype(np.float32)
    assert np.abs(written - before).mean() < 4  # JPEG's rounding only
    images = [before.astype(np.float32), after.astype(np.float32)]
    assert band_change(images, EYE_BAND) > 10 * max(band_change(images, MOUTH_BAND), 0.1)


def test_the_other_sex_keeps_every_other_draw():
    samples = [synthetic_celeba.sample_attributes(np.random.default_rng([5, index])) for index in range(600)]
    for sex in (True, False):  # what SEX_ONLY says each sex alone wears, the sampler agrees
        assert not any(a[name] for a in samples if a["Male"] != sex for name in synthetic_celeba.SEX_ONLY[sex])
    man = next(index for index, a in enumerate(samples) if a["Male"] and a["Goatee"] and not a["Bald"])
    as_woman = synthetic_celeba.sample_attributes(np.random.default_rng([5, man]), male=False)
    assert not as_woman["Male"] and not as_woman["Goatee"] and as_woman["No_Beard"]
    for name in ("Young", "Smiling", "Eyeglasses", "Wearing_Hat", "Narrow_Eyes", "Pale_Skin"):  # drawn first
        assert as_woman[name] == samples[man][name], name
    minimal = synthetic_celeba.as_other_sex(samples[man])
    assert changed(samples[man], minimal) == {name: value for name, value in (
        ("Male", False), ("Goatee", False), ("No_Beard", True), ("Mustache", False), ("Sideburns", False),
        ("5_o_Clock_Shadow", False)) if samples[man][name] != value}


def test_the_other_sex_is_drawn_on_the_same_background_and_pose():
    for index in range(6):
        rng = np.random.default_rng([8, index])
        written = synthetic_celeba.render_face(synthetic_celeba.sample_attributes(rng), rng)[0].astype(np.float32)
        labels, other = synthetic_celeba.draw_other_sex(index, seed=8)
        assert labels["Male"] != synthetic_celeba.sample_attributes(np.random.default_rng([8, index]))["Male"]
        corner = (slice(0, 12), slice(0, 12))  # background, above any hair or hat
        assert np.abs(other.astype(np.float32)[corner] - written[corner]).max() <= 1
        assert np.abs(other.astype(np.float32) - written).mean() > 1  # yet another face
