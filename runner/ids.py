"""Short ids in AskAnna's form (``k68o-Mi2L-mYte-7E54``): fresh random ones for runs, and
ones derived from a sha256 digest, so the same content always gets the same id."""

from __future__ import annotations

import secrets as _random

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUUID_SPACE = 62**16


def _format_suuid(number: int) -> str:
    digits = []
    for _ in range(16):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    text = "".join(reversed(digits))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def new_suuid() -> str:
    """A fresh random id in AskAnna's short form, e.g. ``k68o-Mi2L-mYte-7E54``."""
    return _format_suuid(_random.randbelow(_SUUID_SPACE))


def suuid_from_digest(digest: bytes | str) -> str:
    """The short id of a sha256 digest: the same content always gets the same id.

    ``digest`` is the raw digest or its hex form (an ``sha256:`` prefix is allowed); the raw
    and the hex form of one digest give the same id. Raises ``ValueError`` on a non-hex string.
    """
    if isinstance(digest, str):
        digest = bytes.fromhex(digest.removeprefix("sha256:"))
    return _format_suuid(int.from_bytes(digest, "big") % _SUUID_SPACE)
