"""Settings: keyword arguments of `Tasker(...)`, else `TASKER_*` environment variables."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

from tasker.core.duration import parse_duration, to_seconds
from tasker.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///tasker.db"
_FLAGS = {"1": True, "true": True, "yes": True, "on": True}
_FLAGS.update({"0": False, "false": False, "no": False, "off": False})


@dataclass(frozen=True)
class Settings:
    """Every setting, validated.

    Attributes:
        database_url: `TASKER_DATABASE_URL`; default a SQLite file `tasker.db` here.
        broker_url: `TASKER_BROKER_URL`; `redis://...`, or None for the in-process broker.
        lease_seconds: `TASKER_LEASE_SECONDS`: how long a claim on a task lasts unrenewed.
        sweep_seconds: `TASKER_SWEEP_SECONDS`: how often a worker looks for due or
            abandoned tasks.
        backoff_base, backoff_max: `TASKER_BACKOFF_BASE`/`_MAX`: retry backoff, seconds.
        max_concurrent_steps: `TASKER_MAX_CONCURRENT_STEPS`: ready steps of one task run
            at once.
        step_timeout: `TASKER_STEP_TIMEOUT`: default time limit of one attempt, seconds.
        queue_name: `TASKER_QUEUE_NAME`: the Dramatiq queue of task messages.
        pool_size: `TASKER_POOL_SIZE`: database connections kept per process.
        retention: `TASKER_RETENTION`: final tasks completed longer ago than this many
            seconds (or a `timedelta`; "30d" in the variable) are purged by the sweeper
            and `run_until_idle()`; None (the default) keeps everything.
        tracing: `TASKER_TRACING`: OpenTelemetry spans for enqueue calls, passes and step
            attempts (`tasker.engine.tracing`; needs `pip install tasker[otel]`).
    """

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str | None = None
    lease_seconds: float = 60.0
    sweep_seconds: float = 5.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    max_concurrent_steps: int = 8
    step_timeout: float = 300.0
    queue_name: str = "tasker"
    pool_size: int = 10
    retention: float | None = None
    tracing: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type) in ("float", "int") and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ConfigurationError(f"{f.name} must be a finite number, got {value!r}")
        for name in ("lease_seconds", "sweep_seconds", "step_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ConfigurationError("backoff needs 0 <= backoff_base <= backoff_max")
        if self.max_concurrent_steps < 1 or self.pool_size < 1:
            raise ConfigurationError("max_concurrent_steps and pool_size must be at least 1")
        if self.retention is not None and not self.retention > 0:
            raise ConfigurationError(f"retention must be positive, got {self.retention!r}")
        if self.broker_url is not None and not self.broker_url.startswith(
            ("redis://", "rediss://")
        ):
            raise ConfigurationError(f"broker_url must be a redis:// URL, got {self.broker_url!r}")

    @classmethod
    def load(cls, **given: Any) -> Settings:
        """Settings from keyword arguments, then `TASKER_<NAME>` variables, then defaults.

        Raises:
            ConfigurationError: an unknown keyword, or a value of the wrong type.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = set(given) - set(known)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            value = given.get(name)
            if value is None:
                raw = os.environ.get(f"TASKER_{name.upper()}")
                if raw in (None, ""):
                    continue
                value = raw
            values[name] = _coerce(name, f.type, value)
        return cls(**values)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        flag = str(value).strip().lower()
        if flag in _FLAGS:
            return _FLAGS[flag]
        raise ConfigurationError(f"setting {name} must be true or false (1/0), got {value!r}")
    if kind == "float | None":  # a duration: seconds, a timedelta, or "30d" from a variable
        try:
            return parse_duration(value) if isinstance(value, str) else to_seconds(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"setting {name} must be a duration: {exc}") from None
    if isinstance(value, bool) and kind in ("float", "int"):
        raise ConfigurationError(f"setting {name} must be a number, got {value!r}")
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name} must be a number, got {value!r}") from None
    return str(value)
