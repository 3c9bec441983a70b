"""``segnet`` command line: one sub-command per verb; each maps flags to a plain function.

Bad input never ends in a traceback: :class:`SegNetError` becomes ``segnet: error: ...`` and
exit status 2 (as argparse does for bad flags).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import SegNetError
from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.REGISTRY:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SegNetError as error:
        print(f"segnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segnet: interrupted; checkpoints already written are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
