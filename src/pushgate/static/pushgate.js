// pushgate.js: the browser client of pushgate. An ES module with no dependencies.
//
//   import { PushgateClient, PushAPI } from "/static/pushgate.js";
//
//   const api = new PushAPI("http://127.0.0.1:9999", { apiKey });   // apiKey optional
//   const client = new PushgateClient("ws://127.0.0.1:8888/connect", { api });
//   // several gateways of one cluster: new PushgateClient([url1, url2], { api })
//   // a gateway that checks connection tokens: new PushgateClient(url, { api, token: jwt })
//   client.addEventListener("message", (e) => console.log(e.detail.type, e.detail.room, e.detail.data));
//   client.on("recovery", ({ recovered, streams }) => recovered || console.warn("lost pushes", streams));
//   client.on("rooms", ({ rooms, room, joined, reason }) => console.log(rooms, room, joined, reason));
//   await client.connect();        // resolves with the wsId once the welcome has arrived
//   await client.join("news");     // kept by the session; joined again if it is a new one
//   await client.subscribe("lobby:1");                        // a public room: by itself
//   await client.subscribe("chat:42", { grant });             // a grant room: the back end's grant
//   // (or { token }: a subscription token); rejects with SubscribeError {code, reason, retryable}
//   client.on("presence", ({ room, joined, member, members }) => render(room, members));
//   client.presence("chat:42");   // Map: user (an anonymous member: its wsId) -> {user, info, wsId}
//   await client.publish("chat:42", { text: "hi" }, { tag: 7 });   // a +publish room's members
//   // get it as a "message" with from: {wsId, user}; rejects with SubscribeError as subscribe does
//
// What a caller must know (docs/recovery.md is the protocol):
// - The client sends {"type":1,"data":"PING"} every `heartbeat` seconds (the server's
//   interval unless a number is given) and swallows the PONGs; "message" events carry
//   pushes only: detail {type, data, room (null if not a room push), user (null if not a
//   push to one user), stream ("all", "room:<id>" or "user:<id>"), seq, epoch (null when
//   the server keeps no history), from ({wsId, user}: the member who published it; null
//   for the back end's pushes), time (a Date)}.
// - When the connection drops, or nothing (not even a PONG) arrives for three heartbeat
//   intervals, it reconnects after a random delay of up to backoffInitial ms, doubling up
//   to backoffMax ms; at once when the server closed an open connection with 1012 (a
//   gateway draining). Given several URLs (gateways of one cluster), a connection that
//   fails before its welcome, or a 1012, moves on to the next URL, round robin.
// - A reconnect RESUMES the session (same wsId, same rooms, nothing joined again) when
//   the server gave one (its welcome has a "session"): the client asks, per stream,
//   for everything after the last push it received. When the server can give it all,
//   every push arrives exactly once and in order per stream, across the reconnect, and
//   client.recovered is true. Where it cannot (the pushes were trimmed from history or
//   expired, or the stream's history was lost), what it still had is delivered, the
//   rest is lost, and the client SAYS so: client.recovered is false and a "recovery"
//   event names the streams. The same event (recovered false, gap true) reports a gap
//   the server finds later and cannot fill. Order across different streams is not kept.
// - When the session cannot be resumed (it expired after the server's --session-ttl, or
//   the server keeps no sessions), the reconnect is a NEW session with a NEW wsId: rooms
//   joined with client.join() are joined again before the state becomes "open", and the
//   pushes sent while it was away are lost (recovered false, with the server's reason).
// - No push is delivered twice in a session: one at or before the last push delivered
//   on its stream (same epoch) is dropped. client.positions gives, per stream, the
//   [epoch, seq] a resume continues from.
// - The server closing with 4001 means another connection resumed this session, and with
//   a code from 4400 to 4499 that the server wants it gone (4410: an operator ended the
//   session): the client stops (state closed) and does not reconnect.
// - Rooms (docs/protocol.md "Subscribing" and "Events", docs/sdk.md): client.rooms is the
//   rooms the connection is in, kept from what the server says, in its order: the
//   welcome's list (it connects with ?v=2), the replies to subscribe() and unsubscribe(),
//   and its "joined"/"left" events (the back end's moves, a subscription token's expiry).
//   join() and leave() (through the api) resolve once it says so too. subscribe(room,
//   {grant, token}) resolves with {room, position, expires} once the server has done it,
//   or rejects with a SubscribeError {op, room, code, reason, retryable} (code 0: no reply
//   can come, the connection is not open or dropped first); nothing is retried by itself.
// - A resumed session keeps its rooms: nothing is subscribed or joined again. A NEW session
//   is put back in the rooms the client put itself in (client.ownRooms: join() and
//   subscribe()) before it counts as open. A grant is made for one wsId: a room subscribed
//   with a grant or a token gets a new one from the grantFor(room, wsId) option (an async
//   function asking your back end; without it a token is shown again, and a grant room is
//   given up with an "error" event). Rooms the back end put it in are the back end's to redo.
// - Publishing (docs/protocol.md "Publishing", docs/sdk.md): publish(room, data, {tag, echo})
//   sends `data` (any JSON value) to the other members of a room the connection is in, in a
//   namespace with +publish; it resolves once the server has accepted it, or rejects with a
//   SubscribeError (op "publish"; 403: not a member, or no +publish). The others get it as a
//   "message" with `from`; the sender too only with echo. A publish is never sent again by
//   the client: one cut off by a drop rejects with code 0, and may or may not have reached
//   the room; sending it again is the caller's choice (and may deliver it twice). A message
//   over the server's --max-message-bytes (4 KiB by default) closes the connection (1009).
// - It sends at most maxSendRate messages a second (PINGs, operations), under the server's
//   --max-client-messages-per-second (50).
// - Presence (docs/protocol.md "Presence", docs/sdk.md): in a room whose namespace keeps
//   presence, client.presence(room) is who is there, a Map of {user, info, wsId} by user (an
//   anonymous member, user null, by its wsId); null for a room without presence or not known
//   yet. It takes the members a subscribe's reply carries, or asks for them (the "presence"
//   operation) for a room it is in otherwise (the welcome, a "joined" event) once the room's
//   namespace is known to keep presence (a namespace that keeps none is asked once), then
//   applies each join and leave event after their position; events that come while the
//   members are asked for wait, and those the members count already are passed over. A
//   resume keeps the views (the events missed come from history; a stream the server could
//   not recover is asked for again); a new session asks for them all again and tells only
//   what differs. subscribe(room, {grant, info}) sends `info`, the member info the grant signs
//   (the JSON text as the back end signed it); a new session sends it again.
// - Events (an EventTarget; each detail is a plain object):
//     "state"    {state, wsId}   state is one of State: connecting, open, reconnecting, closed
//     "open"     {wsId, heartbeat, reconnected, resumed}
//     "recovery" {resumed, recovered, streams, wsId, reason, previousWsId}   after every
//                reconnect's welcome (also sets client.recovered), and on a gap notice
//                from the server (then {resumed, recovered: false, streams, wsId, gap: true});
//                streams: {name: {recovered, epoch, seq}} as the server sent them;
//                reason: why it could not resume (null when it did)
//     "message"  {type, data, room, user, stream, seq, epoch, from, time}
//     "rooms"    {rooms, room, joined, reason}   after each change of client.rooms: room came
//                in (joined) or went; reason "subscribe" or "unsubscribe" (this client's),
//                "server" (the back end, join() and leave() included), "expired" (a token's
//                exp passed), "welcome" (the welcome said so: a new session, or moved while away)
//     "presence" {room, joined, member, members}   after each change of client.presence(room):
//                member {user, info, wsId} came in (a join, or the members a reply told; a join
//                of one there already with other info replaces it) or went (a leave, or the
//                room's view went with the room); members: the view's members now
//     "close"    {code, reason}  a connection ended (reconnecting follows unless closed)
//     "error"    {error, room}   a rejoin, a room given up in a new session (room), or a frame
//                it could not read; it carries on
// - PushAPI methods resolve with the server's JSON answer and reject with PushAPIError
//   ({status, message, field}; status 0 when the server could not be reached).

