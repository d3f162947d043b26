"""A small PNG reader in pure Python (zlib only), for tests that look at a screenshot's pixels
without a Pillow dependency.

    image = read_png("shot.png")
    image.width, image.height
    image.pixel(x, y)        # (r, g, b), whatever the file's color type
    image.rows[y]            # the row's bytes, `image.channels` per pixel

It reads what browsers write: 8-bit grayscale, gray+alpha, RGB or RGBA, not interlaced, every
filter type. Anything else (palettes, 16-bit, Adam7) raises ValueError. A 1200x800 screenshot
takes about a second.
"""

import struct
import zlib
from typing import List, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
"""Bytes per pixel of each supported color type (at 8 bits a sample)."""


class Image:
    def __init__(self, width: int, height: int, channels: int, rows: List[bytes]) -> None:
        self.width = width
        self.height = height
        self.channels = channels
        self.rows = rows

    def pixel(self, x: int, y: int) -> Tuple[int, int, int]:
        """The (r, g, b) at x, y; alpha is left out, gray is repeated."""
        i = x * self.channels
        row = self.rows[y]
        if self.channels >= 3:
            return row[i], row[i + 1], row[i + 2]
        return row[i], row[i], row[i]


def read_png(path: str) -> Image:
    with open(path, "rb") as file:
        data = file.read()
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = len(SIGNATURE), [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in CHANNELS or interlace:
        found = f"depth {depth}, color type {color}, interlace {interlace}"
        raise ValueError(f"{path}: unsupported PNG ({found})")
    channels = CHANNELS[color]
    rows = _unfilter(zlib.decompress(b"".join(idat)), width, height, channels)
    return Image(width, height, channels, rows)


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> List[bytes]:
    """Undoes each row's filter (PNG spec, section 9): the row's first byte names it."""
    stride = width * bpp
    rows: List[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + predictor) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown PNG filter type {kind} in row {y}")
        rows.append(bytes(line))
        previous = line
    return rows
