"""Held-out groups: validate on whole sequences (drives, scenes, patients) the model never saw.

Frames of one video sequence are near-duplicates, so a validation split drawn from the same
sequences as training measures memory, not generalisation. CamVid shows it: the authors' val
split is 101 frames of drive 0016E5, which also gives 204 of the 367 training frames, while the
test split is later (dusk) frames of 0001TP and the new drive Seq05VD. Select models and recipes
on groups held out of training instead (e.g. train on 0006R0 + 0016E5, validate on 0001TP, or
leave each drive out in turn).

A sample's group is read from its file name by ``pattern``, a regular expression whose first
group is the sequence: the default ``^(.+?)_`` takes everything before the first underscore
(CamVid ``0001TP_006690.png`` -> ``0001TP``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import ArgumentError
from .base import SegmentationDataset

DEFAULT_GROUP_PATTERN = r"^(.+?)_"


def group_of(name: str, pattern: str = DEFAULT_GROUP_PATTERN) -> str:
    """The group (sequence) a sample name belongs to; names the pattern misses are their own."""
    match = re.search(pattern, name)
    return match.group(1) if match and match.groups() else name


def group_counts(
    dataset: SegmentationDataset, pattern: str = DEFAULT_GROUP_PATTERN
) -> dict[str, int]:
    """Samples per group, in order of first appearance."""
    return dict(Counter(group_of(name, pattern) for name in dataset.names))


class Subset(SegmentationDataset):
    """The samples ``indices`` of ``dataset``, with its class info and transform."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]) -> None:
        super().__init__(transform=dataset.transform)
        self.dataset, self.indices = dataset, list(indices)
        self.info = dataset.info
        self.names = [dataset.names[i] for i in self.indices]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.load(self.indices[index])


def _check_groups(
    dataset: SegmentationDataset, groups: Sequence[str], pattern: str, argument: str
) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ArgumentError(
            "group_pattern", f"{pattern!r} is not a regular expression ({error})"
        ) from None
    found = group_counts(dataset, pattern)
    missing = [g for g in groups if g not in found]
    if missing:
        listing = ", ".join(f"{g} ({n})" for g, n in found.items())
        raise ArgumentError(
            argument, f"{', '.join(missing)}: no such group in this split; groups: {listing}"
        )


def select_groups(
    dataset: SegmentationDataset, groups: Sequence[str], *, pattern: str = DEFAULT_GROUP_PATTERN
) -> Subset:
    """The samples of ``dataset`` whose group is one of ``groups`` (each must exist)."""
    _check_groups(dataset, groups, pattern, "groups")
    wanted = set(groups)
    return Subset(
        dataset, [i for i, n in enumerate(dataset.names) if group_of(n, pattern) in wanted]
    )


def split_groups(
    dataset: SegmentationDataset, groups: Sequence[str], *, pattern: str = DEFAULT_GROUP_PATTERN
) -> tuple[Subset, Subset]:
    """(the samples outside ``groups``, the samples inside them): training and held-out
    validation. Every named group must exist, and some samples must remain for training."""
    _check_groups(dataset, groups, pattern, "holdout_groups")
    held = set(groups)
    inside = [i for i, n in enumerate(dataset.names) if group_of(n, pattern) in held]
    outside = [i for i, n in enumerate(dataset.names) if group_of(n, pattern) not in held]
    if not outside:
        raise ArgumentError("holdout_groups", "would hold out every sample: keep some for training")
    return Subset(dataset, outside), Subset(dataset, inside)
