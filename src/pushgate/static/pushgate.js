// pushgate.js: the browser client of pushgate. An ES module with no dependencies.
//
//   import { PushgateClient, PushAPI } from "/static/pushgate.js";
//
//   const api = new PushAPI("http://127.0.0.1:9999", { apiKey });   // apiKey optional
//   const client = new PushgateClient("ws://127.0.0.1:8888/connect", { api });
//   // a gateway that checks connection tokens: new PushgateClient(url, { api, token: jwt })
//   client.addEventListener("message", (e) => console.log(e.detail.type, e.detail.room, e.detail.data));
//   await client.connect();        // resolves with the wsId once the welcome has arrived
//   await client.join("news");     // rejoined by itself after every reconnect
//
// What a caller must know:
// - The client sends {"type":1,"data":"PING"} every `heartbeat` seconds (the server's
//   interval unless a number is given) and swallows the PONGs; "message" events carry
//   pushes only: detail {type, data, room (null for a push to all), time (a Date)}.
// - When the connection drops, or nothing (not even a PONG) arrives for three heartbeat
//   intervals, it reconnects after a random delay of up to backoffInitial ms, doubling up
//   to backoffMax ms. A reconnect is a NEW connection with a NEW wsId; rooms joined with
//   client.join() are joined again before the state becomes "open"; pushes sent while it
//   was away are lost.
// - Events (an EventTarget; each detail is a plain object):
//     "state"    {state, wsId}   state is one of State: connecting, open, reconnecting, closed
//     "open"     {wsId, heartbeat, reconnected}
//     "message"  {type, data, room, time}
//     "rooms"    {rooms}         the rooms joined through join() and leave(), after each change
//     "close"    {code, reason}  a connection ended (reconnecting follows unless closed)
//     "error"    {error}         a rejoin or a frame it could not read; it carries on
// - PushAPI methods resolve with the server's JSON answer and reject with PushAPIError
//   ({status, message, field}; status 0 when the server could not be reached).

export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

