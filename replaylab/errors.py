"""Exceptions that carry a one-line message meant for the user, not a traceback."""


class ConfigError(ValueError):
    """A configuration mistake: the message names the key, the value and what is allowed."""


class RunError(RuntimeError):
    """A run cannot go on (non-finite loss, no valid checkpoint, ...)."""


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` as one printable line: control characters, line and paragraph separators
    escaped (a value may hold any of them), cut to ``limit`` characters."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                  for c in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."
