"""Where an S3 store is and how to sign in: the ``s3://bucket/prefix`` URL, and the endpoint,
credentials and retries from the environment (``ANNA_RUN_S3_*`` first, else the standard
``AWS_*`` variables). Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["CREDENTIALS_HINT", "S3Config", "parse_s3_url", "s3_config"]

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
CREDENTIALS_HINT = (
    "check ANNA_RUN_S3_ACCESS_KEY and ANNA_RUN_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)


@dataclass(frozen=True)
class S3Config:
    """Where the S3 API is, how to sign in, and how many times to try each request."""

    endpoint: str  # host[:port], as minio wants it
    secure: bool
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    attempts: int = 5  # per request, the first included

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at its ends); ConfigError if malformed."""
    hint = "write it s3://bucket or s3://bucket/some/prefix"
    if not url.startswith("s3://"):
        raise ConfigError(f"store {url!r}: an S3 store is named s3://bucket/prefix", hint=hint)
    rest = url[len("s3://") :]
    bad = next((c for c in rest if c in "?#\\@ " or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(f"store {url!r}: {bad!r} has no place in an s3:// URL", hint=hint)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"store {url!r}: no bucket", hint=hint)
    if (
        not _BUCKET_RE.fullmatch(bucket)
        or ".." in bucket
        or ".-" in bucket
        or "-." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
    ):
        raise ConfigError(
            f"store {url!r}: {bucket!r} is not a valid bucket name",
            hint="3 to 63 characters: lower-case letters, digits, dots and hyphens",
        )
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"store {url!r}: the prefix {prefix!r} has an empty, '.' or '..' part", hint=hint)
    return bucket, prefix


def s3_config(environ: dict[str, str] | os._Environ[str] | None = None) -> S3Config:
    """Endpoint and credentials: ANNA_RUN_S3_* first, else the standard AWS_* variables."""
    env = os.environ if environ is None else environ
    raw = env.get("ANNA_RUN_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    endpoint, secure = _parse_endpoint(raw or "https://s3.amazonaws.com")
    ours = (env.get("ANNA_RUN_S3_ACCESS_KEY"), env.get("ANNA_RUN_S3_SECRET_KEY"))
    theirs = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"))
    token = None
    if any(ours):
        if not all(ours):
            raise ConfigError("set both ANNA_RUN_S3_ACCESS_KEY and ANNA_RUN_S3_SECRET_KEY, or neither")
        access, secret = ours
    elif any(theirs):
        if not all(theirs):
            raise ConfigError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        access, secret = theirs
        token = env.get("AWS_SESSION_TOKEN") or None
    else:
        raise ConfigError(
            "S3 credentials are needed",
            hint=CREDENTIALS_HINT.replace("check", "set", 1),
        )
    attempts_text = env.get("ANNA_RUN_S3_RETRIES") or "5"
    try:
        attempts = int(attempts_text)
    except ValueError:
        attempts = 0
    if not 1 <= attempts <= 100:
        raise ConfigError(f"ANNA_RUN_S3_RETRIES={attempts_text!r}: a whole number of attempts from 1 to 100")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return S3Config(endpoint, secure, str(access), str(secret), token, region, attempts)


def _parse_endpoint(raw: str) -> tuple[str, bool]:
    text = raw.strip()
    where = f"S3 endpoint {raw!r}"
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", hint="e.g. http://127.0.0.1:9000 or https://s3.example.com") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: use http:// or https://")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{where}: only a scheme, a host and a port", hint="e.g. http://127.0.0.1:9000")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{where}: a path on the endpoint is not supported", hint="name the bucket in s3://bucket")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return (f"{host}:{port}" if port else host), parts.scheme == "https"
