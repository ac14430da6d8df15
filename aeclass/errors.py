"""User-facing errors.

Anything that is the user's fault (a bad flag, a missing or corrupt file, an unknown model name) raises
`AeclassError`; the CLI prints its message as one line and exits non-zero, without a traceback.
Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""


class AeclassError(Exception):
    """An error caused by the user's input, reported as one clear line."""


class DataError(AeclassError):
    """A dataset cannot be found, read or verified."""


class ConfigError(AeclassError):
    """A configuration value or flag is invalid."""
