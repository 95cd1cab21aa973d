"""Engine error classes.

Workers retry an ``EngineError`` a bounded number of times (it may be transient, e.g. a
download that failed or a GPU that ran out of memory), but never a ``PermanentEngineError``:
retrying a bad model directory or a lens of the wrong width only burns worker time, so the
run fails at once with a message that says what was wrong and what to do.
"""


class EngineError(Exception):
    """Something went wrong in the engine; retrying may help."""


class PermanentEngineError(EngineError):
    """The inputs themselves are wrong (bad model dir, unsupported architecture, lens width
    mismatch, bad parameters); retrying cannot help, so do not retry."""
