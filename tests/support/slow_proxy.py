"""A TCP proxy on 127.0.0.1 that adds a fixed delay to every answer: a slow but healthy server.

    with SlowProxy(upstream_port, delay=0.3) as proxy:     # proxy.url, proxy.port
        ...                                                # point the client at proxy.url

Request/response protocols (HTTP/1.1 without pipelining, as hvac and boto3 speak) alternate
on a connection: whenever bytes come back after the client sent some, the proxy holds the
answer for `delay` seconds before passing it on. Every exchange is thus `delay` slower, and
connections are delayed independently, so the proxy adds latency without adding queueing of
its own. It runs its own event loop on a background thread, for synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["SlowProxy"]

LOOPBACK = "127.0.0.1"
_CHUNK = 64 * 1024


class _Exchange:
    """Whether the client has spoken since the last answer began (a new answer is due)."""

    def __init__(self) -> None:
        self.awaiting_answer = False


class SlowProxy:
    """Forward 127.0.0.1:port to an upstream port, every answer `delay` seconds late."""

    def __init__(self, upstream_port: int, *, delay: float, upstream_host: str = LOOPBACK) -> None:
        """Prepare (not start) a proxy in front of upstream_host:upstream_port."""
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.port = 0
        self.exchanges = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The proxy's base HTTP URL."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        """Listen on a free loopback port and serve on the background thread."""
        self._thread.start()
        start = asyncio.start_server(self._connection, LOOPBACK, 0)
        try:
            self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then end the thread."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    async def _shutdown(self) -> None:
        """Stop accepting, then cancel the connections still open."""
        assert self._server is not None
        self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        """Pump both directions of one client connection until either side closes."""
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        exchange = _Exchange()
        try:
            await asyncio.gather(
                self._requests(client_r, upstream_w, exchange),
                self._answers(upstream_r, client_w, exchange),
            )
        finally:
            for writer in (client_w, upstream_w):
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        """Client to upstream, at once; each chunk means an answer is due."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_CHUNK):
                exchange.awaiting_answer = True
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _answers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        """Upstream to client; the first chunk of each answer waits `delay` seconds."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_CHUNK):
                if exchange.awaiting_answer:
                    exchange.awaiting_answer = False
                    self.exchanges += 1
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    def __enter__(self) -> Self:
        """Start on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on exit, whatever happened."""
        self.stop()
