"""The emoji image data set the bundled models train on: fetched, labelled, split and written
(the runtime loader of the written folders is nar/images.py).

Images are freely licensed emoji artwork shipped on the npm registry (Google Noto, Twemoji,
OpenMoji, Fluent Emoji "flat"), rendered to size x size RGB on white. Labels are merged Unicode
subgroups (`CLASS_SUBGROUPS`): the nine Unicode groups are defined by meaning, not looks, while
a handful of subgroups merged by appearance gives classes a generator can learn and a person can
recognise. The test split holds out whole emojis, so every test image is unseen artwork.

    python -m nar.data prepare --out data/emoji [--size 64] [--cache DIR]
    python -m nar.data moving --emoji data/emoji --out data/moving_emoji   # video clips (nar/moving_emoji.py)
    python -m nar.data text --out data/emoji_text   # every emoji with CLDR captions (nar/text_data.py)
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from .checkpoint import atomic_write
from .images import SPLITS
from .npm_packages import Source, unpacked

DEFAULT_CACHE = Path.home() / ".cache" / "nar-studio" / "npm"
TEST_FRACTION = 0.12
CAP_RATIO = 6.0  # no class may have more than CAP_RATIO x the images of the smallest class (more data beats balance here)

# Class name -> the Unicode emoji subgroups (emoji-test.txt spelling, "&" written "-") it merges.
# Left out on purpose: subgroups whose members share no look (objects, activities, food-prepared,
# place-*, sky-weather, geometric, arrows) and faces that are not round smileys (face-costume,
# cat-face, monkey-face).
CLASS_SUBGROUPS: dict[str, tuple[str, ...]] = {
    "bird_fish": ("animal-bird", "animal-marine"),
    "clock": ("time",),
    "clothing": ("clothing",),
    "flag": ("country-flag", "subdivision-flag", "flag"),
    "fruit_veg": ("food-fruit", "food-vegetable"),
    "hand": ("hand-fingers-open", "hand-fingers-partial", "hand-single-finger",
             "hand-fingers-closed", "hands", "hand-prop"),
    "heart": ("heart",),
    "mammal": ("animal-mammal",),
    "person": ("person", "person-gesture", "person-role", "person-fantasy", "person-activity",
               "person-sport", "person-resting"),
    "sign": ("alphanum", "av-symbol", "keycap", "zodiac", "warning"),
    "smiley": ("face-smiling", "face-affection", "face-tongue", "face-hand",
               "face-neutral-skeptical", "face-sleepy", "face-unwell", "face-hat", "face-glasses",
               "face-concerned", "face-negative"),
    "vehicle": ("transport-ground", "transport-water", "transport-air"),
}
CLASS_NAMES: tuple[str, ...] = tuple(sorted(CLASS_SUBGROUPS))
SUBGROUP_TO_LABEL: dict[str, int] = {
    subgroup: CLASS_NAMES.index(name)
    for name, subgroups in CLASS_SUBGROUPS.items() for subgroup in subgroups}


CHANGES = "Changes: rendered at the data set's image size and composited onto white."
SOURCES: tuple[Source, ...] = (
    Source("google", "emoji-datasource-google", "16.0.0",
           ("package/emoji.json", "package/img/google/64/"), "Apache-2.0",
           "Noto Emoji artwork, Copyright Google Inc., Apache License 2.0 "
           "(https://github.com/googlefonts/noto-emoji); 64 px PNGs from the npm package "
           "emoji-datasource-google by Cal Henderson (MIT). " + CHANGES),
    Source("twitter", "emoji-datasource-twitter", "16.0.0",
           ("package/emoji.json", "package/img/twitter/64/"), "CC-BY-4.0",
           "Twemoji graphics, Copyright Twitter, Inc. and other contributors, licensed under "
           "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/, "
           "https://github.com/jdecked/twemoji); 64 px PNGs from the npm package "
           "emoji-datasource-twitter. " + CHANGES),
    Source("openmoji", "openmoji", "17.0.0",
           ("package/data/openmoji.json", "package/color/svg/"), "CC-BY-SA-4.0",
           "All emojis designed by OpenMoji - the open-source emoji and icon project "
           "(https://openmoji.org). License: CC BY-SA 4.0 "
           "(https://creativecommons.org/licenses/by-sa/4.0/). " + CHANGES
           + " The renders are shared under the same licence."),
    Source("fluent", "fluentui-emoji", "1.3.0",
           ("package/icons/flat/",), "MIT",
           "Fluent Emoji (flat style), Copyright Microsoft Corporation, MIT License "
           "(https://github.com/microsoft/fluentui-emoji); SVGs from the npm package "
           "fluentui-emoji by Mohammad Abu Mattar (MIT). " + CHANGES),
)


@dataclass(frozen=True)
class Item:
    """One rendition of one emoji, before rendering."""
    source: str
    emoji: str       # key shared by every rendition and skin tone of one emoji (see emoji_key)
    subgroup: str
    path: Path
    skin_tone: bool
    hexcode: str = ""  # this rendition's own code points (skin tones included), as its package writes them


# ---------------------------------------------------------------------------------------------
# Listing renditions

SKIN_TONE_MODIFIERS = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}


def emoji_key(hexcode: str) -> str:
    """The key all renditions of one emoji share: code points without FE0F or skin tones.

    Sources disagree on where they write the FE0F variation selector, and skin-tone variants
    must land on the same side of the split as their base emoji.
    """
    parts = hexcode.upper().replace("_", "-").split("-")
    return "-".join(p for p in parts if p != "FE0F" and p not in SKIN_TONE_MODIFIERS)


def normalize_subgroup(name: str) -> str:
    """emoji-datasource writes "sky & weather" where OpenMoji writes "sky-weather"."""
    return re.sub(r"\s*&\s*", "-", name.strip().lower())


def list_datasource(package_dir: Path, source: str) -> list[Item]:
    """emoji-datasource-*: emoji.json names a 64 px PNG per emoji and per skin variation."""
    img_dir = package_dir / "img" / source / "64"
    items = []
    for entry in json.loads((package_dir / "emoji.json").read_text()):
        key, subgroup = emoji_key(entry["unified"]), normalize_subgroup(entry["subcategory"])
        tones = (entry.get("skin_variations") or {}).values()
        variants = [(entry, False)] + [(tone, True) for tone in tones]
        for variant, skin in variants:
            if variant.get(f"has_img_{source}") and (img_dir / variant["image"]).is_file():
                items.append(Item(source, key, subgroup, img_dir / variant["image"], skin,
                                  variant.get("unified", "")))
    return items


def openmoji_entries(package_dir: Path) -> list[dict]:
    """OpenMoji's Unicode emojis; its own extras (private-use code points) are not emoji."""
    entries = json.loads((package_dir / "data" / "openmoji.json").read_text())
    return [e for e in entries if not e["group"].startswith("extras")]


