"""User uploads -> a labelled image set, safely.

Accepted: PNG, JPEG and WebP files (judged by their content, not their names), and zip files
(or folders, for the command line) whose folders name the classes (images at the zip's top level, and loose image files, go to
the class the user names). Zips are never extracted to disk: members are read into memory
under size limits, so no path in a zip can write anywhere. Every file that is not used is
reported with the reason; an upload that is hostile as a whole (a compression bomb, too many
files) is refused with the reason.
"""
from __future__ import annotations

import io
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass(frozen=True)
class UploadLimits:
    max_files: int = 2000                 # images per upload (zip members included)
    max_total_bytes: int = 200 * 2 ** 20  # compressed bytes of all uploaded files
    max_uncompressed_bytes: int = 400 * 2 ** 20  # what all zip members may expand to
    max_member_bytes: int = 20 * 2 ** 20  # one image
    max_ratio: float = 200.0              # uncompressed / compressed size of a zip member
    max_pixels: int = 4096 * 4096         # width x height of one image, read from its header
    max_classes: int = 64

    def describe(self) -> str:
        return (f"up to {self.max_files} images, {self.max_total_bytes // 2 ** 20} MB in total, "
                f"{self.max_member_bytes // 2 ** 20} MB and {int(self.max_pixels ** 0.5)}x{int(self.max_pixels ** 0.5)} "
                f"pixels per image, {self.max_classes} classes; PNG, JPEG or WebP, or a zip of them")


class UploadRefused(ValueError):
    """The whole upload is refused (the message says why)."""


@dataclass
class UploadReport:
    images: np.ndarray                    # uint8 [N, size, size, 3]
    labels: np.ndarray                    # int64 [N]
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


_CLASS_NAME = re.compile(r"^[\w][\w \-\.]{0,47}$", re.UNICODE)


def clean_class_name(name: str) -> str:
    name = str(name or "").strip()
    if not _CLASS_NAME.match(name) or name in (".", ".."):
        shown = repr(name) if len(name) <= 60 else f"{name[:48]!r}… ({len(name):,} characters)"
        raise ValueError(f"{shown} is not a usable class name (letters, digits, space, - _ . ; up to 48)")
    return name


def to_square_rgb(img: Image.Image, size: int) -> np.ndarray:
    """Composite transparency onto white, centre-crop to a square, resize to size x size."""
    img = img.convert("RGBA")
    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, img).convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def decode_image(data: bytes, size: int, limits: UploadLimits) -> np.ndarray:
    """Bytes -> uint8 [size, size, 3], or ValueError with a reason a person understands."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ALLOWED_FORMATS:
                raise ValueError(f"{img.format or 'unknown'} images are not accepted (PNG, JPEG, WebP only)")
            w, h = img.size
            if w * h > limits.max_pixels:  # checked from the header, before decoding any pixel
                raise ValueError(f"{w}x{h} pixels is over the limit of {limits.max_pixels:,} pixels")
            img.load()
            return to_square_rgb(img, size)
    except UnidentifiedImageError:
        raise ValueError("not an image (content is not PNG, JPEG or WebP)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"corrupt or truncated image ({e})") from None


def _zip_members(path: Path, limits: UploadLimits, skipped: list) -> Iterator[tuple[str, Optional[str], bytes]]:
    """(display name, class folder or None, bytes) of a zip's image members, checked."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadRefused(f"{path.name} is not a readable zip ({e})") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise UploadRefused(f"{path.name} holds {len(infos)} files; the limit is {limits.max_files}")
        expanded = sum(i.file_size for i in infos)
        if expanded > limits.max_uncompressed_bytes:
            raise UploadRefused(f"{path.name} would expand to {expanded:,} bytes; the limit is "
                                f"{limits.max_uncompressed_bytes:,} (compression bomb?)")
        for info in infos:
            name = info.filename
            display = f"{path.name}:{name}"
            parts = PurePosixPath(name.replace("\\", "/")).parts
            mode = info.external_attr >> 16
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                skipped.append((display, "path leaves the upload folder; refused"))
                continue
            if stat.S_ISLNK(mode):
                skipped.append((display, "symbolic link; refused"))
                continue
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                skipped.append((display, "hidden or system file"))
                continue
            if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((display, "not a PNG, JPEG or WebP file name"))
                continue
            if len(parts) > 2:
                skipped.append((display, "nested folders: put images directly in one folder per class"))
                continue
            if info.file_size > limits.max_member_bytes:
                skipped.append((display, f"{info.file_size:,} bytes is over the {limits.max_member_bytes:,} byte limit"))
                continue
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                skipped.append((display, "compression ratio too high (compression bomb?)"))
                continue
            with archive.open(info) as f:
                data = f.read(limits.max_member_bytes + 1)  # never trust the declared size
            if len(data) > limits.max_member_bytes:
                skipped.append((display, "larger than declared; refused"))
                continue
            yield display, (parts[0] if len(parts) == 2 else None), data


