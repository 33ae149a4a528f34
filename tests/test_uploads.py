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


# -- members that cannot be read, mixed uploads, names, decoding cost, orientation, the cache --
def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def unreadable_members_zip(path):
    """cat/ok.png and dog/ok.png readable; cat/locked.png password-protected (its encryption flag
    set, in its local header and the central directory), cat/damaged.png with deflate data that is
    not deflate, cat/badcrc.png stored with one byte flipped (its CRC no longer matches)."""
    good = png_bytes((10, 200, 10))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cat/ok.png", good, zipfile.ZIP_DEFLATED)
        z.writestr("cat/locked.png", png_bytes((1, 2, 3)), zipfile.ZIP_DEFLATED)
        z.writestr("cat/damaged.png", png_bytes((4, 5, 6), size=(64, 64)), zipfile.ZIP_DEFLATED)
        z.writestr("cat/badcrc.png", png_bytes((7, 8, 9)), zipfile.ZIP_STORED)
        z.writestr("dog/ok.png", good, zipfile.ZIP_DEFLATED)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
    locked = infos["cat/locked.png"]
    data = _patch(data, locked.header_offset + 6, struct.pack("<H", locked.flag_bits | 1))
    entry = data.index(b"cat/locked.png", data.index(b"PK\x01\x02")) - 46
    data = _patch(data, entry + 8, struct.pack("<H", locked.flag_bits | 1))
    damaged = infos["cat/damaged.png"]
    data = _patch(data, damaged.header_offset + 30 + len(damaged.filename), b"\xff" * 16)
    crc = infos["cat/badcrc.png"]
    start = crc.header_offset + 30 + len(crc.filename) + 40
    data = _patch(data, start, bytes([data[start] ^ 0xFF]))
    path.write_bytes(data)
    return path


def broken_directory_zips(tmp_path) -> list:
    """A zip cut before its central directory, and one whose first directory entry is mangled."""
    data = make_zip(tmp_path / "whole.zip", {"cat/a.png": png_bytes(), "cat/b.png": png_bytes()}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: data.index(b"PK\x01\x02")])
    (tmp_path / "mangled.zip").write_bytes(data.replace(b"PK\x01\x02", b"PK\x09\x09", 1))
    return [tmp_path / "cut.zip", tmp_path / "mangled.zip"]


def animated_files(tmp_path) -> tuple:
    """A 2-frame animated GIF and a 2-frame animated PNG."""
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    return tmp_path / "anim.gif", tmp_path / "anim.png"


def exif_rotated_jpeg(path):
    """Stored 40x20 (red left half, blue right half) with EXIF orientation 6 (shown rotated 90
    degrees clockwise): upright it is 20x40, red on top and blue below."""
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", exif=exif, quality=95)
    return path


