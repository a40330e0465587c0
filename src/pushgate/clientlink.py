"""One connection of the Python client: opened (with a token, resuming a session),
welcomed, and read (pushes, once each; replies, events, notices); what a resume
recovered. A layer of :class:`~pushgate.client.Connection`."""

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Response
from websockets.typing import Subprotocol

from pushgate.clientoperations import Operations
from pushgate.clienttypes import ConnectError
from pushgate.connectrefusal import read_refusal
from pushgate.ids import ConnId
from pushgate.wire import CLOSE_GOING_AWAY, ResumeRequest, StreamReport
from pushgate.wireclient import (
    Notice,
    PresenceEvent,
    Push,
    Reply,
    RoomEvent,
    Welcome,
    is_pong,
    parse_server_message,
    parse_welcome,
    room_stream,
)

log = logging.getLogger("pushgate.client")  # one logger for the whole SDK


class Link(Operations):
    """The connection of the moment: opened, welcomed, read."""

    # A call up the layers (clientconnection.py), declared for the type checker only.
    if TYPE_CHECKING:

        async def _call_recovery(self, report: dict[str, bool]) -> None: ...

    async def _open_once(self, resume: bool = False) -> None:
        """One connection, welcomed and read from: sets ws_id, heartbeat and rooms.
        With ``resume`` (and a session to resume) it asks for the session back;
        ``resumed`` says if it was. Pushes are held until :meth:`_release`."""
        subprotocols = None
        if self._token is not None:
            token = self._token() if callable(self._token) else self._token
            if not isinstance(token, str):
                token = await token
            subprotocols = [Subprotocol("pushgate"), Subprotocol(token)]
        resume = resume and bool(self.session)
        url = self.url + ("&" if "?" in self.url else "?") + "v=2"  # events: docs/protocol.md
        if resume:
            url += "&resume=1"
        try:
            ws = await ws_connect(
                url,
                open_timeout=self._open_timeout,
                max_size=self._max_message_bytes,
                compression=None,
                subprotocols=subprotocols,
            )
        except InvalidStatus as exc:
            raise _refused(self.url, exc.response) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except InvalidURI as exc:
            raise ValueError(str(exc)) from None
        try:
            if resume:
                request = ResumeRequest(ConnId(self.ws_id), self.session, dict(self.positions))
                await self._send(ws, json.dumps(request.as_message()))
            async with asyncio.timeout(self._open_timeout):
                frame = await ws.recv()
            welcome = parse_welcome(frame)
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close(CLOSE_GOING_AWAY, "no welcome")  # not 1000: a session stays
            raise ConnectError(f"no welcome from {self.url}: {_reason(exc)}") from None
        ws_id, self.heartbeat = welcome.ws_id, welcome.heartbeat
        self.session = welcome.session
        self.resumed = resume and welcome.resumed and ws_id == self.ws_id
        self.ws_id = ws_id
        self.connects += 1
        if not self.resumed:
            self._renew_presence()
        self._take_rooms(welcome)
        if resume:
            await self._on_resume_welcome(welcome)
        self._ws = ws
        self._pings = self._pongs = 0
        self._holding, self._held = True, []
        self._reader = asyncio.create_task(self._read(ws), name=f"pushgate reader {ws_id}")
        self._flush_asks()

    def _take_rooms(self, welcome: Welcome) -> None:
        """The welcome's rooms are the connection's (a server without events lists
        none: a new session is in none, a resumed one where it was)."""
        self._events = welcome.rooms is not None
        if welcome.rooms is None and self.resumed:
            return
        rooms = welcome.rooms or ()
        for room in [room for room in self._rooms if room not in rooms]:
            self._exit(room, "welcome")
        for room in rooms:
            self._enter(room, "welcome")

    async def _on_resume_welcome(self, welcome: Welcome) -> None:
        """After a resume: note whether everything missed is coming, or start over."""
        if self.resumed:
            self.recovered = welcome.recovered
            log.info(
                "resumed %s (%s)", welcome.ws_id, "recovered" if self.recovered else "NOT recovered"
            )
            if not self.recovered:
                await self._apply_streams(welcome.streams)
        else:
            self.recovered = False
            self.positions.clear()
            log.warning("could not resume (%s); new wsId %s", welcome.reason, welcome.ws_id)
            await self._call_recovery({})

    async def _stop_reading(self) -> None:
        """Close the connection to connect again, and wait until its reader has ended.
        With 1001, not 1000: the server ends the session of a client that closed with
        1000 (it said goodbye), and this one resumes it."""
        ws, reader = self._ws, self._reader
        self._ws = None
        if ws is not None:
            await ws.close(CLOSE_GOING_AWAY, "reconnecting")
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: ClientConnection) -> None:
        beat = asyncio.create_task(self._beat(ws)) if self._heartbeat_option else None
        try:
            async for frame in ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if beat is not None:
                beat.cancel()
            self._end_waits()

    async def _on_frame(self, frame: str | bytes) -> None:
        """Queue a push not seen before; apply a reply, an event or a notice."""
        if is_pong(frame):
            self._pongs += 1
            self._wake_caught_up()
            return
        try:
            message = parse_server_message(frame)
        except ValueError:
            log.warning("ignored a message that is not JSON: %r", frame[:100])
            return
        if isinstance(message, Push):
            if self._is_new(message.stream, message.seq, message.epoch):
                await self._deliver(message)
            return
        if isinstance(message, PresenceEvent):
            if self._is_new(room_stream(message.room), message.seq, message.epoch):
                self._on_presence_event(message)
        elif isinstance(message, Reply):
            self._on_reply(message)
        elif isinstance(message, RoomEvent):
            if message.joined:
                self._enter(message.room, message.reason)
            else:
                self._own.pop(message.room, None)  # the server's word: not put back
                self._exit(message.room, message.reason)
        elif isinstance(message, Notice):
            await self._apply_streams(message.streams)
        self._flush_asks()

    async def _deliver(self, push: Push) -> None:
        if self._holding:
            self._held.append(push)
            return
        async with self._handing:
            await self._queue.put(push)

    async def _release(self) -> None:
        """The connection counts as open: hand over the pushes held meanwhile."""
        async with self._handing:
            self._holding = False
            while self._held:
                await self._queue.put(self._held.pop(0))

    def _is_new(self, stream: str, seq: int, epoch: str) -> bool:
        """Track the stream's position (pushes and presence events alike); False for
        what was delivered already."""
        if not seq:
            return True
        known = self.positions.get(stream)
        if known is not None and known[0] == epoch and seq <= known[1]:
            return False
        self.positions[stream] = (epoch, seq)
        return True

    async def _apply_streams(self, streams: dict[str, StreamReport]) -> None:
        """Take the server's position for each stream it could not recover."""
        report: dict[str, bool] = {}
        for name, stream in streams.items():
            report[name] = stream.recovered
            if not stream.recovered:
                self._stream_lost(name)
            known = self.positions.get(name)
            if not stream.recovered and (known is None or known[0] != stream.epoch):
                # A new epoch: every push of it is new to us. (Its seq in the report is
                # where the server is, and pushes up to it may still be on their way.)
                self.positions[name] = (stream.epoch, 0)
        if all(report.values()):
            return
        self.recovered = False
        lost = sorted(name for name, ok in report.items() if not ok)
        log.warning("%s: pushes on %s could not be recovered", self.ws_id, ", ".join(lost))
        await self._call_recovery(report)


def _refused(url: str, response: Response) -> ConnectError:
    """The error for a handshake the server answered without a WebSocket: with the
    reason it gave, which says what to fix (an expired token, a wrong path)."""
    refusal = read_refusal(
        response.status_code,
        response.reason_phrase,
        response.headers.get("Content-Type"),
        bytes(response.body),
    )
    return ConnectError(f"cannot connect to {url}: {refusal.describe()}", refusal)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
