"""Every kind of bad or odd input becomes pixels or a one-line reason, never a crash."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from copytrace.descriptors.decode import DecodeError, decode_bytes

from photos import jpeg_bytes, photo


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return photo("chelsea")


def test_plain_jpeg_gives_rgb_and_facts(chelsea):
    data = jpeg_bytes(chelsea)
    d = decode_bytes(data)
    assert d.pixels.shape == (*chelsea.shape[:2], 3) and d.pixels.dtype == np.uint8
    assert (d.width, d.height, d.format, d.num_bytes) == (451, 300, "jpeg", len(data))
    assert len(d.sha256) == 64


def test_target_size_resizes_to_square(chelsea):
    d = decode_bytes(jpeg_bytes(chelsea), target_size=224)
    assert d.pixels.shape == (224, 224, 3)
    assert (d.width, d.height) == (451, 300)  # the source size is still reported


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is text, not an image\n" * 20, "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not a recognised image format"),
    ],
)
def test_bad_inputs_have_reasons(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data)


def test_garbage_after_a_valid_header(chelsea):
    data = jpeg_bytes(chelsea)
    noise = np.random.default_rng(0).integers(0, 256, len(data), np.uint8).tobytes()
    with pytest.raises(DecodeError, match="corrupt|truncated|not a recognised"):
        decode_bytes(data[:400] + noise)


def test_truncated_jpeg(chelsea):
    data = jpeg_bytes(chelsea)
    with pytest.raises(DecodeError, match="truncated"):
        decode_bytes(data[: len(data) // 2])


def test_decompression_bomb_refused():
    bomb = _encode(Image.new("L", (6000, 6000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(DecodeError, match="too large"):
        decode_bytes(bomb, max_pixels=10_000_000)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "L", "I;16"])
def test_odd_modes_become_rgb(chelsea, mode):
    img = Image.fromarray(chelsea)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
        data = _encode(img, "PNG")
    elif mode == "CMYK":
        data = _encode(img.convert("CMYK"), "JPEG")
    else:
        data = _encode(img.convert(mode), "PNG")
    d = decode_bytes(data)
    assert d.pixels.shape == (300, 451, 3) and d.pixels.dtype == np.uint8
    assert 20 < d.pixels.mean() < 235  # real content, not a blank or saturated image


def test_transparent_pixels_composite_on_white(chelsea):
    rgba = Image.fromarray(chelsea).convert("RGBA")
    alpha = np.zeros((300, 451), np.uint8)
    alpha[:, :200] = 255
    rgba.putalpha(Image.fromarray(alpha))
    d = decode_bytes(_encode(rgba, "PNG"))
    assert (d.pixels[:, 250:] == 255).all()
    assert not (d.pixels[:, :200] == 255).all()


def test_exif_rotation_applied(chelsea):
    img = Image.fromarray(chelsea)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    d = decode_bytes(_encode(img, "JPEG", exif=exif.tobytes()))
    assert d.pixels.shape == (451, 300, 3)
    assert (d.width, d.height) == (300, 451)


# Hostile inputs: bounded time and memory per image, a reason instead of a crash.

def _png_header_only(w: int, h: int) -> bytes:
    """A valid PNG signature + IHDR claiming w x h, then a tiny IDAT: a decompression bomb's
    header (decoding it would need w * h * 3 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_60k_by_60k_png_header_refused_without_decoding():
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(DecodeError, match="too large"):
        decode_bytes(_png_header_only(60_000, 60_000))
    assert time.perf_counter() - t < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50_000  # decoding it would need 10 GB


def test_pixel_cap_is_ours_not_pils_warning_level():
    data = _encode(Image.new("L", (10_000, 10_000)), "PNG")  # 100 MP: above PIL's warning level
    with pytest.raises(DecodeError, match="exceeds the 50 MP limit"):
        decode_bytes(data, max_pixels=50_000_000)


def test_gif_with_10k_frames_decodes_its_first_frame_quickly():
    import time

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).convert("P")
              for _ in range(10_000)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    t = time.perf_counter()
    d = decode_bytes(buf.getvalue(), target_size=64)
    assert time.perf_counter() - t < 2.0
    assert (d.width, d.height, d.format) == (16, 16, "gif")


def test_malformed_exif_is_ignored_not_fatal(chelsea):
    # An orientation entry whose value offset points past the end of the EXIF block.
    broken = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    d = decode_bytes(_encode(Image.fromarray(chelsea), "JPEG", exif=broken))
    assert d.pixels.shape == (300, 451, 3)


def test_fifo_and_oversized_files_are_refused_without_reading(tmp_path, chelsea):
    import os

    from copytrace.descriptors.decode import decode_file

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):
        decode_file(fifo)  # must not block waiting for a writer
    big = tmp_path / "big.jpg"
    big.write_bytes(jpeg_bytes(chelsea))
    with pytest.raises(DecodeError, match="file too large"):
        decode_file(big, max_bytes=1000)
    link = tmp_path / "loop.jpg"
    link.symlink_to(link)
    with pytest.raises(DecodeError, match="symbolic link loop"):
        decode_file(link)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(DecodeError, match="broken symbolic link"):
        decode_file(dangling)
