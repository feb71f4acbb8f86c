"""Relay cursors: opaque base64 of a JSON keyset position, and page-size checks."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from app.errors import BadUserInput


def encode_cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position), separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, kinds: tuple[type | tuple[type, ...], ...]) -> list[Any]:
    """The position inside ``cursor``, each part checked against ``kinds``; BAD_USER_INPUT otherwise."""
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise BadUserInput("malformed cursor", field="after") from exc
    if (
        not isinstance(position, list)
        or len(position) != len(kinds)
        or not all(isinstance(p, k) and not isinstance(p, bool) for p, k in zip(position, kinds, strict=True))
    ):
        raise BadUserInput("malformed cursor", field="after")
    return position


def check_first(first: int, maximum: int) -> int:
    if first < 0:
        raise BadUserInput("first must not be negative", field="first")
    if first > maximum:
        raise BadUserInput(f"first must be at most {maximum}", field="first")
    return first
