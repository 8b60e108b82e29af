"""A tiny PNG line chart with no plotting library: numpy raster, a 5×7 bitmap font, zlib.

matplotlib is not a dependency, and the chart needs only lines, axes and a few labels.

>>> png = line_chart({"a": [0.1, 0.2], "b": [0.2, 0.1]}, title="t", x_label="x")
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "@": "01110 10001 00001 01101 10101 10101 01110",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}
_FONT = {
    c: np.array([[b == "1" for b in row] for row in rows.split()], dtype=bool)
    for c, rows in _GLYPHS.items()
}
#: one colour per series, in order (matplotlib's tab10)
COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.px = np.full((height, width, 3), 255, dtype=np.uint8)

    def dot(self, x: float, y: float, colour: tuple[int, int, int], size: int = 1) -> None:
        h, w, _ = self.px.shape
        x0, y0 = round(x), round(y)
        self.px[max(0, y0) : max(0, min(h, y0 + size)), max(0, x0) : max(0, min(w, x0 + size))] = (
            colour
        )

    def line(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        colour: tuple[int, int, int],
        size: int,
    ) -> None:
        steps = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])) * 2) + 1
        for t in np.linspace(0.0, 1.0, steps):
            self.dot(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, colour, size)

    def text(
        self, x: int, y: int, s: str, colour: tuple[int, int, int] = (0, 0, 0), scale: int = 2
    ) -> None:
        """Upper-case text, top-left at (x, y); unknown characters print as blanks."""
        for n, ch in enumerate(s.upper()):
            glyph = _FONT.get(ch, _FONT[" "])
            for r, c in zip(*np.nonzero(glyph), strict=True):
                self.dot(x + (6 * n + int(c)) * scale, y + int(r) * scale, colour, scale)

    def png(self) -> bytes:
        h, w, _ = self.px.shape
        raw = b"".join(b"\x00" + self.px[r].tobytes() for r in range(h))

        def chunk(tag: bytes, body: bytes) -> bytes:
            return (
                struct.pack(">I", len(body))
                + tag
                + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
            )

        header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def line_chart(
    series: dict[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    colours: Sequence[str] = COLOURS,
    width: int = 1000,
    height: int = 480,
) -> bytes:
    """PNG bytes: one line per series over x = 1..n, y from 0, a legend on the right."""
    c = _Canvas(width, height)
    left, right, top, bottom = 80, 330, 50, 60
    values = [v for s in series.values() for v in s]
    top_y = math.ceil((max(values, default=0.0) or 1.0) * 20) / 20
    n = max((len(s) for s in series.values()), default=1)

    def xy(i: float, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * (i / max(n - 1, 1))
        return x, height - bottom - (height - top - bottom) * (v / top_y)

    black, grey = (0, 0, 0), (220, 220, 220)
    c.text(left, 15, title)
    for t in range(6):
        v = top_y * t / 5
        _, y = xy(0, v)
        c.line((left, y), (width - right, y), grey, 1)
        c.text(8, int(y) - 7, f"{v:.3f}")
    c.line((left, height - bottom), (width - right, height - bottom), black, 2)
    c.line((left, top), (left, height - bottom), black, 2)
    for i in range(n):
        x, _ = xy(i, 0)
        c.text(int(x) - 5, height - bottom + 10, str(i + 1))
    c.text(left, height - 25, x_label)
    for k, (name, s) in enumerate(series.items()):
        colour = _rgb(colours[k % len(colours)])
        pts = [xy(i, v) for i, v in enumerate(s)]
        for a, b in itertools.pairwise(pts):
            c.line(a, b, colour, 3)
        ly = top + 24 * k
        c.line((width - right + 15, ly + 7), (width - right + 45, ly + 7), colour, 4)
        c.text(width - right + 52, ly, name)
    return c.png()


__all__ = ["COLOURS", "line_chart"]
