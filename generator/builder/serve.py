"""Serving a host directory to a build on 127.0.0.1, for the duration of that build.

Dockerfiles fetch release files with ADD <url>; for offline builds the files sit in a directory
of the build host, which gen serves read-only on a free loopback port, passing the URL as a
build argument. Nothing listens beyond loopback, and the server stops with the build.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from generator.errors import UsageError


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # the build log shows what was fetched
        pass


@contextlib.contextmanager
def served_directories(dirs: tuple[tuple[str, str], ...], project_root: Path) -> Iterator[list[str]]:
    """Serve each (build arg, directory); yields the --build-arg flags that point at them."""
    with contextlib.ExitStack() as stack:
        flags: list[str] = []
        for arg, directory in dirs:
            path = Path(directory.removeprefix("file://"))
            path = path if path.is_absolute() else project_root / path
            if not path.is_dir():
                raise UsageError(
                    f"{arg}: {path} is not a directory; point init.source at the directory holding the release files"
                )
            server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(path)))
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            thread.start()
            stack.callback(thread.join, 10)
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            flags += ["--build-arg", f"{arg}=http://127.0.0.1:{server.server_address[1]}"]
        yield flags
