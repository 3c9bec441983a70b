"""The errors users see: one line that names the file or argument at fault and what to do.

The CLI prints ``segnet: error: <message>`` and exits with status 2; the Python API raises.
Both subclass ``ValueError`` so callers that catch bad-input errors generically still do.

Library code speaks of values and of its own argument names, never of command-line flags:
:class:`ArgumentError` carries the argument's name (``checkpoint``, ``batch_size``), and the CLI
alone turns it into a flag (``--checkpoint``, ``--batch-size``). Other argument names a message
mentions are written in backticks (`` `num_classes` ``) and are turned into flags the same way.
"""

from __future__ import annotations

import re

_NAMED = re.compile(r"`([a-z][a-z0-9_]*)`")


class SegNetError(ValueError):
    """Bad input (file, flag, checkpoint, config) with a message that says what to do."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(_NAMED.sub(lambda m: m.group(1), message))

    def as_flag(self) -> str:
        """The message with the argument names it mentions written as command-line flags."""
        return _NAMED.sub(lambda m: flag(m.group(1)), self.message)


class ArgumentError(SegNetError):
    """A bad value of the argument ``name`` (a keyword of the Python API or a training-config key).

    ``detail`` follows the name: ``ArgumentError("checkpoint", "runs/x.pt: file not found")``
    reads ``checkpoint runs/x.pt: file not found`` from Python and
    ``--checkpoint runs/x.pt: file not found`` on the command line.
    """

    def __init__(self, name: str, detail: str) -> None:
        self.name, self.detail = name, detail
        super().__init__(f"`{name}` {detail}")

    def renamed(self, name: str) -> ArgumentError:
        """The same complaint about another argument (a checkpoint passed as ``init_weights``)."""
        return ArgumentError(name, self.detail)


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``: config keys and flags are the same words."""
    return "--" + name.replace("_", "-")
