"""A generic folder dataset for your own data.

    ROOT/[SPLIT/]images/NAME.{png,jpg,...}
    ROOT/[SPLIT/]masks/NAME.png      class-index PNG (0..K-1, void = ignore_index),
                                     or a colour PNG mapped through the palette
    ROOT/classes.json (optional)     {"names": [...], "palette": [[r, g, b], ...], "ignore_index": 255}

Images and masks are matched by file stem. ``SPLIT/`` is used when it exists (train/val/test),
otherwise ROOT itself serves every split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, SegNetError
from .base import DatasetInfo, SegmentationDataset, Transform
from .io import check_pair, list_images, read_image, read_mask

DEFAULT_VOID = 255


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours (the PASCAL VOC bit-interleaving scheme) for datasets without one."""
    colors = []
    for label in range(num_classes):
        r = g = b = 0
        c = label + 1
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def read_class_file(path: Path) -> DatasetInfo:
    """classes.json -> DatasetInfo; palette optional, ignore_index defaults to 255."""
    try:
        spec = json.loads(path.read_text())
        names = tuple(str(n) for n in spec["names"])
        palette = spec.get("palette") or default_palette(len(names))
        palette = tuple(tuple(int(v) for v in color) for color in palette)
        ignore_index = int(spec.get("ignore_index", DEFAULT_VOID))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SegNetError(
            f"{path}: not a valid class file ({error}); see README 'Your own data'"
        ) from None
    if len(palette) != len(names) or any(len(c) != 3 for c in palette):
        raise SegNetError(f"{path}: palette needs one [r, g, b] per class name")
    return DatasetInfo(class_names=names, palette=palette, ignore_index=ignore_index)


def folder_info(
    root: Path, *, num_classes: int | None = None, palette_file: Path | None = None
) -> DatasetInfo:
    """Class names/palette from ``--palette FILE``, ROOT/classes.json, or ``--num-classes``."""
    for candidate in (palette_file, root / "classes.json"):
        if candidate is not None and candidate.is_file():
            return read_class_file(candidate)
        if candidate is palette_file and candidate is not None:
            raise ArgumentError("palette", f"{candidate}: file not found")
    if num_classes is None:
        raise ArgumentError(
            "data", f"{root}: no classes.json; pass `num_classes` K (or `palette` FILE)"
        )
    names = tuple(f"class_{i}" for i in range(num_classes))
    return DatasetInfo(
        class_names=names, palette=default_palette(num_classes), ignore_index=DEFAULT_VOID
    )


class FolderDataset(SegmentationDataset):
    def __init__(
        self,
        root: str | Path,
        *,
        split: str,
        info: DatasetInfo,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        self.info = info
        root = Path(root)
        base = root / split if (root / split / "images").is_dir() else root
        images_dir, masks_dir = base / "images", base / "masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise ArgumentError(
                    "data", f"{root}: expected folder {folder} (see README 'Your own data')"
                )
        masks = {p.stem: p for p in list_images(masks_dir)}
        self.pairs: list[tuple[Path, Path]] = []
        for image in list_images(images_dir):
            if image.stem not in masks:
                raise SegNetError(f"{image}: no mask named {image.stem}.* in {masks_dir}")
            self.pairs.append((image, masks[image.stem]))
        if not self.pairs:
            raise SegNetError(f"{images_dir}: no images found (png, jpg, bmp, tif, webp)")
        self.names = [image.stem for image, _ in self.pairs]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        mask = read_mask(mask_path, palette=self.info.palette, void=self.info.ignore_index)
        check_pair(
            image, mask, num_classes=self.info.num_classes,
            ignore_index=self.info.ignore_index, mask_path=mask_path,
        )  # fmt: skip
        return image, mask