export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

// A push's type when none is given, as in every client (pushgate.apicalls.DEFAULT_TAG).
export const DEFAULT_TAG = 2;
const TYPE_WELCOME = 0;
const TYPE_HEARTBEAT = 1;
const PING = '{"type":1,"data":"PING"}';
// Close codes from the server (docs/recovery.md)
const CLOSE_SERVICE_RESTART = 1012; // the gateway is draining: resume at once, elsewhere
const CLOSE_SESSION_TAKEN = 4001; // another connection resumed this session: stop

/** Whether a close `code` from the server means: do not come back (4001, 4400-4499). A new
 *  connection would be refused again, or undo what an operator did (4410: session ended). */
export function isFinalClose(code) {
  return code === CLOSE_SESSION_TAKEN || (code >= 4400 && code <= 4499);
}
// Close codes of this client's own (sent to the server, and in "close" events)
const CLOSE_NO_WELCOME = 4000;
const CLOSE_HEARTBEAT = 4002;
const CLOSE_NO_TOKEN = 4003;
const CLOSE_REJOIN_FAILED = 4004;

/** The server refused an operation (`op`: subscribe, unsubscribe, refresh or publish; the
 * name is older than publishing) on `room`: `code` (400 malformed, 401 a grant or token is
 * needed, 403 not allowed (a publish: not a member, or no +publish), 409 too many rooms or
 * nothing to refresh, 429 over the message rate, 503 the broker is away) and `reason`.
 * code 0: no reply can come (not open, or the connection dropped before it). */
export class SubscribeError extends Error {
  constructor(op, room, code, reason) {
    super(`${op} ${room}: ${code ? `${code} ` : ""}${reason}`);
    this.name = "SubscribeError";
    this.op = op;
    this.room = room;
    this.code = code;
    this.reason = reason;
  }

  /** Whether the same call may succeed later. */
  get retryable() {
    return this.code === 0 || this.code === 429 || this.code === 503;
  }
}

/** The logic API refused a request (status = HTTP status), or could not be reached (0). */
export class PushAPIError extends Error {
  constructor(status, message, field = null) {
    super(status ? `HTTP ${status}: ${message}` : message);
    this.name = "PushAPIError";
    this.status = status;
    this.field = field;
    this.serverMessage = message;
  }
}

/** A client of the logic HTTP API. baseUrl "" means the page's own origin. */
export class PushAPI {
  constructor(baseUrl = "", { apiKey = null, timeout = 10000 } = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.apiKey = apiKey || null;
    this.timeout = timeout;
  }

  pushAll(val, tag = DEFAULT_TAG) {
    return this.request("POST", "/push/all", { val, tag });
  }

  pushRoom(room, val, tag = DEFAULT_TAG) {
    return this.request("POST", "/push/room", { id: room, val, tag });
  }

  pushUser(user, val, tag = DEFAULT_TAG) {
    return this.request("POST", "/push/user", { uid: user, val, tag });
  }

  pushConn(wsId, val, tag = DEFAULT_TAG) {
    return this.request("POST", "/push/conn", { wsId, val, tag });
  }

  /** Up to 1,000 pushes, each {target: "all"|"room"|"user"|"conn", val, tag, id|uid|wsId}:
   * resolves with {results: [one answer per push, in order]}. */
  pushBatch(pushes) {
    return this.request("POST", "/push/batch", pushes);
  }

  join(room, wsId) {
    return this.request("POST", "/room/join", { id: room, wsId });
  }

  leave(room, wsId) {
    return this.request("POST", "/room/leave", { id: room, wsId });
  }

  /** Every current connection of a user joins (or leaves) the room. */
  joinUser(room, uid) {
    return this.request("POST", "/room/join", { id: room, uid });
  }

  leaveUser(room, uid) {
    return this.request("POST", "/room/leave", { id: room, uid });
  }

