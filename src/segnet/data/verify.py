"""``segnet data verify``: read every image and mask of a dataset once, before a long training
does (keras_segmentation users know it as ``verify_dataset``). Every problem is collected, not
just the first: unreadable files, masks of another size than their image, labels outside
0..K-1 and void, and colour-mask pixels whose colour is not in the palette (read as void)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import SegNetError
from .base import SegmentationDataset
from .io import unknown_colour_pixels


@dataclass
class Verification:
    """What one pass over a dataset found."""

    images: int = 0
    sizes: Counter = field(default_factory=Counter)  # (H, W) -> images of that size
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    unknown_colours: dict[str, int] = field(default_factory=dict)  # mask -> pixels read as void

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_dataset(
    dataset: SegmentationDataset, *, found: Verification | None = None
) -> Verification:
    """Loads every sample of ``dataset`` (its own checks run on each), collecting problems."""
    found = found or Verification()
    pairs = getattr(dataset, "pairs", None)  # file datasets know their mask paths
    for index in range(len(dataset)):
        try:
            image, _ = dataset.load(index)
        except SegNetError as error:
            found.problems.append(str(error))
            continue
        found.images += 1
        found.sizes[image.shape[:2]] += 1
        if pairs is not None:  # index masks cost one header read: 0 unknown colours
            mask_path = pairs[index][1]
            unknown = unknown_colour_pixels(mask_path, dataset.info.palette)
            if unknown:
                found.unknown_colours[str(mask_path)] = unknown
    return found


def verify_before_training(*datasets: SegmentationDataset) -> None:
    """Every image and mask read once, so a corrupt val image stops a run before its first
    epoch, not after it; the error names the first problem (``segnet data verify`` lists all)."""
    found = Verification()
    for dataset in datasets:
        verify_dataset(dataset, found=found)
    if not found.ok:
        raise SegNetError(
            f"{len(found.problems)} problem(s) in the data, the first: {found.problems[0]} "
            "(segnet data verify lists them all)"
        )
