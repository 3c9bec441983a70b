"""Reading and writing images and label maps, with errors that name the file at fault.

Everything written goes to a temporary file in the destination folder first and is then renamed
into place, so an interrupted run never leaves a half-written PNG behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SegNetError
from ..files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Read frame by frame through PyAV (segnet.engine.video); a .gif is a video, not its first frame.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


# Pixels we agree to decode: 16x a 4K frame. A header claiming more is refused before decoding
# (Pillow's own bomb check warns from 89M pixels and raises from 179M, with a traceback).
MAX_PIXELS = 16 * 3840 * 2160


def _open(path: Path) -> Image.Image:
    """The decoded image, or a one-line error naming the file; no file handle is left open."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{width}x{height}")
                image.load()
                return image.copy()  # in memory: the file is closed on leaving the block
    except FileNotFoundError:
        raise SegNetError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SegNetError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SegNetError(
            f"{path}: its header claims more pixels than this tool decodes ({MAX_PIXELS:,}); "
            "resize the image first"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise SegNetError(f"{path}: not a readable image ({error}); replace or remove it") from None


def read_image(path: str | Path) -> np.ndarray:
    """RGB image as uint8 (H, W, 3): greyscale, palette and RGBA are converted, and 16-bit or
    32-bit greyscale is scaled to 8 bits (Pillow's own conversion clips it to white)."""
    return to_rgb(_open(Path(path)))


def to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image as RGB uint8 (H, W, 3); 16/32-bit greyscale scaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


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
    keys = _colour_keys(image)
    labels = np.full(keys.shape, void, dtype=np.uint8)
    for index, colour in enumerate(palette):
        labels[keys == _key(colour)] = index
    return labels


def unknown_colour_pixels(path: str | Path, palette: Sequence[tuple[int, int, int]]) -> int:
    """Pixels of a colour mask whose colour is neither in ``palette`` nor black: ``read_mask``
    turns them into void, so a typo in a palette silently erases a class. 0 for index masks."""
    image = _open(Path(path))
    if image.mode in ("L", "P", "I", "I;16"):
        return 0
    known = np.array([_key(c) for c in palette] + [0], dtype=np.int64)
    return int((~np.isin(_colour_keys(image), known)).sum())


def _colour_keys(image: Image.Image) -> np.ndarray:
    """(H, W) int64 with one key per RGB colour: 0xRRGGBB."""
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _key(colour: Sequence[int]) -> int:
    r, g, b = colour
    return (int(r) << 16) | (int(g) << 8) | int(b)


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