def _folder_members(root: Path, limits: UploadLimits, skipped: list) -> Iterator[tuple[str, Optional[str], bytes]]:
    """Like _zip_members for a folder on disk: sub-folders name classes; links are refused."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        display = f"{root.name}/{rel.as_posix()}"
        if path.is_symlink():
            skipped.append((display, "symbolic link; refused"))
        elif path.is_dir() or any(p.startswith(".") for p in rel.parts):
            continue
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((display, "not a PNG, JPEG or WebP file name"))
        elif len(rel.parts) > 2:
            skipped.append((display, "nested folders: put images directly in one folder per class"))
        elif path.stat().st_size > limits.max_member_bytes:
            skipped.append((display, f"over the {limits.max_member_bytes:,} byte limit"))
        else:
            yield display, (rel.parts[0] if len(rel.parts) == 2 else None), path.read_bytes()


def scan_upload(files: list[str | Path], size: int, loose_class: str = "",
                limits: UploadLimits = UploadLimits()) -> UploadReport:
    """Read uploaded images and zips into a labelled image set of size x size RGB images."""
    paths = [Path(f) for f in files]
    if not paths:
        raise UploadRefused("nothing was uploaded")
    total = sum(f.stat().st_size for p in paths for f in ([p] if not p.is_dir() else p.rglob("*"))
                if f.is_file() and not f.is_symlink())
    if total > limits.max_total_bytes:
        raise UploadRefused(f"the upload is {total:,} bytes; the limit is {limits.max_total_bytes:,}")
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, Optional[str], bytes]] = []
    for path in paths:
        if path.is_symlink():
            skipped.append((path.name, "symbolic link; refused"))
        elif path.is_dir():
            entries.extend(_folder_members(path, limits, skipped))
        elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            entries.extend(_zip_members(path, limits, skipped))
        elif path.stat().st_size > limits.max_member_bytes:
            skipped.append((path.name, f"over the {limits.max_member_bytes:,} byte limit"))
        else:
            entries.append((path.name, None, path.read_bytes()))
        if len(entries) > limits.max_files:
            raise UploadRefused(f"more than {limits.max_files} images in one upload")
    images, names, class_names = [], [], []
    for display, folder, data in entries:
        try:
            cls = clean_class_name(folder if folder is not None else loose_class)
        except ValueError as e:
            reason = "no class name given for loose images" if folder is None and not loose_class else str(e)
            skipped.append((display, reason))
            continue
        try:
            images.append(decode_image(data, size, limits))
        except ValueError as e:
            skipped.append((display, str(e)))
            continue
        if cls not in class_names:
            class_names.append(cls)
        names.append(cls)
    if len(class_names) > limits.max_classes:
        raise UploadRefused(f"{len(class_names)} classes; the limit is {limits.max_classes}")
    if not images:
        return UploadReport(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), [], skipped)
    labels = np.array([class_names.index(n) for n in names], dtype=np.int64)
    return UploadReport(np.stack(images), labels, class_names, skipped)