def list_openmoji(package_dir: Path, source: str) -> list[Item]:
    items = []
    for e in openmoji_entries(package_dir):
        path = package_dir / "color" / "svg" / f"{e['hexcode']}.svg"
        if path.is_file():
            skin = e["skintone"] != ""
            key = emoji_key(e["skintone_base_hexcode"] if skin else e["hexcode"])
            items.append(Item(source, key, normalize_subgroup(e["subgroups"]), path, skin, e["hexcode"]))
    return items


# Fluent file stems that differ from the slug of the CLDR name OpenMoji records.
FLUENT_NAMES = {
    "hugging-face": "smiling face with open hands",
    "knocked-out-face": "face with crossed-out eyes",
    "pouting-face": "enraged face", "blackbird": "black bird", "phoenix-bird": "phoenix",
    "keycap-asterisk": "keycap: *", "keycap-hashtag": "keycap: #",
    "red-triangle": "red triangle pointed up", "stuffedbread-flat": "stuffed flatbread",
    "person-blonde-hair": "person: blond hair", "man-blonde-hair": "man: blond hair",
    "woman-blonde-hair": "woman: blond hair", "person-deaf": "deaf person",
    "man-deaf": "deaf man", "woman-deaf": "deaf woman", "person-elf": "elf",
    "person-fairy": "fairy", "person-mage": "mage", "person-genie": "genie",
    "person-zombie": "zombie", "person-vampire": "vampire", "person-superhero": "superhero",
    "person-supervillain": "supervillain", "person-merpeople": "merperson",
    "man-merpeople": "merman", "woman-merpeople": "mermaid",
    "person-with-bunny-ears": "people with bunny ears",
    "man-with-bunny-ears": "men with bunny ears", "woman-with-bunny-ears": "women with bunny ears",
    "person-wrestling": "people wrestling", "man-wrestling": "men wrestling",
    "woman-wrestling": "women wrestling",
}
# "-default" is the yellow base; the others are the five skin tones.
FLUENT_TONES = ("light", "medium-light", "medium", "medium-dark", "dark")  # Fitzpatrick 1-2 ... 6
FLUENT_TONE = re.compile(r"^(.*?)-(default|light|medium-light|medium|medium-dark|dark)$")


