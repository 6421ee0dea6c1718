"""What a task message carries sealed: the run's request and --env-file values, encrypted for the
runner hosts with a key they share with the submitting machines (``ANNA_RUN_SECRET_KEY``).

The key is a Fernet key (AES-128-CBC with HMAC-SHA256, from ``cryptography``): the broker only
ever holds a token it can neither read nor alter unnoticed. ``ANNA_RUN_SECRET_KEY`` may name
several keys, comma-separated: the first seals, every one of them opens. That is how a key is
rotated: add the new key first on every host, then on the submitting machines, and drop the
old one once no run sealed with it is queued any more.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

KEY_ENV = "ANNA_RUN_SECRET_KEY"
KEY_HINT = (
    "make a key with `anna-run hosts keygen` and set it as ANNA_RUN_SECRET_KEY on this machine "
    "and on every runner host (README, 'Runner hosts')"
)


def new_key() -> str:
    """A new random key, in the form ``ANNA_RUN_SECRET_KEY`` takes."""
    return _fernet_module().Fernet.generate_key().decode("ascii")


def configured_keys(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The keys ``ANNA_RUN_SECRET_KEY`` names, sealing key first; () when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(KEY_ENV, "")
    return tuple(k.strip() for k in value.split(",") if k.strip())


def sealer(keys: tuple[str, ...]) -> MultiFernet:
    """The Fernet of ``keys`` (the first seals, all open); ConfigError for a key that is not one,
    naming its place in the list and never its text."""
    fernet = _fernet_module()
    if not keys:
        raise ConfigError(f"{KEY_ENV} is not set", hint=KEY_HINT)
    parts = []
    for i, key in enumerate(keys, 1):
        try:
            parts.append(fernet.Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            where = f"key {i} of {len(keys)}" if len(keys) > 1 else "its key"
            raise ConfigError(
                f"{KEY_ENV}: {where} is not a key (32 url-safe base64-encoded bytes)", hint=KEY_HINT
            ) from None
    return fernet.MultiFernet(parts)


def seal(data: dict[str, Any], keys: tuple[str, ...]) -> str:
    """``data`` (JSON-ready) as one token that only a holder of one of ``keys`` can read."""
    return sealer(keys).encrypt(json.dumps(data, separators=(",", ":")).encode("utf-8")).decode("ascii")


def unseal(token: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """What :func:`seal` sealed; ConfigError when no key is set here or none of them opens it."""
    fernet = _fernet_module()
    if not keys:
        raise ConfigError(
            f"the run's request is sealed and this runner host has no key ({KEY_ENV} is not set)",
            hint="set ANNA_RUN_SECRET_KEY on the runner host to the key the run was submitted with",
        )
    try:
        data = json.loads(sealer(keys).decrypt(token.encode("ascii")))
    except (fernet.InvalidToken, UnicodeEncodeError, ValueError):
        raise ConfigError(
            f"the run's request is sealed with a key this runner host does not have ({KEY_ENV})",
            hint="give the runner host the key of the submitting machine (during a rotation: both keys)",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("the run's sealed request is not a request")
    return data


def _fernet_module() -> Any:
    try:
        from cryptography import fernet
    except ImportError as exc:
        from .celery_app import missing_hosts_extra

        raise missing_hosts_extra(exc) from None
    return fernet
