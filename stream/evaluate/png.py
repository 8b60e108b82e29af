"""A tiny PNG line chart with no plotting library, drawn with :mod:`stream.bench.plot`'s numpy
canvas, 5×7 bitmap font and PNG writer (matplotlib is not a dependency).

>>> png = line_chart({"a": [0.1, 0.2], "b": [0.2, 0.1]}, title="t", x_label="x")
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ..bench.plot import draw_line, draw_text, encode_png

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
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 80, 330, 50, 60
    values = [v for s in series.values() for v in s]
    top_y = math.ceil((max(values, default=0.0) or 1.0) * 20) / 20
    n = max((len(s) for s in series.values()), default=1)

    def xy(i: float, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * (i / max(n - 1, 1))
        return x, height - bottom - (height - top - bottom) * (v / top_y)

    black, grey = (0, 0, 0), (220, 220, 220)
    draw_text(img, left, 15, title)
    for t in range(6):
        v = top_y * t / 5
        _, y = xy(0, v)
        draw_line(img, (left, y), (width - right, y), grey, 1)
        draw_text(img, 8, int(y) - 7, f"{v:.3f}")
    draw_line(img, (left, height - bottom), (width - right, height - bottom), black, 2)
    draw_line(img, (left, top), (left, height - bottom), black, 2)
    for i in range(n):
        x, _ = xy(i, 0)
        draw_text(img, int(x) - 5, height - bottom + 10, str(i + 1))
    draw_text(img, left, height - 25, x_label)
    for k, (name, s) in enumerate(series.items()):
        colour = _rgb(colours[k % len(colours)])
        pts = [xy(i, v) for i, v in enumerate(s)]
        for a, b in itertools.pairwise(pts):
            draw_line(img, a, b, colour, 3)
        ly = top + 24 * k
        draw_line(img, (width - right + 15, ly + 7), (width - right + 45, ly + 7), colour, 4)
        draw_text(img, width - right + 52, ly, name)
    return encode_png(img)


__all__ = ["COLOURS", "line_chart"]
