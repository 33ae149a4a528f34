"""User uploads -> a labelled image set, safely.

Accepted: PNG, JPEG and WebP files (judged by their content, not their names), and zip files
(or folders, for the command line) whose folders name the classes (images at the zip's top level, and loose image files, go to
the class the user names). Zips are never extracted to disk: members are read into memory
under size limits, so no path in a zip can write anywhere. Every file that is not used is
reported with the reason, including zip members that cannot be read (password-protected,
damaged, failed CRC check) and animated or unsupported images; an upload that is hostile as a whole
(a compression bomb, too many files, a zip whose directory is broken) is refused with the reason.

Decoding is what costs: a 58 KB PNG can hold 4096 x 4096 pixels. Each image's size is read from
its header first; JPEGs are decoded at reduced size (`Image.draft`), large images are shrunk with
`reduce` before resampling, and an upload may decode at most `max_decoded_pixels` in all (the
images after that are skipped with the reason). An upload is identified by its content, so
`UploadScanner` reads it once for the preview and hands the same result to the training start.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import re
import stat
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .names import NameTooLong, check_path_length, shown

ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
ORIENTATION = 0x0112   # the EXIF tag


@dataclass(frozen=True)
class UploadLimits:
    max_files: int = 2000                 # images per upload (zip members included)
    max_total_bytes: int = 200 * 2 ** 20  # compressed bytes of all uploaded files
    max_uncompressed_bytes: int = 400 * 2 ** 20  # what all zip members may expand to
    max_member_bytes: int = 20 * 2 ** 20  # one image
    max_ratio: float = 200.0              # uncompressed / compressed size of a zip member
    max_pixels: int = 4096 * 4096         # width x height of one image, read from its header
    max_decoded_pixels: int = 10 ** 9     # pixels decoded per upload, after reduced-size decoding
    max_classes: int = 64
    max_member_name: int = 1024           # characters of a zip member's name

    def describe(self) -> str:
        return (f"up to {self.max_files} images, {self.max_total_bytes // 2 ** 20} MB in total, "
                f"{self.max_member_bytes // 2 ** 20} MB and {int(self.max_pixels ** 0.5)}x{int(self.max_pixels ** 0.5)} "
                f"pixels per image, {self.max_decoded_pixels / 1e9:g} gigapixel"
                f"{'s' if self.max_decoded_pixels != 10 ** 9 else ''} decoded per upload "
                f"(large JPEGs count at the reduced size they are decoded at), {self.max_classes} classes; "
                f"still PNG, JPEG or WebP images, or a zip of them (other files are listed as skipped)")


class UploadRefused(ValueError):
    """The whole upload is refused (the message says why)."""


class Unusable(ValueError):
    """One file is not used (the message says why); the rest of the upload is."""


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
    """Centre-crop to a square, composite transparency onto white, resize to size x size.
    A large image is first shrunk by a whole factor (`reduce`, a box filter that weights colour
    by alpha), so the conversions and Lanczos work on at most about 3 x size pixels a side."""
    w, h = img.size
    side = min(w, h)
    if w != h:
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if img.mode not in ("RGB", "RGBA", "L", "LA"):   # modes `reduce` cannot take (palette, 16-bit, ...)
        img = img.convert("RGBA")
    factor = side // (3 * size)
    if factor > 1:
        img = img.reduce(factor)
    if img.mode != "RGB":
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img).convert("RGB")
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


class DecodeBudget:
    """The pixels one upload may still decode (UploadLimits.max_decoded_pixels)."""

    def __init__(self, pixels: int):
        self.limit, self.left = pixels, pixels

    def spend(self, pixels: int) -> None:
        if pixels > self.left:
            raise Unusable(f"not decoded: this upload used up its decoding budget of {self.limit:,} pixels "
                           f"(upload fewer or smaller images)")
        self.left -= pixels


def webp_size(data: bytes) -> Optional[tuple[int, int]]:
    """Width and height from a WebP file's first chunk, or None if it is not WebP. Pillow's WebP
    reader allocates the whole canvas when it opens a file (30 ms for 4096 x 4096), so WebP sizes
    are read here before it does."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    return None


def _check_pixels(w: int, h: int, limits: UploadLimits) -> None:
    if w * h > limits.max_pixels:  # checked from the header, before decoding any pixel
        raise Unusable(f"{w}x{h} pixels is over the limit of {limits.max_pixels:,} pixels")


