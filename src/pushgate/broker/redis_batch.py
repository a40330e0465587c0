"""Lua script calls batched per turn of the event loop.

A burst of resumes (every client of a restarted gateway, at once) makes thousands of
the same few calls: claim a session, read a stream's history. Sent one by one, each
costs a Redis round trip and a pooled connection; the burst then waits on the pool.
Batched, the calls made during one turn of the loop go out as one pipeline, and
identical reads made in that turn (every client of a room asking for its history
after the same position) are sent once and answered to all of them.

A call is only ever shared with calls made *before its batch is sent*: a caller that
arrives later gets a fresh read, so what it reads is never older than its call.
"""

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from pushgate.broker.redis_errors import REDIS_ERRORS

# One pipeline holds at most this many calls; a bigger batch is sent as several.
MAX_BATCH = 1000

# script, keys, args, parse, and the caller's future
_Call = tuple[
    AsyncScript, Sequence[Any], Sequence[Any], Callable[[Any], Any], "asyncio.Future[Any]"
]


class ScriptBatcher:
    """Runs the script calls made during one turn of the event loop as pipelines."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._calls: list[_Call] = []
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def call(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        share: Hashable | None = None,
        parse: Callable[[Any], Any] = lambda raw: raw,
    ) -> "asyncio.Future[Any]":
        """The future result of ``script(keys, args)``, passed through ``parse``.

        Calls with the same ``share`` key in one batch are sent once and get the same
        future: await it through ``asyncio.shield`` so that one caller's cancellation
        does not cancel the others'. It fails with one of REDIS_ERRORS.
        """
        if share is not None and (shared := self._shared.get(share)) is not None:
            return shared
        loop = asyncio.get_running_loop()
        if not self._calls:
            loop.call_soon(self._send)
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.append((script, keys, args, parse, future))
        if share is not None:
            self._shared[share] = future
        return future

    async def close(self) -> None:
        """Wait for the batches already sent."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _send(self) -> None:
        calls, self._calls = self._calls, []
        self._shared.clear()  # later callers must not share what is being sent
        for start in range(0, len(calls), MAX_BATCH):
            task = asyncio.ensure_future(self._execute(calls[start : start + MAX_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _execute(self, calls: list[_Call]) -> None:
        try:
            results = await self._pipeline(calls)
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:  # Redis restarted, or SCRIPT FLUSH: send those with their text
                again = await self._pipeline([calls[i] for i in missing], by_text=True)
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except REDIS_ERRORS as exc:
            for *_, future in calls:
                _fail(future, exc)
            return
        for (_, _, _, parse, future), result in zip(calls, results, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                _fail(future, result)
                continue
            try:
                future.set_result(parse(result))
            except Exception as exc:  # a reply we cannot read fails its caller only
                _fail(future, exc)

    async def _pipeline(self, calls: list[_Call], *, by_text: bool = False) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args, _, _ in calls:
                if by_text:
                    pipe.eval(_text(script), len(keys), *keys, *args)
                else:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


async def run_script(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script(keys, args)``, loading it only on the server that runs it.

    ``AsyncScript.__call__`` loads a missing script with SCRIPT LOAD, which a Redis
    Cluster client sends to *every* master: with one master down, every script call
    after a restart would fail. EVAL caches the script where it runs.
    """
    try:
        return await script.registered_client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await script.registered_client.eval(_text(script), len(keys), *keys, *args)


def _fail(future: "asyncio.Future[Any]", exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        # Marked as seen: when every caller of a shared call has gone, nobody awaits it,
        # and asyncio would log "exception was never retrieved".
        future.exception()


def _text(script: AsyncScript) -> str:
    return cast(str, script.script)  # every script here is registered from a str
