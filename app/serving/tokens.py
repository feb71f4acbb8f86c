"""Opaque, signed tokens the API hands out and takes back: the cursor of a recommendation
page, and the id a recommendation carries (for ``recordClick``).

A token is its JSON payload in base64url, a dot, and the first 16 bytes of its HMAC-SHA256
under the deployment's signing secret: a client can read it but not change it, and a
replica can check one another replica wrote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from app.infra.errors import BadUserInput

MAX_TOKEN = 512  # characters: a real token is about 150


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: str, purpose: str) -> None:
        self._key = hashlib.sha256(f"{purpose}\x1f{secret}".encode()).digest()  # one key per purpose

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16])

    def sign(self, payload: list[Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def read(self, token: str, *, field: str) -> list[Any]:
        """The payload of a token this signer wrote; BAD_USER_INPUT naming ``field`` otherwise
        (whatever characters the token holds)."""
        body, _, mac = token.partition(".")
        if len(token) > MAX_TOKEN or not hmac.compare_digest(
            mac.encode("utf-8", "surrogatepass"), self._mac(body).encode()
        ):
            raise BadUserInput(f"invalid {field}: it was changed, or not written by this server", field=field)
        payload = json.loads(_unb64(body))
        if not isinstance(payload, list):
            raise BadUserInput(f"invalid {field}", field=field)
        return payload


def peek(token: str) -> list[Any] | None:
    """A token's payload read without checking its signature, or None when it is not one: for
    pricing an operation before it runs (execution reads it with :meth:`Signer.read`, which
    refuses a changed token)."""
    if len(token) > MAX_TOKEN:
        return None
    try:
        payload = json.loads(_unb64(token.partition(".")[0]))
    except (ValueError, TypeError, RecursionError):  # not base64, not UTF-8, not JSON
        return None
    return payload if isinstance(payload, list) else None