def slug(name: str) -> str:
    """CLDR name -> Fluent file stem: "A button (blood type)" -> "a-button-blood-type"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def list_fluent(package_dir: Path, source: str, openmoji_dir: Path) -> list[Item]:
    """Fluent files are named by CLDR short name only, so OpenMoji's table gives code points."""
    entries = openmoji_entries(openmoji_dir)
    by_slug = {slug(e["annotation"]): e for e in entries}
    by_slug.update({stem: by_slug[slug(name)] for stem, name in FLUENT_NAMES.items() if slug(name) in by_slug})
    # (base hexcode, tone 1-5) -> OpenMoji's toned entry, for the rendition's own code points
    toned = {(e["skintone_base_hexcode"], str(e["skintone"])): e for e in entries if e["skintone"] != ""}
    items = []
    for path in sorted((package_dir / "icons" / "flat").glob("*.svg")):
        stem, skin = path.stem, False
        tone = FLUENT_TONE.match(stem)
        if stem not in by_slug and tone and tone.group(1) in by_slug:
            stem, skin = tone.group(1), tone.group(2) != "default"
        entry = by_slug.get(stem)
        if entry is not None:
            hexcode = entry["hexcode"]
            if skin:
                toned_entry = toned.get((hexcode, str(FLUENT_TONES.index(tone.group(2)) + 1)))
                hexcode = toned_entry["hexcode"] if toned_entry else ""
            items.append(Item(source, emoji_key(entry["hexcode"]),
                              normalize_subgroup(entry["subgroups"]), path, skin, hexcode))
    return items


def list_sources(cache: Path) -> list[Item]:
    dirs = {s.name: unpacked(s, cache) for s in SOURCES}
    items = (list_datasource(dirs["google"], "google")
             + list_datasource(dirs["twitter"], "twitter")
             + list_openmoji(dirs["openmoji"], "openmoji")
             + list_fluent(dirs["fluent"], "fluent", dirs["openmoji"]))
    for name, n in Counter(i.source for i in items).items():
        _log(f"{name}: {n} renditions listed")
    return items


# ---------------------------------------------------------------------------------------------
# Choosing, balancing and splitting


def label_items(items: Iterable[Item]) -> list[tuple[Item, int]]:
    """Keep the renditions whose subgroup belongs to a class, with that class's label."""
    return [(i, SUBGROUP_TO_LABEL[i.subgroup]) for i in items if i.subgroup in SUBGROUP_TO_LABEL]


def _rank(seed: int, purpose: str, *parts: str) -> str:
    """A stable pseudo-random sort key: unlike random.shuffle it does not depend on what else
    is in the list, so one emoji's fate survives packages adding or dropping others. `purpose`
    decorrelates the orders: otherwise the emojis the cap favours would be the ones held out."""
    return hashlib.sha256("|".join((str(seed), purpose) + parts).encode()).hexdigest()


def spread_order(items: Sequence[Item], seed: int) -> list[int]:
    """Indices of `items` so that any prefix covers as many distinct emojis as possible.

    Round robin over emojis: first one rendition of every emoji, then a second, ...; within
    an emoji, base (untoned) renditions come before skin-tone variants.
    """
    by_emoji: dict[str, list[int]] = defaultdict(list)
    for idx, item in enumerate(items):
        by_emoji[item.emoji].append(idx)

    def rendition_order(i: int) -> tuple[bool, str]:
        return items[i].skin_tone, _rank(seed, "rendition", items[i].source, items[i].path.name)

    queues = [sorted(idxs, key=rendition_order)
              for _, idxs in sorted(by_emoji.items(), key=lambda kv: _rank(seed, "cap", kv[0]))]
    order = []
    for depth in range(max(map(len, queues), default=0)):
        order.extend(q[depth] for q in queues if depth < len(q))
    return order


