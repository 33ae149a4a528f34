"""The text-to-image emoji set: every emoji artwork of the four image packages (nar/data.py lists
them), skin tones included, with its CLDR names and keywords in 15 languages (nar/captions.py).

    python -m nar.data text --out data/emoji_text [--size 64] [--cache DIR] [--seed 0]

Writes train.npz / test.npz (`images` uint8 [N, S, S, 3], `emoji` int64 index into the caption
table, `labels` int64: the 12-class label of nar/data.py where the emoji is in one of its classes,
else -1, `source`), captions.json (one entry per emoji: hexcode, character, names and keywords
per locale, split) and meta.json (written last). An emoji here is one code point sequence, so
"waving hand: medium skin tone" is its own emoji; the split holds out whole base emojis (all
renditions, all skin tones) so every test caption and picture is unseen.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .captions import CLDR_ATTRIBUTION, CLDR_LICENCE, CLDR_SOURCES, CLDR_VERSION, LOCALES, Annotation, \
    caption_key, cldr_licence_text, key_to_text, load_annotations
from .checkpoint import atomic_write
from .data import CLASS_NAMES, DEFAULT_CACHE, SOURCES, SUBGROUP_TO_LABEL, Item, list_sources, render_all, \
    split_by_emoji, write_npz

TEXT_TEST_FRACTION = 0.10
NO_CLASS = -1


def captioned_items(items: Sequence[Item], english: Mapping[str, Annotation]) -> tuple[list[Item], Counter]:
    """The renditions whose own code points have an English CLDR name; one rendition per
    (source, emoji). Also returns why the others were dropped."""
    kept, dropped, seen = [], Counter(), set()
    for item in items:
        key = caption_key(item.hexcode) if item.hexcode else ""
        if not key:
            dropped["no code points"] += 1
        elif english.get(key) is None or english[key].name is None:
            dropped["no English CLDR name"] += 1
        elif (item.source, key) in seen:
            dropped["duplicate rendition"] += 1
        else:
            seen.add((item.source, key))
            kept.append(item)
    return kept, dropped


def caption_table(items: Sequence[Item], annotations: Mapping[str, Mapping[str, Annotation]],
                  held_out: set[str]) -> list[dict]:
    """One entry per emoji (sorted by caption key): what captions.json holds."""
    by_key: dict[str, Item] = {}
    for item in sorted(items, key=lambda i: (i.source, i.path.name)):
        by_key.setdefault(caption_key(item.hexcode), item)
    table = []
    for key in sorted(by_key):
        item = by_key[key]
        names = {loc: a[key].name for loc, a in annotations.items() if key in a and a[key].name}
        keywords = {loc: list(a[key].keywords) for loc, a in annotations.items()
                    if key in a and a[key].keywords}
        table.append({"hexcode": key, "char": key_to_text(key), "base": item.emoji,
                      "subgroup": item.subgroup, "label": SUBGROUP_TO_LABEL.get(item.subgroup, NO_CLASS),
                      "split": "test" if item.emoji in held_out else "train",
                      "names": names, "keywords": keywords})
    return table


def locale_coverage(table: Sequence[dict], locales: Sequence[str]) -> dict:
    return {loc: {"names": sum(loc in e["names"] for e in table),
                  "keywords": sum(loc in e["keywords"] for e in table)} for loc in locales}


def build_text(items: Sequence[Item], annotations: Mapping[str, Mapping[str, Annotation]], out: Path,
               size: int, seed: int, licence_text: str = "") -> dict:
    """Caption, split, render and write; returns the meta.json dict."""
    start = time.monotonic()
    (out / "meta.json").unlink(missing_ok=True)   # written last: a cut-short run looks unfinished
    kept, dropped = captioned_items(items, annotations["en"])
    _log(f"{len(kept)} of {len(items)} renditions have an English CLDR name; dropped {dict(dropped)}")
    # Stratified by class (-1: no class), whole base emojis, seeded hash: nar/data.py's split.
    strata = [(i, SUBGROUP_TO_LABEL.get(i.subgroup, NO_CLASS)) for i in kept]
    splits = split_by_emoji(strata, TEXT_TEST_FRACTION, seed)
    held_out = {i.emoji for i, _ in splits["test"]}
    table = caption_table(kept, annotations, held_out)
    index = {e["hexcode"]: n for n, e in enumerate(table)}
    atomic_write(out / "captions.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8"))
    summary = {}
    for split, rows in splits.items():
        _log(f"{split}: rendering {len(rows)} images at {size} px")
        emoji = np.array([index[caption_key(i.hexcode)] for i, _ in rows], np.int64)
        # one label per emoji (packages may file one emoji under different subgroups)
        labels = np.array([table[e]["label"] for e in emoji.tolist()], np.int64)
        write_npz(out / f"{split}.npz", images=render_all([i.path for i, _ in rows], size), emoji=emoji,
                  labels=labels,
                  source=np.array([i.source for i, _ in rows]))
        summary[split] = {"images": len(rows), "emojis": len(set(emoji.tolist())),
                          "base_emojis": len({i.emoji for i, _ in rows}),
                          "images_with_class": int((labels != NO_CLASS).sum()),
                          "per_source": dict(sorted(Counter(i.source for i, _ in rows).items()))}
    meta = {
        "kind": "emoji_text",
        "class_names": list(CLASS_NAMES),
        "no_class_label": NO_CLASS,
        "image_size": size,
        "seed": seed,
        "test_fraction_of_emojis": TEXT_TEST_FRACTION,
        "emojis": len(table),
        "locales": list(annotations),
        "locale_coverage": locale_coverage(table, list(annotations)),
        "dropped_renditions": dict(dropped),
        "splits": summary,
        "held_out_emojis": sorted(held_out),
        "build_seconds": round(time.monotonic() - start, 1),
        "sources": [{"name": s.name, "package": s.package, "version": s.version,
                     "licence": s.licence, "attribution": s.attribution} for s in SOURCES],
        "captions": {"packages": [s.package for s in CLDR_SOURCES], "version": CLDR_VERSION,
                     "licence": CLDR_LICENCE, "attribution": CLDR_ATTRIBUTION, "licence_text": licence_text},
    }
    atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, ensure_ascii=False),
                                                                      encoding="utf-8"))
    return meta


def prepare_text(out: Path, size: int = 64, cache: Path = DEFAULT_CACHE, seed: int = 0) -> dict:
    """Fetch (or reuse) the image and CLDR packages and build the text set in `out`."""
    start = time.monotonic()
    annotations = load_annotations(cache, LOCALES)
    meta = build_text(list_sources(cache), annotations, Path(out), size, seed, cldr_licence_text(cache))
    for split, s in meta["splits"].items():
        _log(f"{split}: {s['images']} images of {s['emojis']} emojis ({s['base_emojis']} base emojis)")
    _log(f"{meta['emojis']} emojis; names per locale "
         f"{ {loc: c['names'] for loc, c in meta['locale_coverage'].items()} }")
    _log(f"wrote {out} in {time.monotonic() - start:.1f} s")
    return meta


def _log(message: str) -> None:
    print(f"[text data] {message}", flush=True)
