"""A TCP proxy for fault tests: passes bytes through, or delays them, or holds them (a partition:
nothing is lost, as TCP loses nothing, but nothing arrives until it heals), or cuts every connection."""

from __future__ import annotations

import asyncio
import contextlib

from services.local.servers import free_port


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def drop(self) -> None:
        """Hold every byte, new connections included, until ``heal``."""
        self._flowing.clear()

    def cut(self) -> None:
        """Close every open connection at once, both ways (new ones are let through)."""
        for writer in list(self._writers):
            writer.transport.abort()

    def heal(self) -> None:
        self.delay = 0.0
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each chunk leaves ``delay`` seconds after it arrived, in order.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send() -> None:
            with contextlib.suppress(OSError):  # the other side is gone: the pipe ends
                while True:
                    due, chunk = await queue.get()
                    await asyncio.sleep(due - loop.time())
                    await self._flowing.wait()
                    writer.write(chunk)
                    await writer.drain()
                    queue.task_done()

        sender = asyncio.create_task(send())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, chunk))
                if sender.done():
                    break
        except OSError:
            pass
        finally:
            # What was read still goes out (unless the connection is cut), then the other side closes.
            sent = asyncio.ensure_future(queue.join())
            await asyncio.wait({sent, sender}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            for task in (sent, sender):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self._writers.discard(writer)
            writer.transport.abort()
