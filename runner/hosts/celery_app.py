"""The Celery app of the runner hosts, and the Redis that coordinates them.

Settings come from the environment, so a worker is configured like any service (systemd's
``Environment=``); the README lists them. Celery itself is imported here, where it is used:
`anna-run --help` and the read commands never pay for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BrokerError, ConfigError

if TYPE_CHECKING:
    import redis
    from celery import Celery

TASK = "anna_run.run"  # the one task: run a submitted job
PREFIX = "anna-run"  # every Redis key of ours starts with it (Celery's own keys do not)


@dataclass(frozen=True)
class HostSettings:
    broker: str  # ANNA_RUN_BROKER: redis://... (tested), or another Celery broker (amqp://...)
    redis: str  # ANNA_RUN_REDIS: leases, cancel, live logs, hosts (default: the broker if Redis)
    lease_ttl: float  # a run's lease expires this long after its host's last heartbeat
    visibility_timeout: float  # Redis redelivers a task not acknowledged within this
    max_attempts: int  # a run started this often without finishing is recorded failed
    livelog_ttl: int  # a finished run's live log stays this long in Redis
    livelog_maxlen: int  # entries kept per live log (the stored log keeps everything)

    @property
    def watch_interval(self) -> float:
        """How often a delivery that found its run held by a live host looks again."""
        return max(1.0, self.lease_ttl / 2)

    @property
    def restore_interval(self) -> float:
        """How often a worker sweeps Redis for tasks past their visibility timeout."""
        return min(10.0, max(1.0, self.visibility_timeout / 4))


def _number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: a number of seconds") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: at least {minimum:g}")
    return value


HOSTS_EXTRA = ("celery", "redis", "kombu")  # what `pip install 'anna-run[hosts]'` brings
HOSTS_EXTRA_HINT = "pip install 'anna-run[hosts]'"


def missing_hosts_extra(exc: ImportError) -> ConfigError:
    """The error for a runner-host command run where the `hosts` extra is not installed."""
    name = exc.name or str(exc)
    return ConfigError(
        f"this command needs the runner-host packages (Celery, Redis), which cannot be imported: {name}",
        hint=f"install them with: {HOSTS_EXTRA_HINT}",
    )


def require_hosts_extra() -> None:
    """ConfigError (exit 2) naming the extra to install when Celery or Redis cannot be imported."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise missing_hosts_extra(exc) from None


def host_settings() -> HostSettings:
    """The runner-host settings from the environment; ConfigError when no broker is named or
    the `hosts` extra is not installed."""
    require_hosts_extra()
    broker = os.environ.get("ANNA_RUN_BROKER", "").strip()
    if not broker:
        raise ConfigError(
            "no broker: runner hosts need ANNA_RUN_BROKER",
            hint="e.g. export ANNA_RUN_BROKER=redis://queue.example:6379/0 (see README, 'Runner hosts')",
        )
    redis_url = os.environ.get("ANNA_RUN_REDIS", "").strip()
    if not redis_url:
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"ANNA_RUN_BROKER={broker.split('://')[0]}://...: leases, cancel and live logs need a Redis too",
                hint="name it in ANNA_RUN_REDIS=redis://...",
            )
        redis_url = broker
    lease_ttl = _number("ANNA_RUN_LEASE_TTL", 30, 1)
    visibility = _number("ANNA_RUN_VISIBILITY_TIMEOUT", 60, 2)
    return HostSettings(
        broker=broker,
        redis=redis_url,
        lease_ttl=lease_ttl,
        visibility_timeout=visibility,
        max_attempts=int(_number("ANNA_RUN_MAX_ATTEMPTS", 3, 1)),
        livelog_ttl=int(_number("ANNA_RUN_LIVELOG_TTL", 3600, 1)),
        livelog_maxlen=int(_number("ANNA_RUN_LIVELOG_MAXLEN", 10000, 10)),
    )


def make_app(settings: HostSettings) -> Celery:
    """A Celery app that loses no run: late acknowledgement (a task is acknowledged when it
    ended, not when it was received), a task whose worker process died is rejected back to the
    queue, one task prefetched per process, and Redis redelivers what a dead host held after
    ``visibility_timeout`` (each run's lease keeps a live run from starting twice)."""
    from celery import Celery

    app = Celery("anna_run", broker=settings.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="default",
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # kombu sweeps for expired deliveries every interval x throttle seconds (100 s by
            # default): once per interval, so a dead host's run comes back within a minute.
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # A lost broker connection must not kill the runs going on: their leases guard them.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app


def redis_client(settings: HostSettings) -> redis.Redis:
    import redis

    try:
        return redis.Redis.from_url(
            settings.redis,
            decode_responses=True,
            socket_connect_timeout=10,
            socket_timeout=30,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(f"ANNA_RUN_REDIS / ANNA_RUN_BROKER: {exc}") from None


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError)


def broker_unreachable(settings: HostSettings, exc: BaseException) -> BrokerError:
    where = settings.redis.split("@")[-1]  # never a password in a message
    return BrokerError(f"the runner hosts' Redis at {where} cannot be reached: {exc}")


def run_key(run_id: str, what: str) -> str:
    """``anna-run:run:<id>:<what>``: lease, final, attempts, cancel, log, final-writes."""
    return f"{PREFIX}:run:{run_id}:{what}"


def host_key(node: str) -> str:
    return f"{PREFIX}:host:{node}"
