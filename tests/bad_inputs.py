"""A folder of every awkward input of issue 8, generated in a test's tmp folder.

``write_bad_inputs(folder)`` returns ``{rel_path: expected}`` where ``expected`` is
``"ok"`` for files the loader must accept, or a lower-case fragment of the rejection
reason. Shared by ``test_io.py`` (loader) and ``test_robustness.py`` (whole workflow).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHAPE = (240, 320)  # small, but above io.min_side_px and with room for a fiber


def fiber_like(shape=SHAPE, seed=0, dark_fiber=True) -> np.ndarray:
    """A plain end-face look-alike (uint8 gray): textured ferrule, a disc, some noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2 + 3.3, xx - w / 2 - 5.1)
    radius = 0.3 * min(h, w)
    ferrule, fiber = (200, 70) if dark_fiber else (40, 190)
    img = np.where(r < radius, fiber, ferrule).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img += cv2.GaussianBlur(rng.normal(0, 12, shape).astype(np.float32), (0, 0), 2)
    img += rng.normal(0, 3, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_of_zeros(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of the given size, built without the pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    comp = zlib.compressobj(1)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def extraneous_bytes_jpeg(gray: np.ndarray) -> bytes:
    """A JPEG that libjpeg decodes with "Corrupt JPEG data: 1 extraneous bytes before
    marker 0xda", like many scope files."""
    data = _encode(Image.fromarray(gray), "JPEG", quality=90)
    sos = data.index(b"\xff\xda")
    return data[:sos] + b"\x00" + data[sos:]


def write_bad_inputs(folder, with_huge: bool = True) -> dict[str, str]:
    """Write the awkward inputs into ``folder``; return ``{rel_path: expected}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gray = fiber_like()
    rgb = np.dstack([gray, (gray * 0.9).astype(np.uint8), (gray * 0.8).astype(np.uint8)])
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, expect: str) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        expected[name] = expect

    png = _encode(Image.fromarray(gray), "PNG")
    jpg = _encode(Image.fromarray(rgb), "JPEG", quality=90)
    put("fiber.png", png, "ok")
    put("empty.png", b"", "empty file")
    put("truncated.png", png[: len(png) // 2], "truncated")
    put("truncated.jpg", jpg[: len(jpg) // 2], "truncated")
    put("page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "not an image")
    put("notes.png", b"scope export log\nexposure=12ms\n", "not an image")
    put("archive.tif", b"PK\x03\x04" + bytes(range(256)) * 4, "not an image")
    texture = cv2.GaussianBlur(np.random.default_rng(3).normal(128, 20, SHAPE), (0, 0), 2)
    put("no_fiber.png", _encode(Image.fromarray(texture.astype(np.uint8)), "PNG"), "ok")
    put("black.png", _encode(Image.fromarray(np.zeros(SHAPE, np.uint8)), "PNG"), "blank")
    put("white.jpg", _encode(Image.fromarray(np.full(SHAPE, 255, np.uint8)), "JPEG"), "blank")
    saturated = np.clip(gray.astype(np.int32) * 3, 0, 255).astype(np.uint8)
    put("saturated.png", _encode(Image.fromarray(saturated), "PNG"), "ok")
    put("tiny.png", _encode(Image.fromarray(gray[:16, :16]), "PNG"), "too small")
    if with_huge:
        put("huge.png", _png_of_zeros(12000, 9000), "too large")
    g16 = (gray.astype(np.uint16) * 16 + 7)  # 12-bit data in a 16-bit container
    put("gray16.png", cv2.imencode(".png", g16)[1].tobytes(), "ok")
    put("gray16.tif", cv2.imencode(".tiff", g16)[1].tobytes(), "ok")
    put("rgba.png", _encode(Image.fromarray(np.dstack([rgb, np.full(SHAPE, 200, np.uint8)])),
                            "PNG"), "ok")
    put("palette.png", _encode(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"), "ok")
    pages = [Image.fromarray(gray), Image.fromarray(255 - gray), Image.fromarray(gray // 2)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    put("multipage.tiff", buf.getvalue(), "ok")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    put("exif_rotated.jpg", _encode(rotated, "JPEG", exif=exif), "ok")
    put("cmyk.jpg", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), "ok")
    put("fiber.bmp", _encode(Image.fromarray(rgb), "BMP"), "ok")
    put("extraneous.jpg", extraneous_bytes_jpeg(gray), "ok")
    put("UPPER.PNG", png, "ok")
    put("SHOUT.JPG", jpg, "ok")
    put("sub dir/with space (1).png", png, "ok")
    put("ünïcödé_光纤.png", png, "ok")
    put("$(touch pwned); rm -rf ~ `x` 'q' \"d\" & | > * ?.png", png, "ok")
    put("a.png", png, "ok")
    put("a.jpg", jpg, "ok")
    os.symlink("fiber.png", folder / "link.png")
    expected["link.png"] = "ok"
    os.symlink("loop.png", folder / "loop.png")
    expected["loop.png"] = "symbolic link loop"
    os.symlink("missing.png", folder / "dangling.png")
    expected["dangling.png"] = "broken symbolic link"
    os.symlink("..", folder / "sub dir" / "up")  # a folder loop the scan must survive
    os.mkfifo(folder / "pipe.png")
    expected["pipe.png"] = "not a regular file"
    put("locked.png", png, "permission denied" if os.geteuid() != 0 else "ok")
    os.chmod(folder / "locked.png", 0)
    return expected
