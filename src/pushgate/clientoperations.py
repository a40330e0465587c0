"""The Python client's operations (subscribe, unsubscribe, refresh, publish,
presence) sent and answered, and everything it sends, paced: a layer of
:class:`~pushgate.client.Connection`."""

import asyncio
import contextlib
import json

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pushgate.clientrooms import Rooms, _own_of
from pushgate.clienttypes import NoReplyError, State, SubscribeError
from pushgate.ids import RoomId
from pushgate.wire import PING
from pushgate.wireclient import Reply
from pushgate.wireops import Operation


class Operations(Rooms):
    """Operations and their replies, PINGs and what their PONGs tell."""

    async def _operate(
        self,
        op: str,
        room: str,
        *,
        grant: str | None = None,
        token: str | None = None,
        info: str | None = None,
        tag: int = 0,
        data: object = None,
        echo: bool = False,
        redo: bool = False,
    ) -> Reply:
        """Send an operation on the open connection (or, ``redo``, the one being
        reopened) and wait for its reply; a refusal raises SubscribeError. It is sent
        once: a connection that drops first raises NoReplyError, whatever the op."""
        ws = self._ws
        if ws is None or (self.state is not State.OPEN and not redo):
            raise NoReplyError(op, room, f"the connection is not open ({self.state.value})")
        self._last_id = op_id = self._last_id + 1
        operation = Operation(op, RoomId(room), op_id, grant, token, info, tag, data, echo)
        # Serialized before anything is waited for: NaN, which the server reads as no
        # JSON and closes the connection for (1007), is the caller's ValueError here.
        message = json.dumps(operation.as_message(), allow_nan=False)
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[op_id] = (operation, answered)
        if op in ("subscribe", "presence"):
            self._roster_asked(room, ws, op_id, op)
        try:
            await self._send(ws, message)
            reply = await answered
        except ConnectionClosed:
            raise NoReplyError(op, room, "the connection dropped before the reply") from None
        finally:
            self._pending.pop(op_id, None)
        if not reply.ok:
            raise SubscribeError(op, room, reply.code, reply.reason)
        return reply

    def _on_reply(self, reply: Reply) -> None:
        """An answer: the rooms change here, in the order the server said things."""
        pending = self._pending.get(reply.id) if isinstance(reply.id, int) else None
        room = reply.room
        if reply.ok and room is not None:
            if reply.op == "subscribe":
                if pending is not None:
                    self._own[room] = _own_of(pending[0])
                self._enter(room, "subscribe")
            elif reply.op == "refresh" and pending is not None and room in self._own:
                self._own[room] = _own_of(pending[0])
            elif reply.op == "unsubscribe":
                self._own.pop(room, None)
                self._exit(room, "unsubscribe")
        if room is not None and reply.op in ("subscribe", "refresh", "presence"):
            self._presence_reply(room, reply)
        if pending is not None and not pending[1].done():
            pending[1].set_result(reply)

    async def _send(self, ws: ClientConnection, message: str | bytes, *, ping: bool = False) -> int:
        """Send one message, paced; returns how many PINGs were sent on ``ws``."""
        async with self._sending:
            delay = self._pacer.delay(asyncio.get_running_loop().time())
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(message, text=True)
            if ping and ws is self._ws:
                self._pings += 1
            return self._pings

    async def _catch_up(self) -> None:
        """Wait until the server has answered a PING sent now, so that everything it
        sent before (the events of an API call that has returned) has been read."""
        ws = self._ws
        if ws is None or self._reader is None or self._reader.done():
            return
        try:
            sent = await self._send(ws, PING, ping=True)
        except ConnectionClosed:
            return
        if self._pongs >= sent or ws is not self._ws:
            return
        answered = asyncio.get_running_loop().create_future()
        self._catching_up.append((sent, answered))
        with contextlib.suppress(TimeoutError):  # a PING over the server's rate is dropped
            async with asyncio.timeout(self._open_timeout):
                await answered

    def _wake_caught_up(self) -> None:
        waiting = self._catching_up
        self._catching_up = [(n, f) for n, f in waiting if n > self._pongs]
        for n, answered in waiting:
            if n <= self._pongs and not answered.done():
                answered.set_result(None)

    def _end_waits(self) -> None:
        """The connection has ended: no reply or PONG will come on it."""
        pending, self._pending = self._pending, {}
        for _, answered in pending.values():
            if not answered.done():
                answered.set_exception(ConnectionClosed(None, None))
        waiting, self._catching_up = self._catching_up, []
        for _, caught_up in waiting:
            if not caught_up.done():
                caught_up.set_result(None)

    async def _beat(self, ws: ClientConnection) -> None:
        option = self._heartbeat_option
        interval = self.heartbeat if option is True else float(option)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                await self._send(ws, PING, ping=True)