def cap_classes(labelled: Sequence[tuple[Item, int]], ratio: float, seed: int
                ) -> list[tuple[Item, int]]:
    """Cut every class to at most `ratio` x the smallest class, keeping emoji variety."""
    by_label: dict[int, list[Item]] = defaultdict(list)
    for item, label in labelled:
        by_label[label].append(item)
    cap = int(ratio * min(len(v) for v in by_label.values()))
    kept = []
    for label, items in sorted(by_label.items()):
        kept.extend((items[i], label) for i in spread_order(items, seed)[:cap])
    return kept


def held_out_emojis(labelled: Sequence[tuple[Item, int]], fraction: float, seed: int
                    ) -> set[str]:
    """About `fraction` of each class's emojis (at least one), chosen by a seeded hash."""
    by_label: dict[int, set[str]] = defaultdict(set)
    for item, label in labelled:
        by_label[label].add(item.emoji)
    held_out: set[str] = set()
    for keys in by_label.values():
        n_test = max(1, round(fraction * len(keys)))
        held_out.update(sorted(keys, key=lambda k: _rank(seed, "split", k))[:n_test])
    return held_out


def split_by_emoji(labelled: Sequence[tuple[Item, int]], fraction: float, seed: int
                   ) -> dict[str, list[tuple[Item, int]]]:
    """Train/test rows; every rendition of a held-out emoji (all sources, all skin tones) is
    in test. Rows are sorted so the files come out the same on every machine."""
    held_out = held_out_emojis(labelled, fraction, seed)
    order = lambda row: (row[1], row[0].emoji, row[0].source, row[0].path.name)  # noqa: E731
    return {"train": sorted((r for r in labelled if r[0].emoji not in held_out), key=order),
            "test": sorted((r for r in labelled if r[0].emoji in held_out), key=order)}


# ---------------------------------------------------------------------------------------------
# Rendering


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA uint8 [H, W, 4] -> RGB uint8 [H, W, 3] over a white background."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render(path: Path, size: int) -> np.ndarray:
    """One image file (PNG or SVG) -> RGB uint8 [size, size, 3] on white."""
    if path.suffix == ".svg":
        import cairosvg  # only `prepare` needs it; training just loads arrays
        data = cairosvg.svg2png(url=str(path), output_width=size, output_height=size)
        image = Image.open(io.BytesIO(data))
    else:
        image = Image.open(path)
    rgb = Image.fromarray(composite_on_white(np.asarray(image.convert("RGBA"))))
    # Resize after compositing: resampling straight alpha would drag in the colour of
    # transparent pixels as dark fringes.
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.LANCZOS)
    return np.asarray(rgb)


def render_all(paths: Sequence[Path], size: int) -> np.ndarray:
    images = np.empty((len(paths), size, size, 3), np.uint8)
    start = time.monotonic()
    for n, path in enumerate(paths):
        images[n] = render(path, size)
        if (n + 1) % 1000 == 0 or n + 1 == len(paths):
            _log(f"rendered {n + 1}/{len(paths)} images ({time.monotonic() - start:.0f} s)")
    return images


# ---------------------------------------------------------------------------------------------
# Writing


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Compressed npz written atomically (through a file object: np.savez would append .npz
    to the temporary name)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def split_summary(labelled: Sequence[tuple[Item, int]]) -> dict:
    return {
        "images": len(labelled),
        "emojis": len({i.emoji for i, _ in labelled}),
        "per_class": {CLASS_NAMES[label]: n
                      for label, n in sorted(Counter(lab for _, lab in labelled).items())},
        "emojis_per_class": {CLASS_NAMES[label]: n for label, n in sorted(
            Counter(lab for _, lab in {(i.emoji, lab) for i, lab in labelled}).items())},
        "per_source": dict(sorted(Counter(i.source for i, _ in labelled).items())),
    }


def build_meta(splits: dict[str, list[tuple[Item, int]]], size: int, seed: int,
               cap_ratio: float) -> dict:
    return {
        "class_names": list(CLASS_NAMES),
        "class_subgroups": {name: list(CLASS_SUBGROUPS[name]) for name in CLASS_NAMES},
        "image_size": size,
        "seed": seed,
        "test_fraction_of_emojis": TEST_FRACTION,
        "cap_ratio": cap_ratio,
        "splits": {name: split_summary(rows) for name, rows in splits.items()},
        "sources": [{"name": s.name, "package": s.package, "version": s.version,
                     "licence": s.licence, "attribution": s.attribution} for s in SOURCES],
    }