def decode_image(data: bytes, size: int, limits: UploadLimits,
                 budget: Optional[DecodeBudget] = None) -> np.ndarray:
    """Bytes -> uint8 [size, size, 3] (upright, per the EXIF orientation), or ValueError with a
    reason a person understands."""
    declared = webp_size(data)
    if declared is not None:
        _check_pixels(*declared, limits)
        if budget is not None:
            budget.spend(declared[0] * declared[1])
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ALLOWED_FORMATS:
                raise Unusable(f"{img.format or 'unknown'} images are not accepted (still PNG, JPEG, WebP only; "
                               f"an animated GIF is skipped, not read as its first frame)")
            # a phone's MPO file is a JPEG followed by other views of it (previews, depth): the
            # first frame is the photo; in PNG and WebP more frames are an animation
            frames = 1 if img.format == "MPO" else getattr(img, "n_frames", 1)
            if frames > 1:
                raise Unusable(f"animated {img.format} ({frames} frames): only still images are used; "
                               f"skipped, not read as its first frame")
            _check_pixels(*img.size, limits)
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (size, size))   # decode at 1/2, 1/4 or 1/8 scale, still >= size
            if budget is not None and declared is None:
                budget.spend(img.size[0] * img.size[1])
            elif declared is not None and declared != img.size:
                raise Unusable(f"its header says {declared[0]}x{declared[1]} pixels but it holds "
                               f"{img.size[0]}x{img.size[1]}")
            img.load()
            if img.getexif().get(ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)   # phone photos: upright before the crop
            return to_square_rgb(img, size)
    except UnidentifiedImageError:
        raise ValueError("not an image (content is not PNG, JPEG or WebP)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"refused as a decompression bomb ({e})") from None
    except Unusable:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError,
            TypeError) as e:
        # what Pillow's readers raise on damaged files (the plugins differ)
        raise ValueError(f"corrupt or truncated image ({shown(str(e), 200)})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes (at most limit + 1 of them), or Unusable naming why it cannot be read.
    The CRC is checked when the member is read to its end, so a member under the limit is
    always checked."""
    if info.flag_bits & 0x1:
        raise Unusable("password-protected (encrypted); it cannot be read")
    try:
        with archive.open(info) as f:
            return f.read(limit + 1)
    except zipfile.BadZipFile as e:
        if "CRC" in str(e):
            raise Unusable("damaged: its CRC check failed") from None
        raise Unusable(f"damaged ({shown(str(e), 120)})") from None
    except NotImplementedError as e:
        raise Unusable(f"cannot be read ({shown(str(e), 120)})") from None
    except RuntimeError as e:   # zipfile's "... is encrypted, password required"
        raise Unusable(f"cannot be read ({shown(str(e), 120)})") from None
    except (zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, struct.error) as e:
        raise Unusable(f"damaged: its data cannot be decompressed ({shown(str(e), 120)})") from None


def _zip_members(path: Path, limits: UploadLimits, skipped: list) -> Iterator[tuple[str, Optional[str], bytes]]:
    """(display name, class folder or None, bytes) of a zip's image members, checked. A member
    that cannot be read is skipped with the reason; a zip whose directory cannot be read is
    refused whole (nothing in it can be trusted to be what it says)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, NotImplementedError, RuntimeError) as e:
        raise UploadRefused(f"{shown(path.name)} is not a readable zip: its directory is broken or missing "
                            f"({shown(str(e), 120)}); nothing in it was used") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise UploadRefused(f"{shown(path.name)} holds {len(infos)} files; the limit is {limits.max_files}")
        expanded = sum(i.file_size for i in infos)
        if expanded > limits.max_uncompressed_bytes:
            raise UploadRefused(f"{shown(path.name)} would expand to {expanded:,} bytes; the limit is "
                                f"{limits.max_uncompressed_bytes:,} (compression bomb?)")
        for info in infos:
            name = info.filename
            display = f"{shown(path.name, 60)}:{shown(name)}"
            parts = PurePosixPath(name.replace("\\", "/")).parts
            mode = info.external_attr >> 16
            if len(name) > limits.max_member_name or any(len(p.encode("utf-8", "replace")) > 255 for p in parts):
                skipped.append((display, f"file name too long (at most 255 bytes a name, "
                                         f"{limits.max_member_name} characters in all)"))
                continue
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
            try:
                data = _read_member(archive, info, limits.max_member_bytes)  # never trust the declared size
            except Unusable as e:
                skipped.append((display, str(e)))
                continue
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


def _usable_paths(files: list[str | Path], skipped: list) -> list[Path]:
    """The uploaded paths whose names the file system can take; the others are skipped."""
    paths = []
    for f in files:
        try:
            paths.append(Path(check_path_length(f)))
        except NameTooLong as e:
            skipped.append((shown(Path(str(f)).name, 60), str(e)))
    return paths


