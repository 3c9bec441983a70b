"""A class legend drawn onto overlays: one row per class -- a colour swatch and the class name --
on a dark translucent box in the top-left corner, wrapped into more columns when the rows would
pass the image's height (what does not fit is cut at the image's edge).

Text uses Pillow's built-in default font, so nothing is downloaded. The legend is drawn once per
(classes, palette, height) as an RGBA patch and alpha-blended onto each image, so a video pays
for the text drawing once, not per frame.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 3  # pixels between the box edge and its rows, and between columns
GAP = 4  # pixels between a swatch and its name
BACKGROUND = (0, 0, 0, 160)  # RGBA: dark, translucent enough to see the scene through
OUTLINE = (220, 220, 220, 255)  # swatch border: a black (void) swatch stays visible


def draw_legend(
    image: np.ndarray, class_names: Sequence[str], palette: Sequence[Sequence[int]]
) -> np.ndarray:
    """(H, W, 3) uint8 -> a copy with the legend blended into its top-left corner. Classes with
    no name in ``class_names`` are named by their index."""
    names = tuple(class_names[i] if i < len(class_names) else str(i) for i in range(len(palette)))
    colours = tuple(tuple(int(v) for v in colour) for colour in palette)
    patch = legend_patch(names, colours, max_height=image.shape[0])  # (h, w, 4)
    h, w = min(patch.shape[0], image.shape[0]), min(patch.shape[1], image.shape[1])
    alpha = patch[:h, :w, 3:].astype(np.float32) / 255  # (h, w, 1)
    out = np.array(image, dtype=np.uint8)
    blended = out[:h, :w] * (1 - alpha) + patch[:h, :w, :3] * alpha
    out[:h, :w] = blended.round().astype(np.uint8)
    return out


@functools.lru_cache(maxsize=16)
def legend_patch(
    names: tuple[str, ...], palette: tuple[tuple[int, ...], ...], *, max_height: int
) -> np.ndarray:
    """(h, w, 4) uint8 RGBA legend whose columns hold as many rows as fit in ``max_height``."""
    font = ImageFont.load_default()
    text_height = max(_text_size(font, name)[1] for name in names + ("Ag",))
    row = text_height + 3  # the swatch is text_height square; 3 pixels between rows
    per_column = max(1, (max_height - 2 * PAD) // row)
    columns = [names[i : i + per_column] for i in range(0, len(names), per_column)]
    widths = [text_height + GAP + max(_text_size(font, n)[0] for n in col) for col in columns]
    size = (PAD + sum(w + PAD for w in widths), 2 * PAD + row * min(per_column, len(names)) - 3)
    canvas = Image.new("RGBA", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, name in enumerate(names):
        column, position = divmod(index, per_column)
        x = PAD + sum(w + PAD for w in widths[:column])
        y = PAD + position * row
        swatch = (x, y, x + text_height - 1, y + text_height - 1)
        draw.rectangle(swatch, fill=(*palette[index][:3], 255), outline=OUTLINE)
        draw.text((x + text_height + GAP, y), name, font=font, fill=(255, 255, 255, 255))
    return np.asarray(canvas)


def _text_size(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    left, _, right, bottom = font.getbbox(text)  # bottom: the height from the draw origin
    return int(right - left), int(bottom)
