"""One exception type for every mistake a user can fix, reported as one paragraph."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A bad config value, file or column: the message names it and what would be valid."""


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """', '.join of the valid names closest to `name` (for "did you mean" hints)."""
    matches = difflib.get_close_matches(name, list(valid), n=n, cutoff=0.5)
    return ", ".join(matches) if matches else "none close"
