"""Emoji captions: names and keywords in 15 languages from the Unicode CLDR annotations.

The npm packages `cldr-annotations-full` (single emoji: "grinning face") and
`cldr-annotations-derived-full` (sequences CLDR derives: "flag: Japan", "waving hand: medium skin
tone") are fetched through nar/npm_packages.py's cache; only the chosen locales' files are
extracted. CLDR writes its keys without the emoji-presentation selector FE0F, so every key here
is the code points without FE0F (`caption_key`), the same for a package's hexcode and a character.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .npm_packages import Source, unpacked

CLDR_VERSION = "48.2.0"
LOCALES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "zh", "ko",
                            "ar", "hi", "tr")
CLDR_LICENCE = "Unicode-3.0"
CLDR_ATTRIBUTION = (
    "Emoji names and keywords from the Unicode Common Locale Data Repository (CLDR), "
    f"cldr-json npm packages cldr-annotations-full and cldr-annotations-derived-full {CLDR_VERSION}, "
    "Copyright (c) 2004-2026 Unicode, Inc., Unicode License V3 (https://www.unicode.org/license.txt). "
    "Changes: names and keywords of the listed locales, matched to the artwork's code points.")
# Variation selectors: CLDR drops them, the artwork packages write FE0F in different places.
VARIATION_SELECTORS = {0xFE0E, 0xFE0F}


def _cldr_source(name: str, package: str, folder: str, locales: Sequence[str]) -> Source:
    members = tuple(f"package/{folder}/{loc}/annotations.json" for loc in locales) + ("package/LICENSE",)
    return Source(name, package, CLDR_VERSION, members, CLDR_LICENCE, CLDR_ATTRIBUTION)


CLDR_SOURCES: tuple[Source, ...] = (
    _cldr_source("cldr", "cldr-annotations-full", "annotations", LOCALES),
    _cldr_source("cldr-derived", "cldr-annotations-derived-full", "annotationsDerived", LOCALES),
)


@dataclass(frozen=True)
class Annotation:
    """One emoji in one locale: its short name (CLDR `tts`, may be missing) and keywords (`default`)."""
    name: Optional[str]
    keywords: tuple[str, ...]


def caption_key(hexcode: str) -> str:
    """"0023-FE0F-20E3" or "1f44b_1f3fd" -> "0023-20E3" / "1F44B-1F3FD": upper-case code points,
    four digits at least, without variation selectors."""
    points = [int(p, 16) for p in hexcode.replace("_", "-").split("-") if p]
    return "-".join(f"{p:04X}" for p in points if p not in VARIATION_SELECTORS)


def key_of_text(text: str) -> str:
    """The caption key of an emoji written as characters."""
    return "-".join(f"{ord(c):04X}" for c in text if ord(c) not in VARIATION_SELECTORS)


def key_to_text(key: str) -> str:
    """The characters of a caption key (without FE0F: how CLDR writes them)."""
    return "".join(chr(int(p, 16)) for p in key.split("-"))


def read_annotations(path: Path) -> dict[str, Annotation]:
    """One cldr-json annotations.json (plain or derived) -> {caption key: Annotation}."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        table = (doc.get("annotations") or doc.get("annotationsDerived"))["annotations"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path} is not a CLDR annotations.json ({e})") from e
    out = {}
    for text, entry in table.items():
        names = entry.get("tts") or []
        out[key_of_text(text)] = Annotation(names[0] if names else None, tuple(entry.get("default") or ()))
    return out


def load_annotations(cache: Path, locales: Sequence[str] = LOCALES) -> dict[str, dict[str, Annotation]]:
    """{locale: {caption key: Annotation}}, plain and derived annotations merged (plain first)."""
    dirs = [unpacked(source, cache) for source in CLDR_SOURCES]
    result = {}
    for locale in locales:
        merged: dict[str, Annotation] = {}
        for package_dir, source in zip(dirs, CLDR_SOURCES):
            folder = source.members[0].split("/")[1]
            path = package_dir / folder / locale / "annotations.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: the cache holds another set of locales; delete "
                    f"{package_dir.parent} to extract it again")
            for key, annotation in read_annotations(path).items():
                merged.setdefault(key, annotation)
        result[locale] = merged
    return result


def cldr_licence_text(cache: Path) -> str:
    return (unpacked(CLDR_SOURCES[0], cache) / "LICENSE").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Captions for training

ENGLISH_NAME, ENGLISH_KEYWORDS = 0.4, 0.2   # the rest (0.4): a name or keywords in another locale


def keyword_caption(keywords: Sequence[str], rng: random.Random, most: int = 3) -> str:
    """A few keywords in random order, joined: "cat, kitten"."""
    return ", ".join(rng.sample(list(keywords), min(len(keywords), rng.randint(1, most))))


def sample_caption(entry: Mapping, rng: random.Random) -> str:
    """One random caption of a captions.json entry: the English name (40%), a few English
    keywords (20%), or a name or keywords in another locale that has them (40%). Not truncated:
    the tokenizer's `truncate` fits it to the text encoder."""
    names, keywords = entry["names"], entry.get("keywords", {})
    draw = rng.random()
    if draw >= ENGLISH_NAME + ENGLISH_KEYWORDS:
        others = sorted(loc for loc in set(names) | set(keywords) if loc != "en")
        if others:
            locale = rng.choice(others)
            if keywords.get(locale) and (rng.random() < 0.5 or not names.get(locale)):
                return keyword_caption(keywords[locale], rng)
            return names[locale]
    if draw >= ENGLISH_NAME and keywords.get("en"):
        return keyword_caption(keywords["en"], rng)
    return names["en"]
