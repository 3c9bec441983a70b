"""Reading and writing images and label maps, with errors that name the file at fault.

Everything written goes to a temporary file in the destination folder first and is then renamed
into place, so an interrupted run never leaves a half-written PNG behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SegNetError
from ..files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise SegNetError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise SegNetError(f"{path}: not a readable image ({error}); replace or remove it") from None
    return image


def read_image(path: str | Path) -> np.ndarray:
    """RGB image as uint8 (H, W, 3); greyscale and RGBA are converted."""
    return np.asarray(_open(Path(path)).convert("RGB"))


def read_mask(
    path: str | Path, *, palette: Sequence[tuple[int, int, int]] | None = None, void: int = 255
) -> np.ndarray:
    """Label map as uint8 (H, W): index PNGs as stored; colour PNGs mapped through ``palette``
    (colours not in the palette become ``void``; black is treated as void)."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("L", "P", "I", "I;16"):
        labels = np.asarray(image)
        if labels.max(initial=0) > 255:
            raise SegNetError(f"{path}: label values above 255 are not supported")
        return labels.astype(np.uint8)
    if palette is None:
        raise SegNetError(
            f"{path}: colour mask ({image.mode}) but no palette given; "
            "pass `palette` FILE or store masks as class-index PNGs"
        )
    rgb = np.asarray(image.convert("RGB")).astype(np.int32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    labels = np.full(keys.shape, void, dtype=np.uint8)
    for index, (r, g, b) in enumerate(palette):
        labels[keys == ((r << 16) | (g << 8) | b)] = index
    return labels


def check_pair(
    image: np.ndarray, mask: np.ndarray, *, num_classes: int, ignore_index: int, mask_path: Path
) -> None:
    """A mask must match its image's size and hold only 0..K-1 or the void label."""
    if image.shape[:2] != mask.shape:
        raise SegNetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]} (WxH); masks must match their images"
        )
    bad = np.unique(mask[(mask >= num_classes) & (mask != ignore_index)])
    if bad.size:
        raise SegNetError(
            f"{mask_path}: label values {bad[:5].tolist()} outside 0..{num_classes - 1} "
            f"(void is {ignore_index}); fix the mask or the class count"
        )


def write_png(path: str | Path, array: np.ndarray, *, palette: Sequence[int] | None = None) -> None:
    """Writes uint8 (H, W) or (H, W, 3) as PNG atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        image = image.convert("P")
        image.putpalette(list(palette))
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
