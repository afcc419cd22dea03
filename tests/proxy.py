"""A TCP proxy on loopback that a test cuts and restores, to make a real server "go away" and come back.

Why a proxy and not stopping the server: the Postgres and Redis on this machine are shared by every test (and by
other people's runs), so a test must not stop them; pointing the code under test at a proxy in front of them and
cutting that is the same outage from the client's side. `cut()` closes every proxied connection (the clients
see their sockets closed mid-command) and stops listening (new connections are refused); `start()` listens
again on the same port, so the clients' URLs stay right.

From async tests: `await proxy.start()`, `await proxy.cut()`. When the code under test is another process and
the test is synchronous, `start_in_thread()` serves from a loop of its own and `cut_now()`/`restore_now()` drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class CuttableProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0  # chosen on the first start, kept afterwards
        self.accepted = 0  # connections accepted so far (a test can wait until its clients are connected)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Drop every proxied connection and refuse new ones until `start()`."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()
            self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    # --- from a synchronous test -------------------------------------------------------------------------------
    def start_in_thread(self) -> CuttableProxy:
        """Serve from a daemon thread with its own loop (the clients are other processes)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="cuttable-proxy", daemon=True)
        self._thread.start()
        self.run(self.start())
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self._loop is not None, "start_in_thread() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def cut_now(self) -> None:
        self.run(self.cut())

    def restore_now(self) -> None:
        self.run(self.start())

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self.run(self.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None