def scan_upload(files: list[str | Path], size: int, loose_class: str = "",
                limits: UploadLimits = UploadLimits()) -> UploadReport:
    """Read uploaded images and zips into a labelled image set of size x size RGB images."""
    if not files:
        raise UploadRefused("nothing was uploaded")
    skipped: list[tuple[str, str]] = []
    paths = _usable_paths(list(files), skipped)
    total = sum(f.stat().st_size for p in paths for f in ([p] if not p.is_dir() else p.rglob("*"))
                if f.is_file() and not f.is_symlink())
    if total > limits.max_total_bytes:
        raise UploadRefused(f"the upload is {total:,} bytes; the limit is {limits.max_total_bytes:,}")
    entries: list[tuple[str, Optional[str], bytes]] = []
    for path in paths:
        if path.is_symlink():
            skipped.append((shown(path.name), "symbolic link; refused"))
        elif path.is_dir():
            entries.extend(_folder_members(path, limits, skipped))
        elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            entries.extend(_zip_members(path, limits, skipped))
        elif path.stat().st_size > limits.max_member_bytes:
            skipped.append((shown(path.name), f"over the {limits.max_member_bytes:,} byte limit"))
        else:
            entries.append((shown(path.name), None, path.read_bytes()))
        if len(entries) > limits.max_files:
            raise UploadRefused(f"more than {limits.max_files} images in one upload")
    budget = DecodeBudget(limits.max_decoded_pixels)
    images, names, class_names = [], [], []
    for display, folder, data in entries:
        try:
            cls = clean_class_name(folder if folder is not None else loose_class)
        except ValueError as e:
            reason = "no class name given for loose images" if folder is None and not loose_class else str(e)
            skipped.append((display, reason))
            continue
        try:
            images.append(decode_image(data, size, limits, budget))
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


class UploadScanner:
    """scan_upload with its results kept, keyed by what was uploaded (each file's content and base
    name, the image size, the loose class name), so the preview and the training start read one
    upload once, even from a new temporary path. A scan of the same upload already running is
    waited for rather than repeated. Holds at most `max_entries` results and, beyond the newest,
    at most `max_bytes` of images. A cached report is shared by everyone who uploads the same
    files: treat it as read-only."""

    def __init__(self, limits: UploadLimits = UploadLimits(), max_entries: int = 4, max_bytes: int = 2 ** 30):
        self.limits, self.max_entries, self.max_bytes = limits, max_entries, max_bytes
        self._done: "OrderedDict[str, UploadReport]" = OrderedDict()
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.scans = 0          # scans actually run (the others were answered from the cache)

    def key(self, files: list[str | Path], size: int, loose_class: str) -> Optional[str]:
        """The content key of an upload, or None when it cannot be keyed (a folder, a name the file
        system refuses, a missing file, an upload over the size limit): those are scanned as they are."""
        digest = hashlib.blake2b(repr((size, loose_class, self.limits)).encode(), digest_size=32)
        total = 0
        try:
            for f in files:
                path = Path(check_path_length(f))
                if not path.is_file() or path.is_symlink():
                    return None
                total += path.stat().st_size
                if total > self.limits.max_total_bytes:
                    return None
                digest.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(2 ** 20), b""):
                        digest.update(chunk)
                digest.update(b"\0%d\0" % path.stat().st_size)
        except (OSError, ValueError):
            return None
        return digest.hexdigest()

    def scan(self, files: list[str | Path], size: int, loose_class: str = "") -> UploadReport:
        key = self.key(list(files or []), size, loose_class) if files else None
        if key is None:
            return self._run(files, size, loose_class)
        while True:
            with self._lock:
                if key in self._done:
                    self._done.move_to_end(key)
                    return self._done[key]
                waiting = self._running.get(key)
                if waiting is None:
                    self._running[key] = threading.Event()
                    break
            waiting.wait()   # the same upload is being read: take its result (or read it if that failed)
        try:
            report = self._run(files, size, loose_class)
            with self._lock:
                self._done[key] = report
                self._evict()
            return report
        finally:
            with self._lock:
                self._running.pop(key).set()

    def _run(self, files, size: int, loose_class: str) -> UploadReport:
        self.scans += 1
        return scan_upload(files, size, loose_class, self.limits)

    def _evict(self) -> None:
        while len(self._done) > self.max_entries or (
                len(self._done) > 1 and sum(r.images.nbytes for r in self._done.values()) > self.max_bytes):
            self._done.popitem(last=False)
