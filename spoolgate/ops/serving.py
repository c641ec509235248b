"""Small asyncio helpers the gateway's services share: an embedded uvicorn server, and
stopping a background task.

uvicorn normally installs its own signal handlers; inside ``spoolgate serve`` the gateway
owns SIGTERM and SIGINT and stops every part in order, so the embedded server captures
none. :func:`serve_http` returns once the socket is bound, or raises why it could not
bind (the port is taken), so a misconfigured listener stops the start-up with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handlers of its own: the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Any, host: str, port: int, what: str,
                     **options: Any) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve *app* on *host*:*port*; the server and its task once it listens. *options*
    go to ``uvicorn.Config`` (e.g. proxy headers)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", server_header=False,
                            **{"proxy_headers": False, **options})
    server = EmbeddedServer(config)
    serving = asyncio.get_running_loop().create_task(server.serve(), name=what)
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start (e.g. the port is taken)
            raise RuntimeError(f"{what} on {host}:{port} stopped while starting")
        await asyncio.sleep(0.01)
    return server, serving


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
