"""Sealing a task message's secret-bearing part for the runner hosts (hosts/sealed.py)."""

from __future__ import annotations

import pytest
from anna_run.errors import ConfigError
from anna_run.hosts.sealed import configured_keys, new_key, seal, unseal

DATA = {"request": {"secrets": ["DB_PASSWORD=s3cr3t-value"]}, "env_file": {"TOKEN": "abc"}}


def test_sealed_data_opens_with_its_key_and_shows_nothing() -> None:
    key = new_key()
    token = seal(DATA, (key,))
    assert "s3cr3t-value" not in token and "DB_PASSWORD" not in token and "TOKEN" not in token
    assert unseal(token, (key,)) == DATA
    assert seal(DATA, (key,)) != token  # a fresh IV each time: equal requests look different


def test_rotation_the_first_key_seals_every_key_opens() -> None:
    old, new = new_key(), new_key()
    sealed_old = seal(DATA, (old,))
    sealed_new = seal(DATA, (new, old))
    assert unseal(sealed_old, (new, old)) == DATA  # queued before the rotation: still opens
    assert unseal(sealed_new, (new,)) == DATA  # sealed with the first key
    with pytest.raises(ConfigError, match="does not have"):
        unseal(sealed_new, (old,))


def test_a_wrong_key_or_none_is_a_config_error_naming_no_key() -> None:
    key, other = new_key(), new_key()
    token = seal(DATA, (key,))
    with pytest.raises(ConfigError, match="does not have") as caught:
        unseal(token, (other,))
    assert key not in str(caught.value) and other not in str(caught.value)
    with pytest.raises(ConfigError, match="has no key"):
        unseal(token, ())
    with pytest.raises(ConfigError, match="does not have"):
        unseal(token[:-4] + "AAAA", (key,))  # altered in the broker


def test_a_malformed_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="key 2 of 2 is not a key") as caught:
        seal(DATA, (new_key(), "not-a-key-at-all"))
    assert "not-a-key-at-all" not in str(caught.value)
    with pytest.raises(ConfigError, match="is not set"):
        seal(DATA, ())


def test_keys_from_the_environment_comma_separated() -> None:
    a, b = new_key(), new_key()
    assert configured_keys({"ANNA_RUN_SECRET_KEY": f" {a} , {b},"}) == (a, b)
    assert configured_keys({"ANNA_RUN_SECRET_KEY": ""}) == ()
    assert configured_keys({}) == ()
