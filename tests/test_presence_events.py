"""Presence events in one process (docs/presence.md, "Join and leave events"): a
room's members hear of each user's first session entering and last one leaving,
never of a second tab or a resume; a session leaves when it leaves the room or ends.
Real servers on loopback, plain WebSocket clients reading raw JSON."""

import asyncio
import json
from typing import Any

import aiohttp
import jwt

from pushgate.namespaces import grant_for
from tests.helpers import FAST_TIMERS, post, running_server
from tests.test_subscriptions import Client, client, resume

SECRET = "a-presence-test-secret-of-32-bytes!!"
GRANT_SECRET = "team-rooms-grant-secret"
NAMESPACES = f"chat=public+presence,team=grant+presence:{GRANT_SECRET},desk=server+presence"
SETTINGS: dict[str, Any] = {**FAST_TIMERS, "namespaces": NAMESPACES, "token_secret": SECRET}


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")


def join(room: str, user: str | None, info: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"op": "presence", "room": room, "event": "join", "user": user}
    if info is not None:
        data["info"] = info
    return {"type": 0, "data": data, "room": room}


def leave(room: str, user: str | None) -> dict[str, Any]:
    return {
        "type": 0,
        "data": {"op": "presence", "room": room, "event": "leave", "user": user},
        "room": room,
    }


async def marker(http: aiohttp.ClientSession, api_url: str, room: str, val: str) -> dict[str, Any]:
    """Push ``val`` to ``room``; return the frame it arrives as. Events of the room
    come before it: what a client reads before the marker is every event since."""
    status, body = await post(http, api_url + "/push/room", json={"id": room, "val": val, "tag": 9})
    assert status == 200, body
    return {"type": 9, "data": val, "room": room}


async def until(c: Client, frame: dict[str, Any]) -> list[dict[str, Any]]:
    """What ``c`` reads before ``frame`` (which it then reads too)."""
    seen = []
    while (message := await c.next()) != frame:
        seen.append(message)
    return seen


async def test_a_users_first_session_joins_and_its_second_tab_is_silent(
    http: aiohttp.ClientSession,
) -> None:
    """Ann's first connection joins (with her token's info), Bob's joins, Ann's second
    tab makes no event; each subscribe reply lists who is there."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        ann_info = {"name": "Ann", "color": "teal"}
        async with (
            client(url + token("ann", info=ann_info)) as ann,
            client(url + token("bob")) as bob,
            client(url + token("ann", info={"name": "Ann's phone"})) as ann_tab,
        ):
            first = await ann.op("subscribe", "chat:1")
            assert first["presence"]["members"] == [{"user": "ann", "info": ann_info}]
            assert await ann.next() == join("chat:1", "ann", ann_info)  # her own, too

            second = await bob.op("subscribe", "chat:1")
            assert second["presence"]["members"] == [
                {"user": "ann", "info": ann_info},
                {"user": "bob"},
            ]
            assert await ann.next() == join("chat:1", "bob")

            tab = await ann_tab.op("subscribe", "chat:1")
            assert len(tab["presence"]["members"]) == 2
            mark = await marker(http, server.api_url, "chat:1", "after the tab")
            assert await until(ann, mark) == []
            assert join("chat:1", "ann") not in await until(bob, mark)  # his own may be


async def test_a_resume_makes_no_event_and_an_unresumed_session_leaves(
    http: aiohttp.ClientSession,
) -> None:
    """Ann drops and resumes: Bob hears nothing. Ann drops for good: once her session
    has waited out --session-ttl, Bob hears her leave, once."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with client(url + token("bob")) as bob:
            await bob.op("subscribe", "chat:1")
            assert await bob.next() == join("chat:1", "bob")
            async with client(url + token("ann")) as ann:
                await ann.op("subscribe", "chat:1")
                welcome = ann.welcome
            assert await bob.next() == join("chat:1", "ann")
            again = await resume(f"{server.ws_url}?resume=1&token={token('ann')}", welcome)
            mark = await marker(http, server.api_url, "chat:1", "after the resume")
            assert await until(bob, mark) == []
            await again.ws.close()
            # Nothing until the session ends (FAST_TIMERS: 0.5 s), then her leave.
            assert await bob.next() == leave("chat:1", "ann")
            mark = await marker(http, server.api_url, "chat:1", "once")
            assert await until(bob, mark) == []