  /** Close one connection (or all of a user's, with {uid}) with a 4000-4999 code (4400-4499:
   *  the SDKs do not reconnect); without one, the server's: 4000, or 4410 with endSession. */
  disconnect({ wsId = undefined, uid = undefined, code = undefined, reason = undefined, endSession = false }) {
    return this.request("POST", "/disconnect", { wsId, uid, code, reason, endSession });
  }

  stats() {
    return this.request("GET", "/stats");
  }

  rooms(limit = 100) {
    return this.request("GET", `/rooms?limit=${limit}`);
  }

  /** One page of a room's members; pass the answer's nextCursor for the next. */
  roomMembers(room, { limit = 100, cursor = null } = {}) {
    const query = `limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    return this.request("GET", `/rooms/${encodeURIComponent(room)}?${query}`);
  }

  connection(wsId) {
    return this.request("GET", `/connections/${encodeURIComponent(wsId)}`);
  }

  user(uid) {
    return this.request("GET", `/users/${encodeURIComponent(uid)}`);
  }

  healthz() {
    return this.request("GET", "/healthz");
  }

  /** Send `fields` as JSON; resolve with the answer's JSON, reject with PushAPIError. */
  async request(method, path, fields = undefined) {
    const headers = {};
    if (fields !== undefined) headers["Content-Type"] = "application/json";
    if (this.apiKey) headers["Authorization"] = `Bearer ${this.apiKey}`;
    const url = this.baseUrl + path;
    let response;
    let text;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: fields === undefined ? undefined : JSON.stringify(fields),
        signal: AbortSignal.timeout(this.timeout),
        cache: "no-store",
      });
      text = await response.text();
    } catch (error) {
      throw new PushAPIError(0, `cannot reach ${url}: ${error.message || error}`);
    }
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: reported below
    }
    if (response.ok && body && typeof body === "object") return body;
    if (body && typeof body === "object" && typeof body.error === "string") {
      throw new PushAPIError(response.status, body.error, body.field ?? null);
    }
    throw new PushAPIError(response.status, text.trim().slice(0, 200) || response.statusText);
  }
}

/** One logical connection to a gateway: a session, resumed when the connection drops. */
export class PushgateClient extends EventTarget {
  constructor(
    urls,
    {
      heartbeat = true,
      reconnect = true,
      api = null,
      token = null,
      backoffInitial = 500,
      backoffMax = 30000,
      openTimeout = 10000,
      grantFor = null,
      maxSendRate = 20,
    } = {},
  ) {
    super();
    this.urls = (Array.isArray(urls) ? urls : [urls]).map(String);
    if (!this.urls.length) throw new Error("PushgateClient needs at least one gateway URL");
    this.api = api;
    // A JWT (or a function returning one, or a promise of one), sent as the WebSocket
    // subprotocols ["pushgate", token]: browsers cannot set headers on a WebSocket.
    this.token = token;
    // async (room, wsId) => a new grant or subscription token for a new session's wsId.
    this.grantFor = grantFor;
    this.options = { heartbeat, reconnect, backoffInitial, backoffMax, openTimeout, maxSendRate };
    this.state = State.CLOSED;
    this.wsId = "";
    this.session = ""; // the session's secret token, from the welcome ("" if none)
    this.heartbeat = 0;
    this.connects = 0;
    this.closeCode = null;
    this.resumed = false; // whether the current connection resumed the session
    this.recovered = null; // whether the last resume recovered everything (null: none yet)
    this._urlIndex = 0;
    this._rooms = new Set(); // the rooms the connection is in, as the server says
    this._own = new Map(); // room -> {via, token}: what the client put itself in, and how
    this._events = false; // the server tells of rooms (?v=2)
    this._redoPending = false; // a new session is not yet back in the client's own rooms
    // Presence: room -> {members: Map, known, position, buffer, ask} (buffer: events held
    // while the members are asked for; ask: {ws, id} of the operation bringing them).
    this._views = new Map();
    this._namespaces = new Map(); // namespace -> whether it keeps presence, as the server said
    this._renewing = false; // a new session: views kept until it is back in its rooms
    this._pending = new Map(); // operation id -> {op, room, grant, token, resolve, reject}
    this._lastId = 0;
    this._pings = 0; // PINGs sent and PONGs read on this connection: a PONG tells
    this._pongs = 0; // that everything the server sent before it has been read
    this._caughtUp = [];
    this._outbox = []; // messages waiting for their turn under maxSendRate
    this._sendTokens = maxSendRate;
    this._sendStamp = 0;
    this._sendTimer = null;
    // stream -> {epoch, seq, got}: `seq` is where a resume starts from (the last push
    // received, or the server's position for a stream it could not recover); `got` is
    // the last seq delivered in that epoch, at or below which a push is a duplicate.
    this._positions = new Map();
    this._ws = null;
    this._welcomed = false; // whether the current (or last) connection got its welcome
    this._timers = new Set();
    this._attempt = 0;
    this._lastReceived = 0;
    this._firstOpen = null;
    this._epoch = 0; // bumped by close(): an _open() awaiting a token from before then gives up
  }

  /** The gateway URL in use (or to be tried next). */
  get url() {
    return this.urls[this._urlIndex];
  }

  /** The rooms the connection is in, as the server has said. */
  get rooms() {
    return [...this._rooms];
  }

  /** The rooms the client put itself in (join(), subscribe()), which a new session is put
   *  back in; a room the server takes it out of is dropped. */
  get ownRooms() {
    return [...this._own.keys()];
  }

  /** Of ownRooms, those it subscribed itself (subscribe(), not join()). */
  get subscriptions() {
    return [...this._own].filter(([, own]) => own.via !== "join").map(([room]) => room);
  }

  /** Who is in `room`: a Map (a copy) of {user, info, wsId} by user (an anonymous member by its
   *  wsId), kept true by the room's events; null for a room without presence, one the
   *  connection is not in, or one whose members are not known yet. */
  presence(room) {
    const view = this._views.get(room);
    return view && view.known ? new Map(view.members) : null;
  }

  /** Per stream, the position [epoch, seq] a resume asks to continue from. */
  get positions() {
    return Object.fromEntries([...this._positions].map(([name, p]) => [name, [p.epoch, p.seq]]));
  }

  /** Listen for `type`; returns a function that stops listening. */
  on(type, listener) {
    const handler = (event) => listener(event.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Start connecting (retrying until it can); resolves with the first wsId.
   *  A connect() after close() starts a new session. */
  connect() {
    if (this.state !== State.CLOSED) return this._firstOpen ?? Promise.resolve(this.wsId);
    this._firstOpen = new Promise((resolve, reject) => {
      this._resolveFirst = resolve;
      this._rejectFirst = reject;
    });
    this.session = "";
    this.resumed = false;
    this.recovered = null;
    this._positions.clear();
    this._attempt = 0;
    this._setState(State.CONNECTING);
    this._open();
    return this._firstOpen;
  }

  /** Close for good (code 1000). connect() may be called again later. */
  close() {
    this._epoch += 1;
    this._clearTimers();
    if (this._ws) {
      const ws = this._detach();
      ws.close(1000);
    }
    this._endWaits();
    if (this.state !== State.CLOSED) {
      this._setState(State.CLOSED);
      this._rejectFirst?.(new Error("closed before the first connection opened"));
      this._resolveFirst = this._rejectFirst = null;
    }
  }

  /** Join `room` through the api; the session keeps it, and a new session joins it again.
   *  Resolves once client.rooms has it. */
  async join(room) {
    const answer = await this._needApi().join(room, this.wsId);
    this._own.set(room, { via: "join", token: null });
    await this._settle([room], true);
    return answer;
  }

  /** Leave `room` and stop rejoining it; resolves once client.rooms has it no more. */
  async leave(room) {
    this._own.delete(room);
    const answer = await this._needApi().leave(room, this.wsId);
    await this._settle([room], false);
    return answer;
  }

  /** Put this connection in `room` where its namespace lets a client do it (with nothing,
   *  a `grant` from the back end, or a subscription `token`), and again in a new session.
   *  `info`: in a presence room, the member info the grant signs (the JSON text exactly as
   *  the back end signed it). Resolves with {room, position: [epoch, seq] or null, expires:
   *  Unix seconds or null, presence: {members, position} in a presence room, else null};
   *  rejects with SubscribeError. */
  async subscribe(room, { grant = null, token = null, info = null } = {}) {
    if (grant !== null && token !== null) throw new Error("give a grant or a token, not both");
    const reply = await this._operate("subscribe", room, { grant, token, info });
    return { room, position: reply.position, expires: reply.expires, presence: reply.presence };
  }

  /** Take this connection out of `room` and stop putting it back; rejects with SubscribeError. */
  async unsubscribe(room) {
    await this._operate("unsubscribe", room);
  }

  /** Renew a token's subscription with a newer token, before its `expires`. */
  async refresh(room, token) {
    const reply = await this._operate("refresh", room, { token });
    return { room, position: reply.position, expires: reply.expires, presence: reply.presence };
  }

  /** Send `data` (any JSON value, null included) to the other members of `room`, a room
   *  this connection is in whose namespace has +publish: a "message" of type `tag` (2 to
   *  2^53-1) with `from` this connection, for itself too with `echo`. Resolves once the
   *  server has accepted it; rejects with SubscribeError (code 0: no reply can come, and it
   *  is not sent again), or a TypeError, before sending, for `data` undefined. */
  async publish(room, data, { tag = DEFAULT_TAG, echo = false } = {}) {
    // JSON.stringify would leave the key out: the server would refuse it for "no data".
    if (data === undefined) throw new TypeError("publish needs data (null is data; undefined is not)");
    await this._operate("publish", room, { tag, data, echo });
  }

  // Internals

  _needApi() {
    if (!this.api) throw new Error("join and leave need new PushgateClient(url, { api })");
    return this.api;
  }

  /** After api calls that moved this connection: the server's events come before the PONG
   *  to a PING sent now (a server without events: take the answer's word). */
  async _settle(rooms, joined) {
    if (this._events) return this._catchUp();
    for (const room of rooms) {
      if (joined) this._enter(room, "server");
      else this._exit(room, "server");
    }
  }

  async _catchUp() {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const sent = await this._send(ws, PING, true);
    if (sent === null || this._pongs >= sent || this._ws !== ws) return;
    // A PING over the server's rate is dropped: do not wait for ever.
    await new Promise((resolve) => {
      this._caughtUp.push({ n: sent, resolve });
      this._after(this.options.openTimeout, resolve);
    });
  }

  /** Send an operation on the open connection (or, `redo`, the one being reopened) and
   *  resolve with its reply; a refusal rejects with SubscribeError. It is sent once: a
   *  connection that drops first rejects it with code 0, whatever the op. */
  async _operate(op, room, { grant = null, token = null, info = null, ...published } = {}, redo = false) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || (this.state !== State.OPEN && !redo)) {
      throw new SubscribeError(op, room, 0, `the connection is not open (${this.state})`);
    }
    const id = ++this._lastId;
    const data = { op, room, id };
    if (grant !== null) data.grant = grant;
    if (token !== null) data.token = token;
    if (info !== null) data.info = info;
    if (op === "publish") Object.assign(data, published); // {tag, data, echo}
    if (op === "subscribe" || op === "presence") this._rosterAsked(room, ws, id, op);
    const reply = await new Promise((resolve, reject) => {
      this._pending.set(id, { op, room, grant, token, info, resolve, reject });
      this._send(ws, JSON.stringify({ type: TYPE_WELCOME, data }));
    });
    if (!reply.ok) throw new SubscribeError(op, room, reply.code ?? 0, reply.reason);
    return reply;
  }

  /** A reply: client.rooms changes here, in the order the server said things. */
  _onReply(data) {
    const pending = Number.isInteger(data.id) ? this._pending.get(data.id) : undefined;
    const room = typeof data.room === "string" ? data.room : null;
    if (data.ok === true && room !== null) {
      if (data.op === "subscribe") {
        if (pending) this._own.set(room, ownOf(pending));
        this._enter(room, "subscribe");
      } else if (data.op === "refresh" && pending && this._own.has(room)) {
        this._own.set(room, ownOf(pending));
      } else if (data.op === "unsubscribe") {
        this._own.delete(room);
        this._exit(room, "unsubscribe");
      }
    }
    const presence = rosterOf(data.presence);
    if (room !== null && ["subscribe", "refresh", "presence"].includes(data.op)) {
      this._presenceReply(room, data, presence);
    }
    if (!pending) return;
    this._pending.delete(data.id);
    pending.resolve({
      op: data.op,
      ok: data.ok === true,
      room,
      position: positionOf(data.position),
      expires: Number.isInteger(data.expires) ? data.expires : null,
      code: Number.isInteger(data.code) ? data.code : null,
      reason: typeof data.reason === "string" ? data.reason : "",
      presence,
    });
  }

  /** A type-0 frame with an "op": a reply, a joined/left event, or a presence event. */
  _onControl(data, message) {
    if ("ok" in data) {
      this._onReply(data);
    } else if (data.op === "presence" && typeof data.room === "string") {
      const member = memberOf(data);
      if (member === null || (data.event !== "join" && data.event !== "leave")) return;
      const seq = Number.isInteger(message.seq) ? message.seq : null;
      const epoch = typeof message.epoch === "string" ? message.epoch : null;
      if (!this._fresh(`room:${data.room}`, seq, epoch)) return;
      this._presenceEvent({ room: data.room, joined: data.event === "join", member, seq, epoch });
    } else if ((data.op === "joined" || data.op === "left") && typeof data.room === "string") {
      const reason = String(data.reason ?? "");
      if (data.op === "joined") {
        this._enter(data.room, reason);
      } else {
        this._own.delete(data.room); // the server's word: not put back
        this._exit(data.room, reason);
      }
    }
  }

  _enter(room, reason) {
    if (this._rooms.has(room)) return;
    this._rooms.add(room);
    this._emit("rooms", { rooms: this.rooms, room, joined: true, reason });
    this._wantRoster(room);
  }

  _exit(room, reason) {
    this._positions.delete(`room:${room}`); // a later join starts afresh
    if (this._rooms.has(room)) {
      this._rooms.delete(room);
      this._emit("rooms", { rooms: this.rooms, room, joined: false, reason });
    }
    if (!this._renewing) this._dropView(room); // a new session keeps them: only differences are told
  }

  // Presence

  /** The connection is in `room`: know who is there, if its namespace keeps presence (or
   *  may: then one room of it asks, and the answer tells for all). */
  _wantRoster(room) {
    if (this._views.has(room) || this._namespaces.get(namespaceOf(room)) === false) return;
    this._views.set(room, newView([]));
    this._flushAsks();
  }

  /** An operation whose reply may carry `room`'s members is being sent. */
  _rosterAsked(room, ws, id, op) {
    let view = this._views.get(room);
    if (op === "subscribe") {
      if (this._namespaces.get(namespaceOf(room)) === false) return;
      if (!view) this._views.set(room, (view = newView([])));
      else if (view.buffer === null) return; // known and kept true: the reply tells nothing new
    } else if (!view || view.buffer === null) {
      return;
    }
    view.ask = { ws, id };
  }

  /** Ask for the members of each room that waits for them and has no ask under way on this
   *  connection (one room at a time of a namespace not known to keep presence); forget the
   *  views of rooms the connection is not in. */
  _flushAsks() {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const probing = new Set();
    for (const [room, view] of this._views) {
      if (view.ask && view.ask.ws === ws) probing.add(namespaceOf(room));
    }
    for (const [room, view] of [...this._views]) {
      if (view.buffer === null || (view.ask && view.ask.ws === ws)) continue;
      const namespace = namespaceOf(room);
      const keeps = this._namespaces.get(namespace);
      if (!this._rooms.has(room) || keeps === false) {
        if (this._rooms.has(room) || !this._renewing) this._dropView(room);
        continue;
      }
      if (keeps === undefined) {
        if (probing.has(namespace)) continue; // its answer tells for this one too
        probing.add(namespace);
      }
      view.ask = { ws, id: 0 };
      this._operate("presence", room, {}, true).catch(() => {}); // the reply is read below
    }
  }

  /** A reply that may carry `room`'s members (`presence`), or say it has none. */
  _presenceReply(room, data, presence) {
    const namespace = namespaceOf(room);
    const view = this._views.get(room);
    const mine = Boolean(view && view.ask && view.ask.id === data.id);
    if (data.ok === true && presence !== null) {
      this._namespaces.set(namespace, true);
      if (mine) this._takeRoster(room, view, presence);
    } else if (data.ok === true) {
      if (data.op !== "presence") {
        this._namespaces.set(namespace, false); // a subscription in a room without presence
        if (mine) this._dropView(room);
      }
    } else if (data.op === "presence") {
      if (data.code === 404) this._namespaces.set(namespace, false); // its namespace keeps no presence
      if (!mine) return;
      if ([409, 429, 503].includes(data.code)) {
        view.ask = null; // not now: ask again in a moment
        this._after(1000, () => this._flushAsks());
      } else {
        this._dropView(room);
      }
    } else if (mine) {
      view.ask = null; // a subscribe refused: asked for below, if the connection is in the room
    }
  }

  /** The members as of the roster's position: tell what differs from the view (all of them,
   *  the first time), then apply the events held meanwhile that came after it (without
   *  history: none, it is after them all). */
  _takeRoster(room, view, roster) {
    const before = view.known ? view.members : new Map();
    const held = roster.position !== null ? view.buffer || [] : [];
    const members = new Map(roster.members.map((member) => [keyOf(member), member]));
    Object.assign(view, { members, known: true, position: roster.position, buffer: null, ask: null });
    for (const [key, member] of before) {
      if (!members.has(key)) this._emitPresence(room, false, member, view);
    }
    for (const [key, member] of members) {
      if (!sameMember(before.get(key), member)) this._emitPresence(room, true, member, view);
    }
    for (const event of held) this._presenceEvent(event);
  }

  _presenceEvent(event) {
    const view = this._views.get(event.room);
    if (!view) return; // not asked for: the members, when asked, count it
    if (view.buffer !== null) {
      view.buffer.push(event);
      return;
    }
    const position = view.position;
    if (event.seq !== null && position !== null) {
      if (event.epoch !== position[0]) {
        view.buffer = []; // the stream started over: ask again
        view.ask = null;
        return;
      }
      if (event.seq <= position[1]) return; // the members told of it already
    }
    const { member } = event;
    const key = keyOf(member);
    if (event.joined) {
      if (!sameMember(view.members.get(key), member)) {
        view.members.set(key, member);
        this._emitPresence(event.room, true, member, view);
      }
    } else if (view.members.has(key)) {
      const gone = view.members.get(key);
      view.members.delete(key);
      this._emitPresence(event.room, false, gone, view);
    }
    if (event.seq !== null) view.position = [event.epoch, event.seq];
  }

  /** Forget `room`'s view: each member it had leaves it. */
  _dropView(room) {
    const view = this._views.get(room);
    if (!view) return;
    this._views.delete(room);
    if (!view.known) return;
    const left = new Map(view.members);
    for (const [key, member] of left) {
      view.members.delete(key);
      this._emitPresence(room, false, member, view);
    }
  }

  _emitPresence(room, joined, member, view) {
    this._emit("presence", { room, joined, member, members: [...view.members.values()] });
  }

  /** Events of `stream` may have been lost: ask for its room's members again. */
  _streamLost(stream) {
    if (!stream.startsWith("room:")) return;
    const view = this._views.get(stream.slice("room:".length));
    if (view && view.buffer === null) {
      view.buffer = [];
      view.ask = null;
    }
  }

  /** A new session: what it is in, and whether a namespace keeps presence, is to be learnt
   *  again; every view waits for its members, asked again. */
  _renewPresence() {
    this._namespaces.clear();
    this._renewing = true;
    for (const view of this._views.values()) {
      view.buffer = [];
      view.ask = null;
    }
  }

  /** The new session is back in its rooms: the views of the others go. */
  _endRenewal() {
    this._renewing = false;
    this._flushAsks();
  }

  /** The welcome's rooms are the connection's (a server without events lists none: a new
   *  session is in none, a resumed one where it was). */
  _takeRooms(data, resumed) {
    this._events = Array.isArray(data.rooms);
    if (!this._events && resumed) return;
    const rooms = new Set(this._events ? data.rooms.filter((r) => typeof r === "string") : []);
    for (const room of [...this._rooms]) if (!rooms.has(room)) this._exit(room, "welcome");
    for (const room of rooms) this._enter(room, "welcome");
  }

  /** Put a new session back in the rooms the client had put itself in and it is not in. A
   *  room refused for good is given up; any other failure throws (the caller reconnects,
   *  resuming this session, and tries again). */
  async _redo() {
    const missing = [...this._own].filter(([room]) => !this._rooms.has(room));
    const joins = missing.filter(([, own]) => own.via === "join").map(([room]) => room);
    for (const room of joins) await this._needApi().join(room, this.wsId);
    if (joins.length) await this._settle(joins, true);
    const shown = new Map(); // all asked for first: then all sent
    for (const [room, own] of missing) {
      if (own.via === "join") continue;
      const credentials = await this._credentials(room, own);
      if (credentials === null) this._giveUp(room, "it was subscribed with a grant, and there is no grantFor");
      else shown.set(room, credentials);
    }
    const operations = [...shown].map(([room, credentials]) =>
      this._operate("subscribe", room, credentials, true).then(
        () => null,
        (error) => error,
      ),
    );
    let failed = null;
    for (const error of await Promise.all(operations)) {
      if (error instanceof SubscribeError && !error.retryable) this._giveUp(error.room, error.message);
      else if (error) failed = error;
    }
    if (failed) throw failed;
    this._redoPending = false;
  }

  /** What to show to subscribe to `room` again (null: nothing will do). */
  async _credentials(room, own) {
    if (own.via === "subscribe") return {};
    if (this.grantFor) {
      const shown = { [own.via]: String(await this.grantFor(room, this.wsId)) };
      if (own.info) shown.info = own.info; // the grantFor must sign it again
      return shown;
    }
    if (own.via === "token" && own.token) return { token: own.token };
    return null;
  }

  _giveUp(room, why) {
    this._own.delete(room);
    this._emit("error", { error: new Error(`not subscribed to ${room} again: ${why}`), room });
  }

  /** Send `text` on `ws` in its turn under maxSendRate; resolves with the number of PINGs
   *  sent on it (null when it is no longer the connection). */
  _send(ws, text, ping = false) {
    return new Promise((resolve) => {
      this._outbox.push({ ws, text, ping, resolve });
      this._drain();
    });
  }

  _drain() {
    if (this._sendTimer !== null) return;
    const rate = this.options.maxSendRate;
    while (this._outbox.length) {
      const { ws, text, ping, resolve } = this._outbox[0];
      if (ws !== this._ws || ws.readyState !== WebSocket.OPEN) {
        this._outbox.shift();
        resolve(null);
        continue;
      }
      const now = Date.now();
      this._sendTokens = Math.min(rate, this._sendTokens + ((now - this._sendStamp) / 1000) * rate);
      this._sendStamp = now;
      if (this._sendTokens < 1) {
        const wait = ((1 - this._sendTokens) / rate) * 1000;
        this._sendTimer = setTimeout(() => {
          this._sendTimer = null;
          this._drain();
        }, wait);
        return;
      }
      this._sendTokens -= 1;
      this._outbox.shift();
      ws.send(text);
      if (ping) this._pings += 1;
      resolve(this._pings);
    }
  }

  /** The connection has ended: no reply or PONG will come on it. */
  _endWaits() {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const { op, room, reject } of pending) {
      reject(new SubscribeError(op, room, 0, "the connection dropped before the reply"));
    }
    const waiting = this._caughtUp;
    this._caughtUp = [];
    for (const { resolve } of waiting) resolve();
    const outbox = this._outbox;
    this._outbox = [];
    for (const { resolve } of outbox) resolve(null);
  }

  async _open() {
    const epoch = this._epoch;
    this._welcomed = false;
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (error) {
      if (epoch !== this._epoch) return;
      this._emit("error", { error });
      this._dropped(null, CLOSE_NO_TOKEN, "no connection token");
      return;
    }
    if (epoch !== this._epoch) return; // closed while the token was coming
    // Resume when the last welcome gave a session (and a wsId to resume).
    const resume = this.options.reconnect && this.session && this.wsId ? this._resumeMessage() : null;
    // v=2: told of its rooms (docs/protocol.md, "Events").
    const url = withQuery(resume ? withQuery(this.url, "resume=1") : this.url, "v=2");
    let ws;
    try {
      ws = new WebSocket(url, token ? ["pushgate", String(token)] : []);
    } catch (error) {
      // A malformed URL: retrying cannot help.
      this.close();
      this._emit("error", { error });
      return;
    }
    this._ws = ws;
    this._pings = this._pongs = 0;
    let welcomed = false;
    const welcomeTimer = this._after(this.options.openTimeout, () => {
      if (!welcomed && this._ws === ws) this._dropped(ws, CLOSE_NO_WELCOME, "no welcome in time");
    });
    if (resume) {
      // The resume request is the first message, before the server says anything.
      ws.onopen = () => {
        if (this._ws === ws) ws.send(resume);
      };
    }
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._lastReceived = Date.now();
      let message;
      try {
        message = JSON.parse(typeof event.data === "string" ? event.data : "");
      } catch (error) {
        this._emit("error", { error });
        return;
      }
      if (!message || typeof message !== "object" || !Number.isInteger(message.type)) return;
      if (message.type === TYPE_HEARTBEAT) {
        if (message.data === "PONG") this._ponged();
      } else if (message.type === TYPE_WELCOME) {
        const data = message.data && typeof message.data === "object" ? message.data : {};
        if (welcomed) {
          if (data.op !== undefined) this._onControl(data, message);
          else if (data.recovered === false) this._gap(data);
          this._flushAsks();
          return;
        }
        welcomed = true;
        this._welcomed = true;
        this._clearTimer(welcomeTimer);
        this._onWelcome(ws, data, Boolean(resume));
      } else if (message.type > TYPE_HEARTBEAT) {
        this._push(message);
      }
    };
    ws.onclose = (event) => {
      if (this._ws === ws) this._dropped(ws, event.code, event.reason);
    };
  }

  _resumeMessage() {
    return JSON.stringify({
      type: TYPE_WELCOME,
      data: { wsId: this.wsId, session: this.session, since: this.positions },
    });
  }

  async _onWelcome(ws, data, resuming) {
    const previous = this.wsId;
    this.wsId = String(data.wsId || "");
    this.heartbeat = Number(data.heartbeat) || 10;
    this.session = typeof data.session === "string" ? data.session : "";
    this.connects += 1;
    const reconnected = this.connects > 1;
    const resumed = resuming && data.resumed === true && this.wsId === previous;
    const streams = data.streams && typeof data.streams === "object" ? data.streams : {};
    this.resumed = resumed;
    if (resumed) this._takePositions(streams);
    else this._positions.clear(); // a new session: its streams start afresh
    if (!resumed) this._renewPresence();
    this._takeRooms(data, resumed);
    this._flushAsks();
    this._startHeartbeat(ws);
    if (reconnected && !resumed) this._redoPending = true;
    if (this._redoPending) {
      try {
        await this._redo();
      } catch (error) {
        this._emit("error", { error });
        if (this._ws === ws) this._dropped(ws, CLOSE_REJOIN_FAILED, "could not rejoin rooms");
        return;
      }
      if (this._ws !== ws) return;
    }
    this._endRenewal();
    this._attempt = 0;
    this._setState(State.OPEN);
    this._emit("open", { wsId: this.wsId, heartbeat: this.heartbeat, reconnected, resumed });
    if (reconnected) {
      this.recovered = resumed && data.recovered === true;
      let reason = null;
      if (!resumed) {
        reason = resuming
          ? String(data.reason || "the server did not resume the session")
          : "the server keeps no sessions";
      }
      this._emit("recovery", {
        resumed,
        recovered: this.recovered,
        streams,
        wsId: this.wsId,
        reason,
        previousWsId: previous,
      });
    }
    this._resolveFirst?.(this.wsId);
    this._resolveFirst = this._rejectFirst = null;
  }

  /** A type-0 frame after the welcome with "recovered": false: a gap the server could not fill. */
  _gap(data) {
    const streams = data.streams && typeof data.streams === "object" ? data.streams : {};
    this._takePositions(streams);
    this.recovered = false;
    this._emit("recovery", {
      resumed: this.resumed,
      recovered: false,
      streams,
      wsId: this.wsId,
      reason: null,
      gap: true,
    });
  }

  /** Streams the server could not recover: a later resume starts from the server's
   *  position now. What it still had of them comes next, and is delivered: only a push
   *  at or below the last one delivered (same epoch) counts as a duplicate. */
  _takePositions(streams) {
    for (const [name, info] of Object.entries(streams)) {
      if (!info || info.recovered !== false) continue;
      this._streamLost(name);
      if (typeof info.epoch !== "string" || !Number.isInteger(info.seq)) continue;
      const known = this._positions.get(name);
      const same = known && known.epoch === info.epoch;
      this._positions.set(name, {
        epoch: info.epoch,
        seq: same ? Math.max(known.seq, info.seq) : info.seq,
        got: same ? known.got : 0,
      });
    }
  }

  /** A push frame: emitted unless its stream already had it. */
  _push(message) {
    const room = typeof message.room === "string" ? message.room : null;
    const user = typeof message.user === "string" ? message.user : null;
    const stream = room !== null ? `room:${room}` : user !== null ? `user:${user}` : "all";
    const seq = Number.isInteger(message.seq) ? message.seq : null;
    const epoch = typeof message.epoch === "string" ? message.epoch : null;
    if (!this._fresh(stream, seq, epoch)) return;
    this._emit("message", {
      type: message.type,
      data: message.data,
      room,
      user,
      stream,
      seq,
      epoch,
      from: senderOf(message.from),
      time: new Date(),
    });
  }

  /** Track the stream's position (pushes and presence events alike); false for what was
   *  delivered already. */
  _fresh(stream, seq, epoch) {
    if (seq === null || epoch === null) return true;
    const known = this._positions.get(stream);
    const same = known && known.epoch === epoch;
    if (same && seq <= known.got) return false;
    this._positions.set(stream, { epoch, seq: same ? Math.max(known.seq, seq) : seq, got: seq });
    return true;
  }

  _startHeartbeat(ws) {
    const option = this.options.heartbeat;
    const seconds = option === true ? this.heartbeat : Number(option);
    if (!option || !(seconds > 0)) return;
    const beat = () => {
      if (this._ws !== ws) return;
      // Nothing for three intervals, not even a PONG: the path is dead, do not wait for TCP.
      if (Date.now() - this._lastReceived > 3 * seconds * 1000) {
        this._dropped(ws, CLOSE_HEARTBEAT, "heartbeat: no answer from the server");
        return;
      }
      if (ws.readyState === WebSocket.OPEN) this._send(ws, PING, true);
      this._after(seconds * 1000, beat);
    };
    this._after(seconds * 1000, beat);
  }

  _ponged() {
    this._pongs += 1;
    const waiting = this._caughtUp;
    this._caughtUp = waiting.filter(({ n }) => n > this._pongs);
    for (const { n, resolve } of waiting) if (n <= this._pongs) resolve();
  }

  _dropped(ws, code, reason) {
    const welcomed = this._welcomed;
    this._detach();
    this._clearTimers();
    this._endWaits();
    if (ws && (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN)) {
      ws.close(code >= 4000 ? code : 1000);
    }
    this.closeCode = code;
    this._emit("close", { code, reason });
    if (!this.options.reconnect || isFinalClose(code)) {
      // 4001: another connection has this session now; coming back would take it away.
      // 4400-4499: the server wants this client gone (e.g. its session was ended).
      this._setState(State.CLOSED);
      this._rejectFirst?.(new Error(`cannot connect to ${this.url} (code ${code})`));
      this._resolveFirst = this._rejectFirst = null;
      return;
    }
    if (this.state !== State.CONNECTING) this._setState(State.RECONNECTING);
    // A gateway that failed us before its welcome, or that is draining: try the next one.
    if (!welcomed || code === CLOSE_SERVICE_RESTART) {
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    }
    let delay;
    if (code === CLOSE_SERVICE_RESTART && welcomed) {
      delay = 0; // a gateway restarting asks for a resume at once
    } else {
      const { backoffInitial, backoffMax } = this.options;
      delay = Math.random() * Math.min(backoffMax, backoffInitial * 2 ** this._attempt);
      this._attempt = Math.min(this._attempt + 1, 30);
    }
    this._after(delay, () => this._open());
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    return ws;
  }

  _setState(state) {
    this.state = state;
    this._emit("state", { state, wsId: this.wsId });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _after(ms, fn) {
    const id = setTimeout(() => {
      this._timers.delete(id);
      fn();
    }, ms);
    this._timers.add(id);
    return id;
  }

  _clearTimer(id) {
    clearTimeout(id);
    this._timers.delete(id);
  }

  _clearTimers() {
    for (const id of this._timers) clearTimeout(id);
    this._timers.clear();
  }
}

/** `url` with `param` added to its query (after any query it has, such as ?token=). */
function withQuery(url, param) {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  return base + (base.includes("?") ? "&" : "?") + param;
}

/** How a subscription was made, from its operation: to make it again in a new session. */
function ownOf({ grant, token, info = null }) {
  if (grant !== null) return { via: "grant", token: null, info };
  if (token !== null) return { via: "token", token };
  return { via: "subscribe", token: null };
}

/** A room's namespace: what comes before its first ":" ("" for the default). */
function namespaceOf(room) {
  const colon = room.indexOf(":");
  return colon < 0 ? "" : room.slice(0, colon);
}

function newView(buffer) {
  return { members: new Map(), known: false, position: null, buffer, ask: null };
}

/** A push's "from": {wsId, user} (user null: no token's sub); null when it names no wsId. */
function senderOf(value) {
  if (!value || typeof value !== "object" || typeof value.wsId !== "string") return null;
  return { wsId: value.wsId, user: typeof value.user === "string" ? value.user : null };
}

/** [epoch, seq], or null when it is not that. */
function positionOf(value) {
  if (!Array.isArray(value) || value.length !== 2) return null;
  const [epoch, seq] = value;
  return typeof epoch === "string" && Number.isInteger(seq) ? [epoch, seq] : null;
}

/** A member as a reply or an event tells it: {user, info, wsId} (wsId: an anonymous one's);
 *  null when it names nobody. */
function memberOf(value) {
  if (!value || typeof value !== "object") return null;
  const user = value.user ?? null;
  if (user !== null && typeof user !== "string") return null;
  if (user === null && typeof value.wsId !== "string") return null;
  const info = value.info && typeof value.info === "object" && !Array.isArray(value.info) ? value.info : null;
  return { user, info, wsId: user === null ? value.wsId : null };
}

/** A reply's "presence": {members, position}; null when it has none. */
function rosterOf(value) {
  if (!value || typeof value !== "object") return null;
  const members = Array.isArray(value.members) ? value.members.map(memberOf).filter(Boolean) : [];
  return { members, position: positionOf(value.position) };
}

function keyOf(member) {
  return member.user ?? member.wsId;
}

function sameMember(a, b) {
  if (!a || a.user !== b.user || a.wsId !== b.wsId) return false;
  return JSON.stringify(a.info) === JSON.stringify(b.info);
}
