"""Short ids (AskAnna's ``xxxx-xxxx-xxxx-xxxx`` form): random ones and ones derived from a digest."""

from __future__ import annotations

import hashlib
import re

from anna_run.ids import new_suuid, suuid_from_digest

SUUID = re.compile(r"^[0-9A-Za-z]{4}(-[0-9A-Za-z]{4}){3}$")


def test_new_suuid_has_askanna_short_form_and_is_random() -> None:
    ids = {new_suuid() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(SUUID.match(i) for i in ids)


def test_suuid_from_digest_is_deterministic_for_raw_and_hex_digests() -> None:
    digest = hashlib.sha256(b"same code").digest()
    one = suuid_from_digest(digest)
    assert SUUID.match(one)
    assert suuid_from_digest(digest) == one
    assert suuid_from_digest(digest.hex()) == one
    assert suuid_from_digest("sha256:" + digest.hex()) == one
    assert suuid_from_digest(hashlib.sha256(b"other code").digest()) != one
