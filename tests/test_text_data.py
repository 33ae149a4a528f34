"""nar.text_data end to end on a tiny offline fixture: listing, captions, split, images, files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nar import data
from nar.images import DatasetMissingError, load_text_split
from tests.text_fixture import EMOJIS, build_text_set, colour_of


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_text_set(tmp_path_factory.mktemp("text"))


def test_files_and_caption_table(built):
    assert sorted(p.name for p in built.iterdir()) == ["captions.json", "meta.json", "test.npz", "train.npz"]
    table = json.loads((built / "captions.json").read_text(encoding="utf-8"))
    # every fixture emoji with an English name, skin tone included; the one without is dropped
    assert [e["hexcode"] for e in table] == sorted(h.replace("-FE0F", "") for h, *_ in EMOJIS)
    by_hex = {e["hexcode"]: e for e in table}
    assert by_hex["1F1EF-1F1F5"]["names"] == {"en": "flag: Japan", "de": "Flagge: Japan"}
    assert by_hex["1F1EF-1F1F5"]["char"] == "🇯🇵"
    assert by_hex["1F600"]["names"]["ja"] == "にっこり笑う"
    assert by_hex["1F600"]["keywords"]["de"] == ["Gesicht", "grinsen"]
    assert by_hex["1F44B-1F3FD"]["base"] == "1F44B"
    assert by_hex["1F44B-1F3FD"]["split"] == by_hex["1F44B"]["split"]   # tones go with their base
    assert data.CLASS_NAMES[by_hex["1F600"]["label"]] == "smiley"
    assert by_hex["2615"]["label"] == -1 and by_hex["1F431"]["label"] == -1


def test_splits_hold_out_whole_emojis_and_images_match_captions(built):
    meta = json.loads((built / "meta.json").read_text(encoding="utf-8"))
    train, test = load_text_split(built, "train"), load_text_split(built, "test")
    assert train.captions == test.captions and len(train.captions) == meta["emojis"] == len(EMOJIS)
    held = set(meta["held_out_emojis"])
    assert held and len(held) < len({e["base"] for e in train.captions})
    for split, name in ((train, "train"), (test, "test")):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (16, 16, 3)
        assert split.emoji.dtype == np.int64 and split.labels.dtype == np.int64
        assert len(split) == meta["splits"][name]["images"]
        for image, e, label in zip(split.images, split.emoji, split.labels):
            entry = split.captions[e]
            assert entry["split"] == name and (entry["base"] in held) == (name == "test")
            assert label == entry["label"]
            assert (image[4:12, 4:12] == colour_of(entry["hexcode"])).all()   # the right artwork
    # all renditions of an emoji: 2 PNG packages + OpenMoji, + Fluent for the four it has
    counts = np.bincount(np.concatenate([train.emoji, test.emoji]), minlength=len(EMOJIS))
    fluent = {"1F600", "1F44B", "1F44B-1F3FD", "2615"}
    assert counts.tolist() == [4 if e["hexcode"] in fluent else 3 for e in train.captions]
    assert meta["splits"]["train"]["images"] + meta["splits"]["test"]["images"] == counts.sum()


def test_meta_names_licences_locales_and_coverage(built):
    meta = json.loads((built / "meta.json").read_text(encoding="utf-8"))
    assert meta["locales"][0] == "en" and len(meta["locales"]) == 15
    assert meta["locale_coverage"]["en"]["names"] == len(EMOJIS)
    assert meta["locale_coverage"]["de"]["names"] == 3 and meta["locale_coverage"]["ko"]["names"] == 0
    assert {s["licence"] for s in meta["sources"]} == {"Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "MIT"}
    assert meta["captions"]["licence"] == "Unicode-3.0" and "Unicode, Inc." in meta["captions"]["attribution"]
    assert "LICENSE V3" in meta["captions"]["licence_text"]
    assert meta["dropped_renditions"] == {"no English CLDR name": 3}


def test_missing_text_set_names_the_command(tmp_path):
    with pytest.raises(DatasetMissingError, match="python -m nar.data text --out"):
        load_text_split(tmp_path, "train")