def assert_upright(image: np.ndarray) -> None:
    out = image.astype(int)
    rows = max(1, len(out) // 3)
    top, bottom = out[:rows].reshape(-1, 3).mean(0), out[-rows:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top            # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom   # blue below
    left, right = out[:, :rows].reshape(-1, 3).mean(0), out[:, -rows:].reshape(-1, 3).mean(0)
    assert abs(left - right).max() < 20                  # no left/right split: not sideways


def test_unreadable_zip_members_are_skipped_and_the_readable_ones_kept(tmp_path):
    path = unreadable_members_zip(tmp_path / "mixed.zip")
    report = scan_upload([path], size=16)
    reasons = {name.split(":", 1)[1]: why for name, why in report.skipped}
    assert report.counts() == {"cat": 1, "dog": 1}
    assert reasons["cat/locked.png"] == "password-protected (encrypted); it cannot be read"
    assert reasons["cat/damaged.png"].startswith("damaged: its data cannot be decompressed")
    assert reasons["cat/badcrc.png"] == "damaged: its CRC check failed"
    assert len(reasons) == 3


def test_zip_with_a_broken_central_directory_is_refused_whole(tmp_path):
    make_zip(tmp_path / "ok.zip", {"cat/a.png": png_bytes()})
    for broken in broken_directory_zips(tmp_path):
        with pytest.raises(UploadRefused, match="is not a readable zip: its directory is broken or missing") as e:
            scan_upload([broken, tmp_path / "ok.zip"], size=16)
        assert "nothing in it was used" in str(e.value)


def test_mixed_upload_keeps_its_good_files_and_lists_the_others(tmp_path):
    good = [tmp_path / f"good{i}.png" for i in range(2)]
    for i, p in enumerate(good):
        p.write_bytes(png_bytes((50 * i, 100, 100)))
    animated_files(tmp_path)
    (tmp_path / "notes.txt").write_text("not a picture")
    report = scan_upload([*good, tmp_path / "anim.gif", tmp_path / "anim.png", tmp_path / "notes.txt"], size=16,
                         loose_class="mix")
    reasons = dict(report.skipped)
    assert report.counts() == {"mix": 2}
    assert "GIF images are not accepted" in reasons["anim.gif"] and "not read as its first frame" in reasons["anim.gif"]
    assert reasons["anim.png"].startswith("animated PNG (2 frames)") and "not read as its first frame" in reasons["anim.png"]
    assert "not an image" in reasons["notes.txt"]


def test_over_long_names_are_skipped_without_touching_the_file_system(tmp_path):
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes())
    long_path = "/tmp/" + "x" * 5000 + ".png"
    deep = make_zip(tmp_path / "names.zip", {"cat/" + "y" * 300 + ".png": png_bytes(), "cat/fine.png": png_bytes()})
    report = scan_upload([ok, long_path, deep], size=16, loose_class="cat")
    assert report.counts() == {"cat": 2}
    assert len(report.skipped) == 2
    for name, why in report.skipped:
        assert why.startswith("file name too long") and "Errno" not in why
        assert len(name) < 200 and len(why) < 300          # long values are cut in messages


def test_decoding_budget_bounds_the_cost_of_cheap_large_images(tmp_path):
    """12 solid 4096x4096 PNGs (58 KB each, 16.7 Mpixel decoded) and 200 solid 4096x4096
    lossless WebPs (706 bytes each): a budget of 4 images' pixels decodes 4, and the others are
    skipped at once from their headers (WebP before Pillow allocates its canvas)."""
    solid = Image.new("RGB", (4096, 4096), (10, 200, 30))
    png, webp = io.BytesIO(), io.BytesIO()
    solid.save(png, format="PNG")
    solid.save(webp, format="WEBP", lossless=True)
    z = make_zip(tmp_path / "bomb.zip", {**{f"cat/{i}.png": png.getvalue() for i in range(12)},
                                         **{f"cat/{i}.webp": webp.getvalue() for i in range(200)}})
    import time
    started = time.monotonic()
    report = scan_upload([z], size=16, limits=UploadLimits(max_decoded_pixels=4 * 4096 * 4096))
    seconds = time.monotonic() - started
    assert report.counts() == {"cat": 4}
    assert len(report.skipped) == 208 and all("decoding budget of 67,108,864 pixels" in why
                                              for _, why in report.skipped)
    assert seconds < 20, seconds
    assert "1 gigapixel decoded per upload" in UploadLimits().describe()


def test_large_jpegs_are_decoded_at_reduced_size(tmp_path):
    """A 4096x4096 JPEG counts 512x512 pixels against the budget (decoded at 1/8 scale)."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4096, 4096), (0, 0, 255)).save(path, format="JPEG")
    report = scan_upload([path] * 3, size=16, loose_class="sky",
                         limits=UploadLimits(max_decoded_pixels=3 * 512 * 512))
    assert report.counts() == {"sky": 3} and report.skipped == []
    assert report.images[0, 8, 8, 2] > 200


def test_exif_orientation_is_applied_before_cropping(tmp_path):
    path = exif_rotated_jpeg(tmp_path / "phone.jpg")
    assert_upright(scan_upload([path], size=16, loose_class="photo").images[0])
    with Image.open(path) as stored:                       # the file itself is stored sideways
        stored = np.asarray(stored.convert("RGB")).astype(int)
    assert stored[:, :5, 0].mean() > 200 and stored[:, -5:, 2].mean() > 200


def test_a_phone_mpo_photo_is_read_as_its_primary_jpeg(tmp_path):
    """Phones write JPEGs with more views appended (MPO); the first one is the photo."""
    photo, depth = Image.new("RGB", (32, 32), (250, 10, 10)), Image.new("RGB", (32, 32), (0, 0, 0))
    photo.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[depth])
    with Image.open(tmp_path / "phone.jpg") as img:
        assert img.format == "MPO" and img.n_frames == 2
    report = scan_upload([tmp_path / "phone.jpg"], size=16, loose_class="photo")
    assert report.skipped == [] and report.images[0, 8, 8, 0] > 200


def test_an_upload_is_scanned_once_and_reused_by_its_content(tmp_path):
    from nar.uploads import UploadScanner
    z = make_zip(tmp_path / "pets.zip", {"cat/a.png": png_bytes(), "dog/b.png": png_bytes((0, 0, 0))})
    again = tmp_path / "elsewhere"
    again.mkdir()
    (again / "pets.zip").write_bytes(z.read_bytes())     # the same upload, at a new temporary path
    scanner = UploadScanner(max_entries=2)
    first = scanner.scan([z], 16)
    assert scanner.scan([again / "pets.zip"], 16) is first and scanner.scans == 1
    assert scanner.scan([z], 16, "other") is not first and scanner.scans == 2   # other options, other result
    (again / "pets.zip").write_bytes(make_zip(tmp_path / "x.zip", {"cat/a.png": png_bytes((1, 1, 1))}).read_bytes())
    changed = scanner.scan([again / "pets.zip"], 16)
    assert changed.counts() == {"cat": 1} and scanner.scans == 3
    scanner.scan([tmp_path / "x.zip"], 16)
    assert len(scanner._done) == 2                        # bounded