const TYPE_WELCOME = 0;
const TYPE_HEARTBEAT = 1;
const PING = '{"type":1,"data":"PING"}';

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

  pushAll(val, tag) {
    return this.request("POST", "/push/all", { val, tag });
  }

  pushRoom(room, val, tag) {
    return this.request("POST", "/push/room", { id: room, val, tag });
  }

  pushUser(user, val, tag) {
    return this.request("POST", "/push/user", { uid: user, val, tag });
  }

  join(room, wsId) {
    return this.request("POST", "/room/join", { id: room, wsId });
  }

  leave(room, wsId) {
    return this.request("POST", "/room/leave", { id: room, wsId });
  }

  stats() {
    return this.request("GET", "/stats");
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

/** One logical connection to a gateway, reopened with a new wsId when it drops. */
export class PushgateClient extends EventTarget {
  constructor(
    url,
    {
      heartbeat = true,
      reconnect = true,
      api = null,
      token = null,
      backoffInitial = 500,
      backoffMax = 30000,
      openTimeout = 10000,
    } = {},
  ) {
    super();
    this.url = url;
    this.api = api;
    // A JWT (or a function returning one, or a promise of one), sent as the WebSocket
    // subprotocols ["pushgate", token]: browsers cannot set headers on a WebSocket.
    this.token = token;
    this.options = { heartbeat, reconnect, backoffInitial, backoffMax, openTimeout };
    this.state = State.CLOSED;
    this.wsId = "";
    this.heartbeat = 0;
    this.connects = 0;
    this.closeCode = null;
    this._rooms = new Set();
    this._ws = null;
    this._timers = new Set();
    this._attempt = 0;
    this._lastReceived = 0;
    this._firstOpen = null;
    this._epoch = 0; // bumped by close(): an _open() awaiting a token from before then gives up
  }

  /** The rooms joined through join(), in the order joined. */
  get rooms() {
    return [...this._rooms];
  }

  /** Listen for `type`; returns a function that stops listening. */
  on(type, listener) {
    const handler = (event) => listener(event.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Start connecting (retrying until it can); resolves with the first wsId. */
  connect() {
    if (this.state !== State.CLOSED) return this._firstOpen ?? Promise.resolve(this.wsId);
    this._firstOpen = new Promise((resolve, reject) => {
      this._resolveFirst = resolve;
      this._rejectFirst = reject;
    });
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
    if (this.state !== State.CLOSED) {
      this._setState(State.CLOSED);
      this._rejectFirst?.(new Error("closed before the first connection opened"));
    }
  }

  /** Join `room` through the api, now and after every reconnect. */
  async join(room) {
    const answer = await this._needApi().join(room, this.wsId);
    this._rooms.add(room);
    this._emit("rooms", { rooms: this.rooms });
    return answer;
  }

  /** Leave `room` and stop rejoining it. */
  async leave(room) {
    this._rooms.delete(room);
    this._emit("rooms", { rooms: this.rooms });
    return this._needApi().leave(room, this.wsId);
  }

  // Internals

  _needApi() {
    if (!this.api) throw new Error("join and leave need new PushgateClient(url, { api })");
    return this.api;
  }

  async _open() {
    const epoch = this._epoch;
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (error) {
      if (epoch !== this._epoch) return;
      this._emit("error", { error });
      this._dropped(null, 4003, "no connection token");
      return;
    }
    if (epoch !== this._epoch) return; // closed while the token was coming
    let ws;
    try {
      ws = new WebSocket(this.url, token ? ["pushgate", String(token)] : []);
    } catch (error) {
      // A malformed URL: retrying cannot help.
      this.close();
      this._emit("error", { error });
      return;
    }
    this._ws = ws;
    let welcomed = false;
    const welcomeTimer = this._after(this.options.openTimeout, () => {
      if (!welcomed && this._ws === ws) this._dropped(ws, 4000, "no welcome in time");
    });
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
      if (message.type === TYPE_WELCOME) {
        if (welcomed) return;
        welcomed = true;
        this._clearTimer(welcomeTimer);
        this._welcomed(ws, message.data || {});
      } else if (message.type > TYPE_HEARTBEAT) {
        this._emit("message", {
          type: message.type,
          data: message.data,
          room: typeof message.room === "string" ? message.room : null,
          time: new Date(),
        });
      }
    };
    ws.onclose = (event) => {
      if (this._ws === ws) this._dropped(ws, event.code, event.reason);
    };
  }

  async _welcomed(ws, data) {
    this.wsId = String(data.wsId || "");
    this.heartbeat = Number(data.heartbeat) || 10;
    this.connects += 1;
    const reconnected = this.connects > 1;
    this._startHeartbeat(ws);
    if (reconnected && this._rooms.size) {
      try {
        for (const room of this._rooms) await this._needApi().join(room, this.wsId);
      } catch (error) {
        this._emit("error", { error });
        if (this._ws === ws) this._dropped(ws, 4001, "could not rejoin rooms");
        return;
      }
      if (this._ws !== ws) return;
    }
    this._attempt = 0;
    this._setState(State.OPEN);
    this._emit("open", { wsId: this.wsId, heartbeat: this.heartbeat, reconnected });
    this._resolveFirst?.(this.wsId);
    this._resolveFirst = this._rejectFirst = null;
  }

  _startHeartbeat(ws) {
    const option = this.options.heartbeat;
    const seconds = option === true ? this.heartbeat : Number(option);
    if (!option || !(seconds > 0)) return;
    const beat = () => {
      if (this._ws !== ws) return;
      // Nothing for three intervals, not even a PONG: the path is dead, do not wait for TCP.
      if (Date.now() - this._lastReceived > 3 * seconds * 1000) {
        this._dropped(ws, 4002, "heartbeat: no answer from the server");
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(PING);
      this._after(seconds * 1000, beat);
    };
    this._after(seconds * 1000, beat);
  }

  _dropped(ws, code, reason) {
    this._detach();
    this._clearTimers();
    if (ws && (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN)) {
      ws.close(code >= 4000 ? code : 1000);
    }
    this.closeCode = code;
    this._emit("close", { code, reason });
    if (!this.options.reconnect) {
      this._setState(State.CLOSED);
      this._rejectFirst?.(new Error(`cannot connect to ${this.url} (code ${code})`));
      return;
    }
    if (this.state !== State.CONNECTING) this._setState(State.RECONNECTING);
    const { backoffInitial, backoffMax } = this.options;
    const delay = Math.random() * Math.min(backoffMax, backoffInitial * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    this._after(delay, () => this._open());
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onmessage = ws.onclose = null;
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
