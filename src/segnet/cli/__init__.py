"""``segnet`` command line: one sub-command per verb; each maps flags to plain functions.

    train.py      train, bn-stats, demo         (verbs that produce weights)
    inference.py  evaluate, predict             (verbs that run a trained model)
    tools.py      data, models, export, benchmark
    serve.py      serve                         (the web demo and HTTP API)
    args.py       shared flags, their parsers and choices

Bad input never ends in a traceback: :class:`SegNetError` becomes ``segnet: error: ...`` and
exit status 2 (as argparse does for bad flags), with argument names written as flags.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .. import __version__
from ..errors import SegNetError
from .inference import add_evaluate, add_predict
from .serve import add_serve
from .tools import add_benchmark, add_data, add_export, add_models
from .train import add_bn_stats, add_demo, add_train

VERBS = (
    add_demo, add_train, add_evaluate, add_bn_stats, add_predict, add_data, add_models,
    add_export, add_benchmark, add_serve,
)  # fmt: skip

__all__ = ["build_parser", "main"]


class UsageError(Exception):
    """A flag argparse rejected; its one-line message names the verb and the flag."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``segnet VERB: error: ...``), not the usage block;
    ``--help`` still prints the usage. Sub-command parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in VERBS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except SegNetError as error:
        print(f"segnet: error: {error.as_flag()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segnet: interrupted; files already written are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
