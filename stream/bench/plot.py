"""A dependency-free PNG of sentences/s against batch size, from an encoder benchmark report.

matplotlib is not a dependency of crossprofile, and one line chart does not justify adding it:
this module draws on a numpy canvas (lines, markers, a 5×7 bitmap font for the labels) and writes
the PNG with ``zlib`` — about 200 lines, no new package.

Series: PyTorch unsorted and length-sorted (``torch b1`` is their batch-1 point; on a GPU also
PyTorch fp16), the ONNX variants, and the seed method as a dashed horizontal line. The x axis is
log2(batch size).
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Canvas = npt.NDArray[np.uint8]
RGB = tuple[int, int, int]

WIDTH: Final = 1000
HEIGHT: Final = 540
SCALE: Final = 2  # font pixels per bitmap pixel
COLOURS: Final[dict[str, RGB]] = {
    "torch unsorted": (150, 150, 150),
    "torch sorted": (230, 120, 20),
    "torch fp16 sorted": (240, 190, 30),
    "onnx fp32": (30, 100, 200),
    "onnx int8": (40, 160, 60),
    "onnx fp16": (20, 20, 20),
    "onnx fp32-plain": (140, 80, 180),
    "seed": (200, 30, 30),
}

# Classic 5×7 font, column-major: 5 bytes per glyph, bit 0 is the top row.
_FONT: Final[dict[str, tuple[int, int, int, int, int]]] = {
    "0": (0x3E, 0x51, 0x49, 0x45, 0x3E), "1": (0x00, 0x42, 0x7F, 0x40, 0x00),
    "2": (0x42, 0x61, 0x51, 0x49, 0x46), "3": (0x21, 0x41, 0x45, 0x4B, 0x31),
    "4": (0x18, 0x14, 0x12, 0x7F, 0x10), "5": (0x27, 0x45, 0x45, 0x45, 0x39),
    "6": (0x3C, 0x4A, 0x49, 0x49, 0x30), "7": (0x01, 0x71, 0x09, 0x05, 0x03),
    "8": (0x36, 0x49, 0x49, 0x49, 0x36), "9": (0x06, 0x49, 0x49, 0x29, 0x1E),
    "A": (0x7E, 0x11, 0x11, 0x11, 0x7E), "B": (0x7F, 0x49, 0x49, 0x49, 0x36),
    "C": (0x3E, 0x41, 0x41, 0x41, 0x22), "D": (0x7F, 0x41, 0x41, 0x22, 0x1C),
    "E": (0x7F, 0x49, 0x49, 0x49, 0x41), "F": (0x7F, 0x09, 0x09, 0x09, 0x01),
    "G": (0x3E, 0x41, 0x49, 0x49, 0x7A), "H": (0x7F, 0x08, 0x08, 0x08, 0x7F),
    "I": (0x00, 0x41, 0x7F, 0x41, 0x00), "J": (0x20, 0x40, 0x41, 0x3F, 0x01),
    "K": (0x7F, 0x08, 0x14, 0x22, 0x41), "L": (0x7F, 0x40, 0x40, 0x40, 0x40),
    "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F), "N": (0x7F, 0x04, 0x08, 0x10, 0x7F),
    "O": (0x3E, 0x41, 0x41, 0x41, 0x3E), "P": (0x7F, 0x09, 0x09, 0x09, 0x06),
    "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E), "R": (0x7F, 0x09, 0x19, 0x29, 0x46),
    "S": (0x46, 0x49, 0x49, 0x49, 0x31), "T": (0x01, 0x01, 0x7F, 0x01, 0x01),
    "U": (0x3F, 0x40, 0x40, 0x40, 0x3F), "V": (0x1F, 0x20, 0x40, 0x20, 0x1F),
    "W": (0x3F, 0x40, 0x38, 0x40, 0x3F), "X": (0x63, 0x14, 0x08, 0x14, 0x63),
    "Y": (0x07, 0x08, 0x70, 0x08, 0x07), "Z": (0x61, 0x51, 0x49, 0x45, 0x43),
    " ": (0x00, 0x00, 0x00, 0x00, 0x00), ".": (0x00, 0x60, 0x60, 0x00, 0x00),
    "/": (0x20, 0x10, 0x08, 0x04, 0x02), "-": (0x08, 0x08, 0x08, 0x08, 0x08),
    ":": (0x00, 0x36, 0x36, 0x00, 0x00), "(": (0x00, 0x1C, 0x22, 0x41, 0x00),
    ")": (0x00, 0x41, 0x22, 0x1C, 0x00), ",": (0x00, 0x50, 0x30, 0x00, 0x00),
    "=": (0x14, 0x14, 0x14, 0x14, 0x14), "%": (0x23, 0x13, 0x08, 0x64, 0x62),
    "+": (0x08, 0x08, 0x3E, 0x08, 0x08), "?": (0x02, 0x01, 0x51, 0x09, 0x06),
    "@": (0x32, 0x49, 0x79, 0x41, 0x3E), "_": (0x40, 0x40, 0x40, 0x40, 0x40),
}  # fmt: skip


def text_width(text: str, scale: int = SCALE) -> int:
    return len(text) * 6 * scale


def draw_text(
    img: Canvas, x: int, y: int, text: str, colour: RGB = (0, 0, 0), scale: int = SCALE
) -> None:
    """Upper-case ``text`` with its top-left corner at (x, y); unknown characters show as '?'."""
    for i, ch in enumerate(text.upper()):
        glyph = _FONT.get(ch, _FONT["?"])
        for col, bits in enumerate(glyph):
            for row in range(7):
                if bits >> row & 1:
                    x0, y0 = x + (i * 6 + col) * scale, y + row * scale
                    _fill(img, x0, y0, x0 + scale, y0 + scale, colour)


def _fill(img: Canvas, x0: int, y0: int, x1: int, y1: int, colour: RGB) -> None:
    h, w = img.shape[:2]
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1] = colour


def draw_line(
    img: Canvas,
    p: tuple[float, float],
    q: tuple[float, float],
    colour: RGB,
    width: int = 3,
    dash: int = 0,
) -> None:
    """A straight line of ``width`` pixels; ``dash`` > 0 draws dashes of that length."""
    steps = max(1, int(math.hypot(q[0] - p[0], q[1] - p[1])))
    r = width // 2
    for s in range(steps + 1):
        if dash and (s // dash) % 2:
            continue
        x = round(p[0] + (q[0] - p[0]) * s / steps)
        y = round(p[1] + (q[1] - p[1]) * s / steps)
        _fill(img, x - r, y - r, x + r + 1, y + r + 1, colour)


def encode_png(img: Canvas) -> bytes:
    """An 8-bit RGB PNG of ``img`` (height × width × 3, uint8)."""
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _series(report: dict[str, Any]) -> tuple[dict[str, list[tuple[int, float]]], float | None]:
    series: dict[str, list[tuple[int, float]]] = {}
    seed = None
    single = None
    for r in report["results"]:
        rate = float(r["sentences_per_s_median"])
        if r["method"] == "seed":
            seed = rate
        elif r["method"] == "torch-single":
            single = rate
        elif r["method"] == "torch-batched":
            variant = "" if r["variant"] == "fp32" else f"{r['variant']} "
            key = f"torch {variant}{'sorted' if r['sorted'] else 'unsorted'}"
            series.setdefault(key, []).append((int(r["batch_size"]), rate))
        elif r["engine"] == "onnxruntime" and r["method"] == "onnx":  # not the arrival-order runs
            series.setdefault(f"onnx {r['variant']}", []).append((int(r["batch_size"]), rate))
    if single is not None:
        for key in ("torch unsorted", "torch sorted"):
            if key in series:
                series[key].append((1, single))
    return {k: sorted(v) for k, v in series.items()}, seed


def render(report: dict[str, Any]) -> Canvas:
    """The chart as an RGB canvas."""
    img = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    series, seed = _series(report)
    legend = [*series, *(["seed"] if seed is not None else [])]
    labels = ["seed (pad 512, b1)" if n == "seed" else n for n in legend]
    box_w = 60 + max((text_width(label) for label in labels), default=0)
    left, right, top, bottom = 90, WIDTH - box_w - 50, 60, HEIGHT - 70
    xs = sorted({bs for pts in series.values() for bs, _ in pts} or {1})
    ymax = max([rate for pts in series.values() for _, rate in pts] + [seed or 0.0, 1.0])
    step = _nice_step(ymax / 5)
    ymax = step * math.ceil(ymax * 1.05 / step)
    lx0, lx1 = math.log2(xs[0]), math.log2(xs[-1]) if xs[-1] > xs[0] else math.log2(xs[0]) + 1

    def px(bs: int) -> float:
        return left + (math.log2(bs) - lx0) / (lx1 - lx0) * (right - left)

    def py(rate: float) -> float:
        return bottom - rate / ymax * (bottom - top)

    machine = report.get("machine", {})
    where = machine.get("gpu") or machine.get("cpu", {}).get("model", "?")
    title = f"encoder sentences/s vs batch size - {where}"
    draw_text(img, left, 18, title[:78])
    grid = (225, 225, 225)
    tick = 0.0
    while tick <= ymax + 1e-9:
        y = round(py(tick))
        draw_line(img, (left, y), (right, y), grid, width=1)
        label = f"{tick:g}"
        draw_text(img, left - 10 - text_width(label), y - 7, label)
        tick += step
    for bs in xs:
        x = round(px(bs))
        draw_line(img, (x, top), (x, bottom), grid, width=1)
        draw_text(img, x - text_width(str(bs)) // 2, bottom + 10, str(bs))
    draw_line(img, (left, bottom), (right, bottom), (0, 0, 0), width=2)
    draw_line(img, (left, top), (left, bottom), (0, 0, 0), width=2)
    draw_text(img, (left + right - text_width("batch size")) // 2, bottom + 36, "batch size")
    if seed is not None:
        draw_line(img, (left, py(seed)), (right, py(seed)), COLOURS["seed"], width=2, dash=8)
    for name, pts in series.items():
        colour = COLOURS.get(name, (0, 0, 0))
        coords = [(px(bs), py(rate)) for bs, rate in pts]
        for a, b in itertools.pairwise(coords):
            draw_line(img, a, b, colour, width=3)
        for cx, cy in coords:
            _fill(img, round(cx) - 5, round(cy) - 5, round(cx) + 6, round(cy) + 6, colour)
    bx, by = right + 24, top  # outside the plot: never hides a line
    _fill(img, bx - 1, by - 1, bx + box_w + 1, by + 24 * len(legend) + 9, (120, 120, 120))
    _fill(img, bx, by, bx + box_w, by + 24 * len(legend) + 8, (255, 255, 255))
    for i, (name, label) in enumerate(zip(legend, labels, strict=True)):
        ly = by + 8 + i * 24
        _fill(img, bx + 10, ly + 2, bx + 34, ly + 12, COLOURS.get(name, (0, 0, 0)))
        draw_text(img, bx + 44, ly, label)
    return img


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw))


def plot_throughput(report: dict[str, Any], path: Path) -> Path:
    """Write the chart of ``report`` (an encoder benchmark report) to ``path`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(render(report)))
    return path


__all__ = ["encode_png", "plot_throughput", "render"]
