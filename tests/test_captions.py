"""nar.captions: CLDR keys, reading annotations (plain and derived), the caption sampler."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from nar import captions, npm_packages
from tests.text_fixture import write_fake_cache


def test_caption_key_ignores_variation_selectors_and_pads():
    assert captions.caption_key("0023-FE0F-20E3") == captions.caption_key("23-20e3") == "0023-20E3"
    assert captions.caption_key("1f44b_1f3fd") == "1F44B-1F3FD"
    assert captions.key_of_text("❤️") == captions.key_of_text("❤") == "2764"
    assert captions.key_to_text("1F1EF-1F1F5") == "🇯🇵"
    assert captions.key_of_text(captions.key_to_text("1F9D1-200D-1F91D-200D-1F9D1")) == "1F9D1-200D-1F91D-200D-1F9D1"


def test_cldr_members_are_the_chosen_locales_only():
    assert len(captions.LOCALES) == 15 and captions.LOCALES[0] == "en"
    plain, derived = captions.CLDR_SOURCES
    assert plain.package == "cldr-annotations-full" and derived.package == "cldr-annotations-derived-full"
    assert "package/annotations/ja/annotations.json" in plain.members
    assert "package/annotationsDerived/zh/annotations.json" in derived.members
    assert all(s.version == "48.2.0" and s.licence == "Unicode-3.0" for s in captions.CLDR_SOURCES)
    assert len(plain.members) == len(derived.members) == 16   # 15 locales + the licence


def test_read_annotations_plain_and_derived(tmp_path):
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps({"annotations": {"identity": {}, "annotations": {
        "😀": {"default": ["face", "grin"], "tts": ["grinning face"]}, "{": {"default": ["brace"]}}}}))
    derived = tmp_path / "d.json"
    derived.write_text(json.dumps({"annotationsDerived": {"annotations": {
        "👋🏽": {"default": ["hand", "medium skin tone"], "tts": ["waving hand: medium skin tone"]}}}}))
    a, d = captions.read_annotations(plain), captions.read_annotations(derived)
    assert a["1F600"] == captions.Annotation("grinning face", ("face", "grin"))
    assert a["007B"].name is None and a["007B"].keywords == ("brace",)
    assert d["1F44B-1F3FD"].name == "waving hand: medium skin tone"
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a CLDR annotations.json"):
        captions.read_annotations(tmp_path / "bad.json")


def test_load_annotations_merges_plain_and_derived_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(npm_packages, "npm_pack", lambda *a: pytest.fail("tried to download"))
    cache = write_fake_cache(tmp_path / "cache")
    ann = captions.load_annotations(cache)
    assert set(ann) == set(captions.LOCALES)
    assert ann["en"]["1F600"].name == "grinning face"             # plain
    assert ann["en"]["1F1EF-1F1F5"].name == "flag: Japan"         # derived
    assert ann["en"]["0023-20E3"].name == "keycap: #"
    assert ann["de"]["1F44B-1F3FD"].name == "winkende Hand: mittlere Hautfarbe"
    assert ann["ko"] == {}
    assert "LICENSE V3" in captions.cldr_licence_text(cache)


def test_missing_locale_in_cache_says_what_to_do(tmp_path):
    cache = write_fake_cache(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="delete"):
        captions.load_annotations(cache, ("en", "xx"))


ENTRY = {"names": {"en": "cat face", "de": "Katzengesicht", "ja": "猫の顔"},
         "keywords": {"en": ["cat", "face", "pet"], "de": ["Katze"]}}


def test_sample_caption_mixes_english_names_keywords_and_other_locales():
    rng = random.Random(0)
    drawn = Counter()
    for _ in range(3000):
        text = captions.sample_caption(ENTRY, rng)
        if text == "cat face":
            drawn["en name"] += 1
        elif set(text.split(", ")) <= set(ENTRY["keywords"]["en"]):
            drawn["en keywords"] += 1
        else:
            assert text in ("Katzengesicht", "猫の顔", "Katze")
            drawn["other"] += 1
    assert abs(drawn["en name"] / 3000 - 0.4) < 0.04
    assert abs(drawn["en keywords"] / 3000 - 0.2) < 0.04
    assert abs(drawn["other"] / 3000 - 0.4) < 0.04


def test_sample_caption_falls_back_to_english():
    rng = random.Random(1)
    only_en = {"names": {"en": "cookie"}, "keywords": {}}
    assert {captions.sample_caption(only_en, rng) for _ in range(50)} == {"cookie"}
