"""Running the ASGI app under uvicorn: `--workers N` processes, and the demo's server.

uvicorn starts each of several worker processes from an import string, so the app
to serve travels to them in the environment: `tasker serve` sets `TASKER_SERVE_APP`
(and `TASKER_SERVE_INSECURE`) and names `worker_app` as the factory; every worker
imports the user's app itself and builds its own ASGI app (its own database pool).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

    from fastapi import FastAPI

    from tasker.app import Tasker

#: The `MODULE[:ATTR]` that each worker process serves.
APP_ENV = "TASKER_SERVE_APP"
#: "1" when the workers serve without tokens (the parent checked it binds to 127.0.0.1).
INSECURE_ENV = "TASKER_SERVE_INSECURE"


def worker_app() -> FastAPI:
    """The ASGI app of one `tasker serve --workers N` process (a uvicorn factory).

    Raises:
        ConfigurationError: `TASKER_SERVE_APP` is unset, or the app cannot be loaded
            or served (see `load_app` and `create_app`).
    """
    from tasker.errors import ConfigurationError
    from tasker.transport.worker import load_app
    from tasker.web import create_app

    ref = os.environ.get(APP_ENV)
    if not ref:
        raise ConfigurationError(f"{APP_ENV} names no MODULE[:ATTR] to serve")
    return create_app(load_app(ref), insecure_no_auth=os.environ.get(INSECURE_ENV) == "1")


def run_workers(app_ref: str, host: str, port: int, workers: int, insecure: bool) -> None:
    """Serve `app_ref` from `workers` uvicorn processes until a signal stops them.

    Raises:
        ConfigurationError: `workers` is below 2 (one process serves the app object
            directly, with `uvicorn.run(asgi)`).
    """
    import uvicorn

    from tasker.errors import ConfigurationError

    if workers < 2:
        raise ConfigurationError(f"run_workers needs 2 or more workers, got {workers}")
    os.environ[APP_ENV] = app_ref
    os.environ[INSECURE_ENV] = "1" if insecure else "0"
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )


def serve_one_off(tasker: Tasker, port: int) -> None:
    """Serve `tasker` on 127.0.0.1 with a fresh write token until SIGINT or SIGTERM.

    For `tasker demo --serve`: the token is random, printed once and valid only for this
    process, so other local users and web pages (DNS rebinding) cannot write through it,
    unlike `--insecure-no-auth`.
    """
    import secrets

    import uvicorn

    from tasker.web import create_app

    token = secrets.token_urlsafe(24)
    asgi = create_app(tasker, tokens={token: "write"})
    where = f"http://127.0.0.1:{port}"
    print(
        f"\ndashboard: {where}/  (log in at {where}/login with the one-off write token below;\n"
        f"the API takes it as 'Authorization: Bearer <token>'; Ctrl-C stops the server)\n"
        f"token: {token}",
        flush=True,
    )

    def stopped(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    # uvicorn shuts down on SIGINT or SIGTERM, then raises the signal again: end quietly
    # on either, not with a traceback or the default SIGTERM death.
    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="warning")
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("dashboard stopped", flush=True)


class _Stopped(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so nothing swallows it)."""
