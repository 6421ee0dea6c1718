"""Runner-host settings and the Celery configuration that loses no run."""

from __future__ import annotations

import pytest
from anna_run.errors import ConfigError
from anna_run.hosts.celery_app import host_settings, make_app
from anna_run.hosts.livelog import ENTRY_LIMIT, _merged


def test_settings_need_a_broker(monkeypatch):
    for name in ("ANNA_RUN_BROKER", "ANNA_RUN_REDIS", "ANNA_RUN_LEASE_TTL", "ANNA_RUN_VISIBILITY_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="ANNA_RUN_BROKER"):
        host_settings()
    monkeypatch.setenv("ANNA_RUN_BROKER", "amqp://guest@rabbit//")
    with pytest.raises(ConfigError, match="need a Redis") as info:
        host_settings()  # leases, cancel and live logs need a Redis
    assert "ANNA_RUN_REDIS" in info.value.hint
    monkeypatch.setenv("ANNA_RUN_REDIS", "redis://127.0.0.1:6379/1")
    assert host_settings().redis == "redis://127.0.0.1:6379/1"
    monkeypatch.setenv("ANNA_RUN_LEASE_TTL", "soon")
    with pytest.raises(ConfigError, match="ANNA_RUN_LEASE_TTL"):
        host_settings()


def test_celery_is_configured_to_lose_nothing(monkeypatch):
    monkeypatch.setenv("ANNA_RUN_BROKER", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ANNA_RUN_VISIBILITY_TIMEOUT", "40")
    monkeypatch.delenv("ANNA_RUN_REDIS", raising=False)
    settings = host_settings()
    assert settings.redis == settings.broker and settings.lease_ttl == 30
    conf = make_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 40 and options["unacked_restore_interval"] == 10
    assert options["unacked_restore_throttle"] == 1


def test_live_log_batches_merge_neighbours_and_cut_floods():
    batch = [("stdout", "a"), ("stdout", "b"), ("stderr", "c"), ("note", "x"), ("note", "y")]
    assert _merged(batch) == [("stdout", "ab"), ("stderr", "c"), ("note", "x"), ("note", "y")]
    flood = _merged([("stdout", "z" * (ENTRY_LIMIT * 2 + 5))])
    assert [len(t) for _, t in flood] == [ENTRY_LIMIT, ENTRY_LIMIT, 5]
