"""Run a WSGI app on 127.0.0.1 in a background thread, for provider tests.

Everything a test talks to runs here: no test reaches the internet.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server

WSGIApp = Callable[..., Any]


@contextmanager
def serve(app: WSGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"loopback-{server.port}",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://{host}:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    """A port nothing listens on (for connection-refused tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(app: WSGIApp, description: str, default_port: int) -> None:
    """Entry point shared by the vendor servers' ``python -m`` forms."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    # the real port (``--port 0`` picks a free one) and how to stop a background run
    print(
        f"{description}: listening on http://127.0.0.1:{server.port} "
        f"(process {os.getpid()}: Ctrl+C, or kill {os.getpid()}, to stop)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
