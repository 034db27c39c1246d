"""Training data: readers, loaders, preprocessing, synthetic faces; and the field parser every
text-file reader shares (pairs files included), so its errors name the file and line."""
from __future__ import annotations

from ..errors import ArcbenchError


def nonnegative_int(token: str, path, line: int, what: str) -> int:
    """Parse one field of a text data file; errors name the file and line."""
    try:
        value = int(token)
    except ValueError:
        raise ArcbenchError(f"{what} is not an integer, got {token[:80]!r}", path, line) from None
    if value < 0:
        raise ArcbenchError(f"{what} {value} is negative", path, line)
    return value
