"""List files: one ``IMAGE LABEL`` pair per line, as the SegNet authors' CamVid ``train.txt`` and
SUN RGB-D's. Paths may be the authors' absolute paths (``/SegNet/CamVid/train/X.png``) or
relative ones; each is found under the dataset root by its longest tail that exists there
(``SegNet/CamVid/train/X.png``, then ``CamVid/train/X.png``, then ``train/X.png`` ...)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SegNetError


def resolve_listed(root: Path, text: str) -> Path | None:
    """A path from a list file, found under ``root`` by its longest existing tail (or as given)."""
    path = Path(text)
    if path.is_absolute() and path.is_file():
        return path
    parts = [p for p in path.parts if p not in ("/", "\\", ".", "")]
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def read_list_file(listing: Path, root: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a list file; a malformed line or a missing file names its line."""
    pairs = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise SegNetError(f"{listing}:{number}: expected 'IMAGE LABEL', got {line!r}")
        resolved = [resolve_listed(root, field) for field in fields]
        for field, path in zip(fields, resolved):
            if path is None:
                raise SegNetError(f"{listing}:{number}: {field} does not exist under {root}")
        pairs.append((resolved[0], resolved[1]))
    return pairs
