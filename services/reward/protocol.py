"""Wire format between the supervisor and its verifier processes: length-prefixed frames over a
socketpair, each holding one pydantic model as JSON (ScoreItem in, ScoreResult out).

A socket rather than a multiprocessing Pipe: the supervisor's side is non-blocking, so a send to a
stuck process is bounded by the item's deadline like everything else instead of blocking the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct

_HEADER = struct.Struct("!I")
READY = b"ready"  # first frame of a verifier process once it can take items


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def recv_frame(sock: socket.socket) -> bytes | None:
    """The next frame, or None once the other side has closed the socket."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    payload = _recv_exactly(sock, size)
    if payload is None:
        raise EOFError("socket closed in the middle of a frame")
    return payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


class VerifierChannel(asyncio.Protocol):
    """The supervisor's end of a verifier process's socket, as an asyncio protocol: the socket stays
    registered with the event loop, so a frame costs one wake-up, and a write never blocks (it is buffered)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._unclaimed: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[bytes] | None = None
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> VerifierChannel:
        _, channel = await asyncio.get_running_loop().connect_accepted_socket(cls, sock)
        return channel

    def next_frame(self) -> asyncio.Future[bytes]:
        """A future for the process's next frame; EOFError in it if the process goes away first."""
        future = asyncio.get_running_loop().create_future()
        if self._unclaimed:
            future.set_result(self._unclaimed.popleft())
        elif self.closed:
            future.set_exception(EOFError("verifier process closed its socket"))
        else:
            self._waiter = future
        return future

    def send(self, payload: bytes) -> None:
        assert self._transport is not None
        self._transport.write(_HEADER.pack(len(payload)) + payload)

    @property
    def idle_and_healthy(self) -> bool:
        """An idle process never speaks: a frame nobody asked for, or a closed socket, means trouble."""
        return not self.closed and not self._unclaimed

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            end = _HEADER.size + size
            if len(buffer) < end:
                break
            frame = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(frame)
                self._waiter = None
            else:
                self._unclaimed.append(frame)

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(EOFError(f"verifier process closed its socket ({exc!r})"))
        self._waiter = None