async def test_members_still_connected_stay_however_long(http: aiohttp.ClientSession) -> None:
    """Their node renews the entries its live connections hold: Ann and Bob, connected
    and silent for over twice an entry's deadline unrenewed (the session TTL and two
    renewals: 0.75 s here), are still listed, and nobody heard a leave."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with client(url + token("ann")) as ann, client(url + token("bob")) as bob:
            await ann.op("subscribe", "chat:1")
            await bob.op("subscribe", "chat:1")
            await until(ann, join("chat:1", "bob"))
            await asyncio.sleep(4 * FAST_TIMERS["session_ttl"])  # nothing to await: time
            mark = await marker(http, server.api_url, "chat:1", "still here")
            assert await until(ann, mark) == []
            listed = (await bob.op("presence", "chat:1"))["presence"]["members"]
            assert [member["user"] for member in listed] == ["ann", "bob"]


async def test_an_unsubscribe_and_an_ended_session_leave_at_once(
    http: aiohttp.ClientSession,
) -> None:
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with (
            client(url + token("bob")) as bob,
            client(url + token("ann")) as ann,
            client(url + token("cay")) as cay,
        ):
            for c in (bob, ann, cay):
                await c.op("subscribe", "chat:1")
            await until(bob, join("chat:1", "cay"))
            await ann.op("unsubscribe", "chat:1")
            assert await bob.next() == leave("chat:1", "ann")
            status, body = await post(
                http,
                server.api_url + "/disconnect",
                data={"wsId": cay.ws_id, "endSession": "true"},
            )
            assert status == 200, body
            assert await bob.next() == leave("chat:1", "cay")


async def test_without_sessions_a_close_is_a_leave() -> None:
    async with running_server(**{**SETTINGS, "session_ttl": 0}) as server:
        url = server.ws_url + "?token="
        async with client(url + token("bob")) as bob:
            await bob.op("subscribe", "chat:1")
            async with client(url + token("ann")) as ann:
                await ann.op("subscribe", "chat:1")
                await until(bob, join("chat:1", "ann"))
            assert await bob.next() == leave("chat:1", "ann")


async def test_anonymous_members_are_each_their_own_user() -> None:
    async with (
        running_server(**SETTINGS) as server,
        client(server.ws_url) as one,
        client(server.ws_url) as two,
    ):
        await one.op("subscribe", "chat:1")
        reply = await two.op("subscribe", "chat:1")
        assert reply["presence"]["members"] == [
            {"user": None, "wsId": one.ws_id},
            {"user": None, "wsId": two.ws_id},
        ]
        first = await one.next()
        assert first["data"]["wsId"] == one.ws_id
        second = await one.next()
        assert (second["data"]["event"], second["data"]["wsId"]) == ("join", two.ws_id)


async def test_a_grant_signs_the_members_info() -> None:
    """In a grant namespace the back end signs the info with the grant: sent as it
    was signed it is told to the room; changed, or without a grant, it is refused."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with client(url + token("ann")) as ann:
            info = json.dumps({"role": "agent"})
            good = grant_for(GRANT_SECRET, ann.ws_id, "team:7", info)
            tampered = await ann.op("subscribe", "team:7", grant=good, info='{"role":"admin"}')
            assert (tampered["ok"], tampered["code"]) == (False, 403)
            unsigned = await ann.op("subscribe", "chat:1", info=info)
            assert (unsigned["ok"], unsigned["code"]) == (False, 400)
            reply = await ann.op("subscribe", "team:7", grant=good, info=info)
            assert reply["presence"]["members"] == [{"user": "ann", "info": {"role": "agent"}}]
            asked = await ann.op("presence", "team:7")
            assert asked["ok"] is True
            assert asked["presence"] == reply["presence"] | {
                "position": asked["presence"]["position"]
            }


async def test_the_presence_operation_answers_members_only() -> None:
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        assert (await c.op("presence", "chat:1"))["code"] == 403  # not a member
        await c.op("subscribe", "chat:1")
        assert (await c.op("presence", "chat:1"))["ok"] is True


async def test_the_back_ends_join_and_leave_are_presence_too(
    http: aiohttp.ClientSession,
) -> None:
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with client(url + token("bob")) as bob, client(url + token("ann")) as ann:
            for c in (bob, ann):
                status, _ = await post(
                    http, server.api_url + "/room/join", data={"id": "desk:1", "wsId": c.ws_id}
                )
                assert status == 200
            assert await until(bob, join("desk:1", "ann")) == [join("desk:1", "bob")]
            status, _ = await post(
                http, server.api_url + "/room/leave", data={"id": "desk:1", "wsId": ann.ws_id}
            )
            assert status == 200
            assert await bob.next() == leave("desk:1", "ann")


async def test_a_tokens_rooms_enter_presence_before_the_welcome() -> None:
    """A connection token's rooms: the member is in the room's presence by the time
    its welcome arrives (the welcome waits for it)."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with client(url + token("bob", rooms=["desk:2"])) as bob:
            async with client(url + token("ann", rooms=["desk:2"])) as ann:
                reply = await ann.op("presence", "desk:2")
                assert [m["user"] for m in reply["presence"]["members"]] == ["bob", "ann"]
            assert await bob.next() == join("desk:2", "bob")
            assert await bob.next() == join("desk:2", "ann")


async def test_the_api_lists_a_presence_rooms_users(http: aiohttp.ClientSession) -> None:
    """GET /rooms/{id}: a presence room's first page has its users, grouped by user,
    with their info and wsIds."""
    async with running_server(**SETTINGS) as server:
        url = server.ws_url + "?token="
        async with (
            client(url + token("ann", info={"n": 1})) as ann,
            client(url + token("ann")) as ann_tab,
            client(server.ws_url) as anon,
        ):
            for c in (ann, ann_tab, anon):
                await c.op("subscribe", "chat:1")
            async with http.get(server.api_url + "/rooms/chat:1") as response:
                body = await response.json()
            assert body["count"] == 3
            assert body["presence"]["users"] == [
                {"user": "ann", "info": {"n": 1}, "wsIds": [ann.ws_id, ann_tab.ws_id]},
                {"user": None, "wsId": anon.ws_id, "wsIds": [anon.ws_id]},
            ]
            async with http.get(server.api_url + "/rooms/lobby") as response:
                assert "presence" not in await response.json()


async def test_a_room_without_presence_answers_404() -> None:
    """A member asking in a room whose namespace keeps no presence is told so with
    its own code (the SDKs then know the whole namespace keeps none)."""
    async with (
        running_server(**{**SETTINGS, "namespaces": "lobby=public"}) as server,
        client(server.ws_url) as c,
    ):
        await c.op("subscribe", "lobby:1")
        refused = await c.op("presence", "lobby:1")
        assert (refused["ok"], refused["code"]) == (False, 404)
        assert "keeps no presence" in refused["reason"]
