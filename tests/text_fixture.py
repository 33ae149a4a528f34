"""A tiny offline stand-in for the npm cache: the four image packages and the two CLDR packages,
laid out as nar/npm_packages.py extracts them, so the text set builds without a download."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from nar.captions import CLDR_SOURCES, LOCALES
from nar.data import SOURCES

# hexcode (as the packages write it), English name, subgroup, OpenMoji skin-tone base, colour
EMOJIS = [
    ("1F600", "grinning face", "face-smiling", "", (250, 200, 0)),
    ("1F642", "slightly smiling face", "face-smiling", "", (240, 190, 10)),
    ("1F44B", "waving hand", "hand-fingers-open", "", (230, 160, 100)),
    ("1F44B-1F3FD", "waving hand: medium skin tone", "hand-fingers-open", "1F44B", (160, 100, 60)),
    ("1F44D", "thumbs up", "hand-fingers-closed", "", (220, 150, 90)),
    ("1F1EF-1F1F5", "flag: Japan", "country-flag", "", (200, 0, 30)),
    ("1F1EB-1F1F7", "flag: France", "country-flag", "", (0, 40, 150)),
    ("0023-FE0F-20E3", "keycap: #", "keycap", "", (90, 90, 200)),
    ("2615", "hot beverage", "drink", "", (120, 70, 20)),
    ("1F431", "cat face", "cat-face", "", (255, 150, 0)),
    ("1F36A", "cookie", "food-sweet", "", (200, 140, 60)),
]
NO_NAME = ("1FAE8", "shaking face", "face-neutral-skeptical", "", (10, 10, 10))  # artwork CLDR lacks here
GERMAN = {"1F600": ("grinsendes Gesicht", ["Gesicht", "grinsen"]), "1F1EF-1F1F5": ("Flagge: Japan", ["Flagge"]),
          "1F44B-1F3FD": ("winkende Hand: mittlere Hautfarbe", ["winken", "mittlere Hautfarbe"])}
JAPANESE = {"1F600": ("にっこり笑う", ["笑顔", "顔"]), "2615": ("ホット飲料", ["コーヒー"])}


def chars(hexcode: str, fe0f: bool = False) -> str:
    points = [int(p, 16) for p in hexcode.split("-") if fe0f or p != "FE0F"]
    return "".join(map(chr, points))


def colour_of(hexcode_without_fe0f: str) -> tuple[int, int, int]:
    return {h.replace("-FE0F", ""): c for h, _, _, _, c in EMOJIS + [NO_NAME]}[hexcode_without_fe0f]


def _package(cache: Path, source) -> Path:
    root = cache / f"{source.package}-{source.version}" / "package"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (64, 64), tuple(colour) + (255,)).save(path)


def _svg(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
                    f'<rect x="0" y="0" width="72" height="72" fill="rgb{tuple(colour)}"/></svg>')


def _annotations(entries: dict[str, tuple[str, list[str]]], derived: bool) -> str:
    table = {chars(h): {"default": kw, "tts": [name]} for h, (name, kw) in entries.items()}
    return json.dumps({"annotationsDerived" if derived else "annotations":
                       {"identity": {"language": "xx"}, "annotations": table}}, ensure_ascii=False)


def write_fake_cache(cache: Path) -> Path:
    """Every package nar.data text needs, tiny, in `cache`; returns `cache`."""
    src = {s.name: s for s in SOURCES}
    for name in ("google", "twitter"):
        root = _package(cache, src[name])
        entries = {}
        for hexcode, _, subgroup, base, colour in EMOJIS + [NO_NAME]:
            image = hexcode.lower() + ".png"
            _png(root / "img" / name / "64" / image, colour)
            if base:
                tone = hexcode.split("-")[-1]
                entries[base].setdefault("skin_variations", {})[tone] = {
                    "unified": hexcode, "image": image, f"has_img_{name}": True}
            else:
                entries[hexcode] = {"unified": hexcode, "image": image, "subcategory": subgroup,
                                    f"has_img_{name}": True}
        (root / "emoji.json").write_text(json.dumps(list(entries.values())))
    root = _package(cache, src["openmoji"])
    om = []
    for hexcode, name, subgroup, base, colour in EMOJIS + [NO_NAME]:
        om.append({"hexcode": hexcode, "annotation": name, "subgroups": subgroup, "group": "g",
                   "skintone": 3 if base else "", "skintone_base_hexcode": base})
        _svg(root / "color" / "svg" / f"{hexcode}.svg", colour)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "openmoji.json").write_text(json.dumps(om))
    root = _package(cache, src["fluent"])   # only some emojis: a package may lack artwork
    for stem, hexcode in (("grinning-face", "1F600"), ("waving-hand-default", "1F44B"),
                          ("waving-hand-medium", "1F44B-1F3FD"), ("hot-beverage", "2615")):
        _svg(root / "icons" / "flat" / f"{stem}.svg", colour_of(hexcode))

    english = {h: (name, name.replace(":", "").split()) for h, name, _, _, _ in EMOJIS}
    plain, derived = CLDR_SOURCES
    for source, is_derived in ((plain, False), (derived, True)):
        root = _package(cache, source)
        (root / "LICENSE").write_text("UNICODE LICENSE V3 (fixture)")
        folder = source.members[0].split("/")[1]
        for locale in LOCALES:
            table = {"en": english, "de": GERMAN, "ja": JAPANESE}.get(locale, {})
            # derived files hold sequences (flags, keycaps, skin tones); plain ones single emoji
            table = {h: v for h, v in table.items() if (len(chars(h)) > 1) == is_derived}
            path = root / folder / locale / "annotations.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_annotations(table, is_derived), encoding="utf-8")
    return cache


def build_text_set(tmp: Path, size: int = 16) -> Path:
    """`python -m nar.data text` on the fake cache (any download attempt fails the test); the set's folder."""
    import pytest

    from nar import data, npm_packages
    cache = write_fake_cache(tmp / "cache")
    real_pack = npm_packages.npm_pack
    npm_packages.npm_pack = lambda *a: pytest.fail("tried to download")
    try:
        data.main(["text", "--out", str(tmp / "out"), "--cache", str(cache), "--size", str(size)])
    finally:
        npm_packages.npm_pack = real_pack
    return tmp / "out"
