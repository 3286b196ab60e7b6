"""Exceptions that carry a one-line message meant for the user, not a traceback."""


class ConfigError(ValueError):
    """A configuration mistake: the message names the key, the value and what is allowed."""


class RunError(RuntimeError):
    """A run cannot go on (non-finite loss, no valid checkpoint, ...)."""