def write_split(out: Path, split: str, rows: Sequence[tuple[Item, int]], size: int) -> None:
    _log(f"{split}: rendering {len(rows)} images at {size} px")
    write_npz(out / f"{split}.npz",
              images=render_all([i.path for i, _ in rows], size),
              labels=np.array([label for _, label in rows], np.int64),
              emoji=np.array([i.emoji for i, _ in rows]),    # provenance of each image
              source=np.array([i.source for i, _ in rows]))


def build(labelled: Sequence[tuple[Item, int]], out: Path, size: int, seed: int,
          cap_ratio: float) -> dict:
    """Cap, split, render and write labelled renditions; returns the meta.json dict."""
    # meta.json is written last and load_split needs it, so a run cut short leaves no data
    # set that looks complete.
    (out / "meta.json").unlink(missing_ok=True)
    kept = cap_classes(labelled, cap_ratio, seed)
    _log(f"{len(labelled)} renditions in {len(CLASS_NAMES)} classes, "
         f"{len(kept)} kept after capping classes at {cap_ratio:g}x the smallest")
    splits = split_by_emoji(kept, TEST_FRACTION, seed)
    for split, rows in splits.items():
        write_split(out, split, rows, size)
    meta = build_meta(splits, size, seed, cap_ratio)
    atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return meta


def prepare(out: Path, size: int = 64, cache: Path = DEFAULT_CACHE, seed: int = 0,
            cap_ratio: float = CAP_RATIO) -> dict:
    """Download the packages and build the data set in `out`; returns its meta.json dict."""
    start = time.monotonic()
    meta = build(label_items(list_sources(cache)), out, size, seed, cap_ratio)
    _log(f"wrote {out} in {time.monotonic() - start:.1f} s")
    return meta


def _log(message: str) -> None:
    print(f"[data] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nar.data",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare",
                               help="download the emoji packages and build the data set")
    prep.add_argument("--out", type=Path, required=True, help="output directory, e.g. data/emoji")
    prep.add_argument("--size", type=int, default=64,
                      help="image side in pixels (default 64; the Google and Twitter PNGs are "
                           "64 px, so larger sizes upsample them)")
    prep.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                      help="npm tarballs and their extracted files, reused "
                           f"(default {DEFAULT_CACHE})")
    prep.add_argument("--seed", type=int, default=0, help="seed of the split and the class caps")
    prep.add_argument("--cap-ratio", type=float, default=CAP_RATIO,
                      help=f"largest class as a multiple of the smallest (default {CAP_RATIO:g})")
    moving = commands.add_parser("moving", help="build the moving emoji clips from a prepared emoji set")
    moving.add_argument("--emoji", type=Path, default=Path("data/emoji"), help="prepared emoji set")
    moving.add_argument("--out", type=Path, required=True, help="output directory, e.g. data/moving_emoji")
    moving.add_argument("--frames", type=int, default=4)
    moving.add_argument("--size", type=int, default=32, help="frame side in pixels")
    moving.add_argument("--seed", type=int, default=0)
    text = commands.add_parser("text", help="build the text-to-image set: every emoji, with CLDR names and keywords")
    text.add_argument("--out", type=Path, required=True, help="output directory, e.g. data/emoji_text")
    text.add_argument("--size", type=int, default=64, help="image side in pixels")
    text.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm tarballs, reused")
    text.add_argument("--seed", type=int, default=0, help="seed of the held-out emojis")
    args = parser.parse_args(argv)
    if args.command == "text":
        from .text_data import prepare_text
        prepare_text(args.out, args.size, args.cache, args.seed)
        return
    if args.command == "moving":
        from .moving_emoji import build as build_clips
        build_clips(args.emoji, args.out, args.frames, args.size, args.seed)
        return
    meta = prepare(args.out, args.size, args.cache, args.seed, args.cap_ratio)
    for split in SPLITS:
        summary = meta["splits"][split]
        _log(f"{split}: {summary['images']} images of {summary['emojis']} emojis; "
             f"per class {summary['per_class']}; per source {summary['per_source']}")


if __name__ == "__main__":
    main()
