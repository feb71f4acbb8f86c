"""Relay cursors: opaque base64 of a JSON keyset position, and page-size checks."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from app.infra.errors import BadUserInput


def encode_cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position), separators=(",", ":")).encode()).decode()


MAX_CURSOR = 1024  # characters; our own cursors are well under 200
SAFE_INT = 2**53  # every integer a cursor can carry (ids, counts, years, timestamps) is smaller


def _in_range(part: Any) -> bool:
    if isinstance(part, int):
        return -SAFE_INT < part < SAFE_INT
    if isinstance(part, float):
        return math.isfinite(part) and abs(part) < SAFE_INT
    if isinstance(part, str):
        return len(part) <= 512 and "\x00" not in part
    return True


def decode_cursor(cursor: str, kinds: tuple[type | tuple[type, ...], ...]) -> list[Any]:
    """The position inside ``cursor``, each part checked against ``kinds`` and for range;
    BAD_USER_INPUT otherwise (a forged cursor is the client's mistake, never INTERNAL)."""
    if len(cursor) > MAX_CURSOR:
        raise BadUserInput("malformed cursor", field="after")
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError, RecursionError) as exc:
        raise BadUserInput("malformed cursor", field="after") from exc
    if (
        not isinstance(position, list)
        or len(position) != len(kinds)
        or not all(
            isinstance(p, k) and not isinstance(p, bool) and _in_range(p)
            for p, k in zip(position, kinds, strict=True)
        )
    ):
        raise BadUserInput("malformed cursor", field="after")
    return position


def check_first(first: int, maximum: int) -> int:
    if first < 0:
        raise BadUserInput("first must not be negative", field="first")
    if first > maximum:
        raise BadUserInput(f"first must be at most {maximum}", field="first")
    return first
