"""The pure parts of nar.data: class table, keys, capping, split, rendering, files, loader."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nar import data, npm_packages
from nar.images import DatasetMissingError, load_split, to_tensor
from nar.data import Item


# --- class table ------------------------------------------------------------------------------

def test_class_names_are_sorted_and_ten_to_twelve():
    assert list(data.CLASS_NAMES) == sorted(data.CLASS_SUBGROUPS)
    assert 10 <= len(data.CLASS_NAMES) <= 12
    assert all(name.isidentifier() and name.islower() for name in data.CLASS_NAMES)


def test_every_subgroup_belongs_to_one_class():
    listed = [sg for sgs in data.CLASS_SUBGROUPS.values() for sg in sgs]
    assert len(listed) == len(set(listed)) == len(data.SUBGROUP_TO_LABEL)


@pytest.mark.parametrize("subgroup, name", [
    ("country-flag", "flag"), ("subdivision-flag", "flag"), ("face-smiling", "smiley"),
    ("face-concerned", "smiley"), ("animal-mammal", "mammal"), ("animal-marine", "bird_fish"),
    ("food-fruit", "fruit_veg"), ("transport-air", "vehicle"), ("heart", "heart"),
    ("time", "clock"), ("person-role", "person"), ("clothing", "clothing"), ("keycap", "sign"),
    ("hand-fingers-open", "hand"),
])
def test_subgroup_maps_to_class(subgroup, name):
    assert data.CLASS_NAMES[data.SUBGROUP_TO_LABEL[subgroup]] == name


def test_label_items_drops_unmapped_subgroups():
    items = [_item("1F600", "face-smiling"), _item("1F46A", "family"), _item("2615", "drink")]
    labelled = data.label_items(items)
    assert [(i.emoji, data.CLASS_NAMES[lab]) for i, lab in labelled] == [("1F600", "smiley")]


def test_subgroup_spellings_agree():
    assert data.normalize_subgroup("sky & weather") == "sky-weather"
    assert data.normalize_subgroup("Light & Video") == "light-video"
    assert data.normalize_subgroup("face-smiling") == "face-smiling"


# --- emoji identity ---------------------------------------------------------------------------

def test_emoji_key_ignores_variation_selectors_and_skin_tones():
    assert data.emoji_key("0023-FE0F-20E3") == data.emoji_key("0023-20e3") == "0023-20E3"
    assert data.emoji_key("1F44B-1F3FD") == "1F44B"
    assert (data.emoji_key("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FF")
            == data.emoji_key("1F9D1-200D-1F91D-200D-1F9D1"))
    assert data.emoji_key("1F1EF-1F1F5") != data.emoji_key("1F1FA-1F1F8")


def test_slug_matches_fluent_file_names():
    assert data.slug("A button (blood type)") == "a-button-blood-type"
    assert data.slug("piñata") == "pinata"
    assert data.slug("keycap: *") == "keycap"


def test_list_datasource_gives_skin_tones_the_base_key(tmp_path):
    img = tmp_path / "img" / "google" / "64"
    img.mkdir(parents=True)
    for name in ("1f44b.png", "1f44b-1f3fb.png", "1f600.png"):
        (img / name).write_bytes(b"png")
    entries = [
        {"unified": "1F44B", "image": "1f44b.png", "subcategory": "hand-fingers-open",
         "has_img_google": True,
         "skin_variations": {"1F3FB": {"image": "1f44b-1f3fb.png", "has_img_google": True},
                             "1F3FC": {"image": "1f44b-1f3fc.png", "has_img_google": True}}},
        {"unified": "1F600", "image": "1f600.png", "subcategory": "face-smiling",
         "has_img_google": False},
    ]
    (tmp_path / "emoji.json").write_text(json.dumps(entries))
    items = data.list_datasource(tmp_path, "google")
    # the missing 1F3FC file and the entry without a Google image are skipped
    assert [(i.emoji, i.skin_tone, i.path.name) for i in items] == [
        ("1F44B", False, "1f44b.png"), ("1F44B", True, "1f44b-1f3fb.png")]


def test_list_fluent_maps_names_and_tones_through_openmoji(tmp_path):
    entries = [
        _openmoji("1F600", "grinning face", "face-smiling"),
        _openmoji("1F44B", "waving hand", "hand-fingers-open"),
        _openmoji("1F44B-1F3FB", "waving hand: light skin tone", "hand-fingers-open", "1F44B"),
        _openmoji("1F917", "smiling face with open hands", "face-hand"),
        _openmoji("E000", "openmoji extra", "face-smiling", group="extras-openmoji"),
    ] + [_openmoji(f"F{i:03X}", name, "person") for i, name in enumerate(
        set(data.FLUENT_NAMES.values()) - {"smiling face with open hands"})]
    (tmp_path / "om" / "data").mkdir(parents=True)
    (tmp_path / "om" / "data" / "openmoji.json").write_text(json.dumps(entries))
    flat = tmp_path / "fl" / "icons" / "flat"
    flat.mkdir(parents=True)
    for stem in ("grinning-face", "waving-hand-default", "waving-hand-medium-dark",
                 "hugging-face", "openmoji-extra", "not-an-emoji"):
        (flat / f"{stem}.svg").write_text("<svg/>")
    items = {i.path.stem: i for i in data.list_fluent(tmp_path / "fl", "fluent", tmp_path / "om")}
    assert set(items) == {"grinning-face", "waving-hand-default", "waving-hand-medium-dark",
                          "hugging-face"}
    assert (items["waving-hand-default"].emoji, items["waving-hand-default"].skin_tone) == (
        "1F44B", False)
    assert (items["waving-hand-medium-dark"].emoji, items["waving-hand-medium-dark"].skin_tone) \
        == ("1F44B", True)
    assert items["hugging-face"].subgroup == "face-hand"


# --- capping and split ------------------------------------------------------------------------

def test_spread_order_covers_every_emoji_before_repeating():
    items = [_item(f"E{e}", "person", source=s, skin=skin)
             for e in range(5) for s in ("a", "b") for skin in (False, True)]
    order = data.spread_order(items, seed=0)
    assert sorted(order) == list(range(len(items)))
    assert len({items[i].emoji for i in order[:5]}) == 5
    # untoned renditions of every emoji come before any skin-tone variant
    assert not any(items[i].skin_tone for i in order[:10])
    assert all(items[i].skin_tone for i in order[10:])


def test_cap_classes_limits_the_ratio():
    labelled = ([(_item(f"P{e}-{k}", "person"), 0) for e in range(50) for k in range(4)]
                + [(_item(f"H{e}", "heart"), 1) for e in range(20)])
    kept = data.cap_classes(labelled, ratio=3, seed=0)
    counts = Counter(lab for _, lab in kept)
    assert counts == {0: 60, 1: 20}
    assert len({i.emoji for i, lab in kept if lab == 0}) == 60  # all distinct emojis kept


def test_split_keeps_all_renditions_of_an_emoji_together():
    labelled = _fake_labelled(n_emojis=50, classes=3)
    splits = data.split_by_emoji(labelled, fraction=0.12, seed=0)
    train_keys = {i.emoji for i, _ in splits["train"]}
    test_keys = {i.emoji for i, _ in splits["test"]}
    assert not train_keys & test_keys
    assert len(splits["train"]) + len(splits["test"]) == len(labelled)
    for label in range(3):
        n_test = len({i.emoji for i, lab in splits["test"] if lab == label})
        assert n_test == 6  # round(0.12 * 50)
    # every rendition (source, skin tone) of a test emoji is in test
    per_key = Counter(i.emoji for i, _ in labelled)
    assert all(per_key[k] == sum(1 for i, _ in splits["test"] if i.emoji == k) for k in test_keys)


def test_split_is_deterministic_and_seeded():
    labelled = _fake_labelled(n_emojis=50, classes=2)
    held = data.held_out_emojis(labelled, 0.12, seed=0)
    assert held == data.held_out_emojis(list(reversed(labelled)), 0.12, seed=0)
    assert held != data.held_out_emojis(labelled, 0.12, seed=1)


def test_cap_does_not_favour_held_out_emojis():
    # 100 emojis x 4 renditions capped to 130: 30 emojis keep two renditions. If the cap and
    # the split ranked emojis alike, the 12 test emojis would all be among them (24 images).
    labelled = ([(_item(f"P{e}", "person", source=s), 0) for e in range(100)
                 for s in ("google", "twitter", "openmoji", "fluent")]
                + [(_item(f"H{e}-{s}", "heart"), 1) for e in range(26) for s in "ab"])
    kept = data.cap_classes(labelled, ratio=2.5, seed=0)
    test = data.split_by_emoji(kept, 0.12, seed=0)["test"]
    n_test_people = sum(1 for _, lab in test if lab == 0)
    assert 12 <= n_test_people <= 18


def test_small_class_still_gets_a_test_emoji():
    labelled = [(_item(f"E{e}", "heart"), 0) for e in range(3)]
    assert len(data.held_out_emojis(labelled, 0.12, seed=0)) == 1


# --- rendering --------------------------------------------------------------------------------

def test_composite_on_white():
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128], [10, 20, 30, 255]]],
                    np.uint8)
    rgb = data.composite_on_white(rgba)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, 0].tolist() == [255, 255, 255]      # transparent -> white
    assert rgb[0, 1].tolist() == [255, 0, 0]          # opaque keeps its colour
    assert rgb[0, 2].tolist() == [127, 127, 127]      # half-transparent black -> mid grey
    assert rgb[0, 3].tolist() == [10, 20, 30]


def test_render_png_and_svg_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = [0, 0, 255, 255]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    (tmp_path / "b.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
        '<rect x="18" y="18" width="36" height="36" fill="#00ff00"/></svg>')
    png, svg = data.render(tmp_path / "a.png", 32), data.render(tmp_path / "b.svg", 32)
    for image in (png, svg):
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert image[0, 0].tolist() == [255, 255, 255]
    assert png[16, 16].tolist() == [0, 0, 255]
    assert svg[16, 16].tolist() == [0, 255, 0]


# --- package extraction -----------------------------------------------------------------------

def test_safe_extract_takes_only_wanted_regular_files(tmp_path):
    tarball = _tar(tmp_path / "p.tgz", {"package/img/a.png": b"a", "package/other.txt": b"x"},
                   symlink=("package/img/link.png", "/etc/passwd"))
    dest = tmp_path / "out"
    assert npm_packages.safe_extract(tarball, dest, ["package/img/"]) == 1
    assert (dest / "package/img/a.png").read_bytes() == b"a"
    assert not (dest / "package/other.txt").exists()
    assert not (dest / "package/img/link.png").exists()


def test_safe_extract_refuses_paths_outside_the_target(tmp_path):
    tarball = _tar(tmp_path / "p.tgz", {"package/../../evil.txt": b"x"})
    with pytest.raises(ValueError, match="escapes"):
        npm_packages.safe_extract(tarball, tmp_path / "out", ["package/"])
    assert not (tmp_path / "evil.txt").exists()


# --- files and loader -------------------------------------------------------------------------

def test_build_writes_a_data_set_that_loads_back(tmp_path):
    colours = [(255, 0, 0), (0, 160, 0), (0, 0, 255)]
    labelled = []
    for label, name in enumerate(["country-flag", "face-smiling", "heart"]):
        for e in range(10):
            for source in ("google", "openmoji"):
                path = tmp_path / "src" / f"{label}-{e}-{source}.png"
                path.parent.mkdir(exist_ok=True)
                Image.new("RGBA", (64, 64), colours[label] + (255,)).save(path)
                labelled.append((Item(source, f"K{label}-{e}", name, path, False),
                                 data.SUBGROUP_TO_LABEL[name]))
    out = tmp_path / "emoji"
    meta = data.build(labelled, out, size=16, seed=0, cap_ratio=3)

    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "train.npz"]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["class_names"] == list(data.CLASS_NAMES)
    assert meta["image_size"] == 16
    assert {s["licence"] for s in meta["sources"]} == {
        "Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "MIT"}
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.class_names == list(data.CLASS_NAMES)
    assert (len(train), len(test)) == (meta["splits"]["train"]["images"],
                                       meta["splits"]["test"]["images"]) == (54, 6)
    assert meta["splits"]["test"]["per_source"] == {"google": 3, "openmoji": 3}
    for split in (train, test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (16, 16, 3)
        assert split.labels.dtype == np.int64
        for name, colour in zip(["country-flag", "face-smiling", "heart"], colours):
            assert (split.images[split.labels == data.SUBGROUP_TO_LABEL[name]] == colour).all()
    with np.load(out / "test.npz") as npz:
        assert not set(npz["emoji"]) & set(np.load(out / "train.npz")["emoji"])


def test_missing_data_set_names_the_command(tmp_path):
    with pytest.raises(DatasetMissingError, match="python -m nar.data prepare --out"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError):  # callers may catch the standard error
        load_split(tmp_path / "nowhere", "test")
    with pytest.raises(ValueError, match="split"):
        load_split(tmp_path, "validation")


def test_to_tensor_scales_to_minus_one_one():
    images = np.array([[[[0, 255, 128]]]], np.uint8)
    tensor = to_tensor(images)
    assert tensor.shape == (1, 3, 1, 1) and tensor.dtype == torch.float32
    assert tensor.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    with pytest.raises(ValueError):
        to_tensor(images[0])


# --- helpers ----------------------------------------------------------------------------------

def _item(key: str, subgroup: str, source: str = "google", skin: bool = False) -> Item:
    return Item(source, key, subgroup, Path(f"{key}-{source}-{int(skin)}.png"), skin)


def _fake_labelled(n_emojis: int, classes: int) -> list[tuple[Item, int]]:
    return [(_item(f"C{c}E{e}", "x", source=s, skin=skin), c)
            for c in range(classes) for e in range(n_emojis)
            for s in ("google", "twitter") for skin in (False, True)]


def _openmoji(hexcode, annotation, subgroup, base="", group="people-body") -> dict:
    return {"hexcode": hexcode, "annotation": annotation, "subgroups": subgroup, "group": group,
            "skintone": 1 if base else "", "skintone_base_hexcode": base}


def _tar(path: Path, files: dict[str, bytes], symlink: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            tar.addfile(info)
    return path
