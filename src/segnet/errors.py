"""The one exception users see: a clear, one-line message naming the file or flag at fault.

The CLI prints ``segnet: error: <message>`` and exits with status 2; the Python API raises it.
It subclasses ``ValueError`` so callers that catch bad-input errors generically still do.
"""


class SegNetError(ValueError):
    """Bad input (file, flag, checkpoint, config) with a message that says what to do."""
