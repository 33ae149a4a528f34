"""Uploads: good images are read, hostile ones are skipped or refused with a reason."""
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from nar.uploads import UploadLimits, UploadRefused, scan_upload


def png_bytes(colour=(200, 30, 30), size=(20, 12), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def huge_header_png(width=30000, height=30000) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, with a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def make_zip(path, members: dict, symlinks=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, target)
    return path


def test_zip_folders_are_classes_and_loose_images_get_the_given_name(tmp_path):
    z = make_zip(tmp_path / "pets.zip", {"cat/a.png": png_bytes(), "cat/b.png": png_bytes((0, 0, 0)),
                                         "dog/c.jpg": _jpeg(), "top.png": png_bytes()})
    loose = tmp_path / "single.webp"
    Image.new("RGB", (30, 30), (10, 200, 10)).save(loose, format="WEBP")
    report = scan_upload([z, loose], size=16, loose_class="misc")
    assert report.class_names == ["cat", "dog", "misc"]
    assert report.counts() == {"cat": 2, "dog": 1, "misc": 2}
    assert report.images.shape == (5, 16, 16, 3) and report.images.dtype == np.uint8
    assert report.skipped == []


def _jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 0, 255)).save(buf, format="JPEG")
    return buf.getvalue()


def test_transparency_goes_on_white_and_non_square_is_centre_cropped(tmp_path):
    img = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (15, 5, 25, 15))  # a red square in the middle
    path = tmp_path / "a.png"
    img.save(path)
    report = scan_upload([path], size=8, loose_class="x")
    out = report.images[0]
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)   # transparent corner became white
    assert out[4, 4, 0] > 200 and out[4, 4, 1] < 60  # the red square fills the centre crop


def test_hostile_zip_members_are_skipped_with_reasons(tmp_path):
    outside = tmp_path.parent / "evil_written.png"
    z = make_zip(tmp_path / "evil.zip", {
        "../evil_written.png": png_bytes(), "/abs.png": png_bytes(), "cat/ok.png": png_bytes(),
        "cat/notes.txt": b"hello", "cat/fake.png": b"this is text, not a png",
        "cat/trunc.png": png_bytes(size=(64, 64))[:60], "cat/huge.png": huge_header_png(),
        "a/b/deep.png": png_bytes()}, symlinks=[("cat/link.png", "/etc/passwd")])
    report = scan_upload([z], size=16)
    reasons = dict((name.split(":", 1)[1], why) for name, why in report.skipped)
    assert report.counts() == {"cat": 1}
    assert "leaves the upload folder" in reasons["../evil_written.png"]
    assert "leaves the upload folder" in reasons["/abs.png"]
    assert "symbolic link" in reasons["cat/link.png"]
    assert "not a PNG" in reasons["cat/notes.txt"]
    assert "not an image" in reasons["cat/fake.png"]
    assert "corrupt or truncated" in reasons["cat/trunc.png"]
    assert "30000x30000" in reasons["cat/huge.png"] or "bomb" in reasons["cat/huge.png"]
    assert "nested" in reasons["a/b/deep.png"]
    assert not outside.exists()


def test_compression_bomb_is_refused(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", {f"cat/{i}.png": b"\x00" * (3 * 2 ** 20) for i in range(3)})
    with pytest.raises(UploadRefused, match="compression bomb"):
        scan_upload([z], size=16, limits=UploadLimits(max_uncompressed_bytes=4 * 2 ** 20))
    # under the total limit, each over-compressed member is still skipped
    report = scan_upload([z], size=16)
    assert len(report.skipped) == 3 and all("compression ratio" in why for _, why in report.skipped)


def test_loose_files_need_a_class_name_and_a_real_format(tmp_path):
    (tmp_path / "x.png").write_bytes(png_bytes())
    gif = tmp_path / "y.png"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    report = scan_upload([tmp_path / "x.png"], size=16)
    assert report.class_names == [] and "no class name" in report.skipped[0][1]
    report = scan_upload([gif], size=16, loose_class="z")
    assert "GIF images are not accepted" in report.skipped[0][1]


def test_too_many_files_and_bytes_are_refused(tmp_path):
    z = make_zip(tmp_path / "many.zip", {f"cat/{i}.png": png_bytes() for i in range(5)})
    with pytest.raises(UploadRefused, match="holds 5 files"):
        scan_upload([z], size=16, limits=UploadLimits(max_files=4))
    with pytest.raises(UploadRefused, match="bytes"):
        scan_upload([z], size=16, limits=UploadLimits(max_total_bytes=100))
    with pytest.raises(UploadRefused):
        scan_upload([], size=16)
    (tmp_path / "garbage.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UploadRefused, match="not a readable zip"):
        scan_upload([tmp_path / "garbage.zip"], size=16)


def test_bad_class_names_are_skipped(tmp_path):
    z = make_zip(tmp_path / "names.zip", {"ok name/a.png": png_bytes(), "bad<name>/b.png": png_bytes()})
    report = scan_upload([z], size=16)
    assert report.class_names == ["ok name"]
    assert "not a usable class name" in report.skipped[0][1]
