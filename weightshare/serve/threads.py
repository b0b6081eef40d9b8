"""An ASGI server run by uvicorn in a background thread, on a socket bound before it starts.

The one way weightshare runs its HTTP servers in-process: `server.ServerThread` (our
FastAPI app) and `kserve_predictor.KServeThread` (KServe's REST server) differ only in
what they serve and in what `stop` tears down besides the server; the socket, the
daemon thread, the wait for startup against a deadline, `url` and the graceful stop
live here once. No FastAPI, KServe or torch at import (uvicorn is imported by callers).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Self

__all__ = ["UvicornThread", "bind_tcp"]


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0: a free one), not yet listening."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says TCP, and without it every JSON answer (headers,
    # then body) waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class UvicornThread:
    """Base of the server threads: bind in `__init__` (so `port` is known at once), then a
    subclass builds its uvicorn server for that port and hands it to `_serve_with`.

    `start()` runs the thread and waits until uvicorn says it started (RuntimeError if the
    thread dies or `start_timeout` passes); `stop()` asks uvicorn for a graceful shutdown,
    joins the thread and closes the socket. Also a context manager (start, stop).
    """

    #: what the start error calls the server
    what: ClassVar[str] = "the server"
    #: seconds `start()` waits by default
    start_timeout: ClassVar[float] = 20.0
    thread: threading.Thread  # set by `_serve_with`

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_tcp(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]

    def _serve_with(self, uvicorn_server: Any, run: Callable[..., Any], name: str) -> None:
        """The server `start` waits for and `stop` shuts down (a `uvicorn.Server`), and the
        thread that calls `run(sockets=[sock])`: `uvicorn_server.run` itself, or a wrapper
        that sets up more first (KServe's `RESTServer.run`)."""
        self._uvicorn = uvicorn_server
        self.thread = threading.Thread(target=run, kwargs={"sockets": [self.sock]},
                                       name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float | None = None) -> Self:
        timeout = self.start_timeout if timeout is None else timeout
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._uvicorn.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
