"""Declaring settings: a dataclass field with its help text and allowed values.

Used by the run config and by every replay method's parameters, so ``--help``,
validation and the one-line errors are the same everywhere.
"""

from __future__ import annotations

from dataclasses import field, fields


def opt(default, help: str, *, min=None, max=None, choices=None, agents=None):
    meta = {"help": help, "min": min, "max": max, "choices": choices, "agents": agents}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def declared(cls) -> dict:
    """A method's user parameters: its dataclass fields declared with ``opt``."""
    return {f.name: f for f in fields(cls) if "help" in f.metadata}
