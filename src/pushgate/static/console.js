// The pushgate console: a page to try the server without writing code.
//
// Query parameters: ?ws=ws://HOST:PORT/connect (default: the gateway this page's server
// names in <meta name="pushgate-gateway"> (`serve` names its own), else
// ws://<this page's host>:8888/connect; several gateways of one cluster separated by
// spaces or commas, tried in turn)
// and ?api=http://HOST:PORT (default: this page's own server). The API key is typed or
// pasted by the person and kept in this page's memory only, like the connection token.
//
// A link can point ?api= and ?ws= anywhere, and the key and the token typed later go
// where they point. So a URL on another host than this page's is used only once the
// person has confirmed that host in a dialog naming it (once per host, for links and
// typed URLs alike); declined, the page keeps its default. No request with the key,
// and no connection with the token, goes to a host nobody confirmed.

import { Chart, Series, quantileBetween } from "./charts.js";
import { PushAPI, PushgateClient, State, SubscribeError, isFinalClose } from "./pushgate.js";

const MAX_MESSAGES = 500;
const MAX_LOG = 50;
const STATS_EVERY_MS = 1000;
const MEMBERS_PER_PAGE = 50;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ui = {
  state: $("state"),
  wsId: $("ws-id"),
  gatewayUrl: $("gateway-url"),
  apiUrl: $("api-url"),
  apiKey: $("api-key"),
  token: $("token"),
  connectButton: $("connect"),
  roomInput: $("room-input"),
  myRooms: $("my-rooms"),
  noRooms: $("no-rooms"),
  subRoom: $("sub-room"),
  subKind: $("sub-kind"),
  subCredential: $("sub-credential"),
  subInfo: $("sub-info"),
  presence: $("presence"),
  noPresence: $("no-presence"),
  subResult: $("sub-result"),
  pubRoom: $("pub-room"),
  pubTag: $("pub-tag"),
  pubText: $("pub-text"),
  pubResult: $("pub-result"),
  pushRoom: $("push-room"),
  pushTag: $("push-tag"),
  pushVal: $("push-val"),
  pushJson: $("push-json"),
  pushResult: $("push-result"),
  messages: $("messages"),
  messageCount: $("message-count"),
  noMessages: $("no-messages"),
  roomTable: $("room-table"),
  statsNote: $("stats-note"),
  notice: $("notice"),
  log: $("log"),
  noLog: $("no-log"),
};

const DEFAULT_GATEWAY = gatewayOfPage();
const GATEWAY_USE = "open the WebSocket connection, with your connection token,";
const API_USE = "send the logic API calls, with your API key,";

let client = null;
let received = 0;
let roomsEndpoint = true; // GET /rooms, when the server has it: per-room member counts
let apiBase = ""; // the logic API in use: always on this page's host or a confirmed one

function api() {
  // The one place the key leaves the page: only ever for a confirmed host.
  const key = confirmedHosts.has(hostOf(apiBase)) ? ui.apiKey.value.trim() : "";
  return new PushAPI(apiBase, { apiKey: key || null });
}

// Hosts the key and the token may go to: this page's, and the gateway its server named
// (the server is the page's own origin: no link chose it).

const confirmedHosts = new Set([location.hostname, hostOf(DEFAULT_GATEWAY)]);

/** The gateway this page's server named ("HOST:PORT", HOST empty for this page's host), or
 *  a guess: this page's host, the default port. ws: or wss: as this page is http: or https:. */
function gatewayOfPage() {
  const named = document.querySelector('meta[name="pushgate-gateway"]')?.content ?? "";
  const colon = named.lastIndexOf(":");
  const port = colon >= 0 ? named.slice(colon + 1) : "";
  const host = (colon > 0 && named.slice(0, colon)) || location.hostname || "127.0.0.1";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${host}:${/^\d+$/.test(port) ? port : "8888"}/connect`;
}

/** The host of `url` (relative to this page), or null when it names none. */
function hostOf(url) {
  try {
    return new URL(url, location.href).hostname || null;
  } catch {
    return null;
  }
}

function splitUrls(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/** Whether every URL may be used: on this page's host, or on a host the person
 *  confirms in a dialog naming it (asked once per host; a "no" is asked again). */
function confirmHosts(urls, use) {
  for (const url of urls) {
    const host = hostOf(url);
    if (host === null) return false;
    if (confirmedHosts.has(host)) continue;
    const question =
      `This console would ${use} to ${host}, another host than this page's ` +
      `(${location.hostname}).\n\n${url}\n\nUse ${host}? Only if you trust it.`;
    if (!window.confirm(question)) return false;
    confirmedHosts.add(host);
  }
  return true;
}

/** The gateway and the API from the link's ?ws= and ?api=, each only once confirmed. */
function settingsFromLink() {
  ui.gatewayUrl.value = fromLink("ws", DEFAULT_GATEWAY, GATEWAY_USE);
  ui.apiUrl.value = apiBase = fromLink("api", "", API_USE);
}

function fromLink(name, fallback, use) {
  const given = (params.get(name) || "").trim();
  if (!given) return fallback;
  if (confirmHosts(splitUrls(given), use)) return given;
  report("refused", `not using ?${name}=${given}: its host was not confirmed`);
  return fallback;
}

// Connection

function connect() {
  disconnect();
  clearNotice(); // what the last connection said is not about this one
  const urls = splitUrls(ui.gatewayUrl.value);
  if (!urls.length) return notify("no gateway URL");
  if (!confirmHosts(urls, GATEWAY_USE)) {
    return notify("not connecting: the gateway's host was not confirmed");
  }
  const c = new PushgateClient(urls.length === 1 ? urls[0] : urls, {
    api: api(),
    token: ui.token.value.trim() || null,
  });
  client = c;
  c.on("state", ({ state }) => showState(state));
  c.on("open", ({ wsId, reconnected }) => {
    ui.wsId.textContent = wsId;
    if (noticeAbout === "connecting") clearNotice(); // it connects now: that was stale
    if (!reconnected) log("open", `connected as ${wsId}`);
  });
  c.on("close", ({ code, reason }) => {
    // "close" comes before the client's next state: its state is still the old one here.
    const why = `code ${code}${reason ? `: ${reason}` : ""}`;
    if (code === 4001) {
      report("stopped", `another connection resumed this session (${why}); not reconnecting`);
    } else if (isFinalClose(code)) {
      report("stopped", `the server closed this connection for good (${why}); not reconnecting`);
    } else if (c.state === State.CONNECTING) {
      explainFailure(c, c.url, code);
    } else if (c.state === State.OPEN && c.options.reconnect) {
      log("lost", `connection lost (${why}); ${c.session ? "resuming" : "reconnecting"}`);
    }
  });
  c.on("recovery", showRecovery);
  c.on("message", showMessage);
  c.on("rooms", showRoomChange);
  c.on("presence", showPresence);
  c.on("error", ({ error, room }) => {
    if (room) log("given-up", String(error.message || error));
    notify(String(error.message || error));
  });
  // A client replaced by Reconnect rejects its first connect then: that is no news.
  c.connect().catch((error) => c === client && notify(String(error.message || error)));
  window.pushgateConsole.client = c;
}

/** Why a connection failed before its welcome, as far as a page can tell: a browser
 *  shows no refused handshake's status, so ask the gateway's /healthz (no-cors: only
 *  whether anything answers). Nothing answers: the address is wrong or the gateway
 *  down, and a token would not help. It answers: it refused this handshake, for a
 *  token (missing, wrong or expired) or another reason its log gives. */
async function explainFailure(c, url, code) {
  const health = url.replace(/^ws/, "http").replace(/\/connect(\?.*)?$/, "/healthz");
  let answers = true;
  try {
    await fetch(health, { mode: "no-cors", cache: "no-store" });
  } catch {
    answers = false;
  }
  if (c !== client || c.state === State.OPEN) return; // moved on meanwhile
  let why;
  if (!answers) {
    why = "nothing answers there: is the gateway running, on that host and port?";
  } else if (ui.token.value.trim()) {
    why = "the gateway refused it: is the connection token right and unexpired?";
  } else {
    why = "the gateway refused it: does it need a connection token? (its log says why)";
  }
  notify(`cannot connect to ${url} (code ${code}); retrying. ${why}`, "error", "connecting");
}

/** After a reconnect's welcome, or a gap the server could not fill: say what was kept. */
function showRecovery({ resumed, recovered, streams, wsId, reason, gap }) {
  const lost = Object.entries(streams || {})
    .filter(([, stream]) => stream && stream.recovered === false)
    .map(([name]) => name);
  const which = lost.length ? ` (streams ${lost.join(", ")})` : "";
  if (gap) {
    report("gap", `pushes lost: NOT recovered${which}`);
  } else if (!resumed) {
    const rooms = client?.rooms.length ? "; rooms rejoined" : "";
    report("new-session", `new session ${wsId} (could not resume: ${reason})${rooms}`);
  } else if (recovered) {
    report("recovered", `resumed as ${wsId}: recovered everything`, "info");
  } else {
    report("not-recovered", `resumed as ${wsId}: NOT recovered${which}`);
  }
}

function disconnect() {
  if (!client) return;
  client.close();
  client = null;
  ui.wsId.textContent = "—";
  showRooms([]);
  showPresence();
}

function showState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  ui.connectButton.textContent = state === State.CLOSED ? "Connect" : "Reconnect";
  if (state !== State.OPEN) ui.wsId.textContent = state === State.CLOSED ? "—" : "…";
}

$("settings").addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});

// Keep the client's API settings in step with the fields; a typed API URL on another
// host is used once confirmed, like a link's.
ui.apiUrl.addEventListener("change", () => {
  const wanted = ui.apiUrl.value.trim();
  if (confirmHosts(splitUrls(wanted), API_USE)) {
    apiBase = wanted;
  } else {
    ui.apiUrl.value = apiBase;
    notify(`not using ${wanted}: its host was not confirmed`);
  }
  if (client) client.api = api();
});
ui.apiKey.addEventListener("change", () => {
  if (client) client.api = api();
});

// Rooms

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const room = ui.roomInput.value.trim();
  if (!client || client.state !== State.OPEN) return notify("not connected");
  try {
    await client.join(room);
    ui.roomInput.value = "";
    if (!ui.pushRoom.value) ui.pushRoom.value = room;
  } catch (error) {
    notify(`join ${room}: ${error.message}`);
  }
});

/** A change of the client's rooms: the list is redrawn, and what the page did not ask
 *  for itself (the back end's moves, an expiry, a new session) is logged. */
function showRoomChange({ rooms, room, joined, reason }) {
  showRooms(rooms);
  showPresence();
  if (reason === "expired") {
    report("expired", `left ${room}: its subscription token expired`);
  } else if (reason === "server" || reason === "welcome") {
    const by = reason === "server" ? "through the logic API" : "as the welcome said";
    log("rooms", `${joined ? "joined" : "left"} ${room} (${by})`);
  }
}

/** The rooms as chips: those this page subscribed itself are unsubscribed with their
 *  button, the others left through the logic API. */
function showRooms(rooms) {
  const subscribed = new Set(client?.subscriptions ?? []);
  const joined = new Set(client?.ownRooms ?? []);
  ui.myRooms.replaceChildren(
    ...rooms.map((room) => {
      const item = document.createElement("li");
      item.dataset.room = room;
      const own = subscribed.has(room);
      item.dataset.how = own ? "subscribed" : joined.has(room) ? "joined" : "server";
      const name = document.createElement("span");
      name.textContent = room;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = own ? "unsubscribe" : "leave";
      button.title = own ? `unsubscribe from ${room}` : `leave ${room} (logic API)`;
      button.addEventListener("click", async () => {
        try {
          await (own ? client?.unsubscribe(room) : client?.leave(room));
        } catch (error) {
          notify(`${button.textContent} ${room}: ${error.message}`);
        }
      });
      item.append(name, button);
      return item;
    }),
  );
  ui.noRooms.hidden = rooms.length > 0;
}

// Subscribe: the page's connection puts itself in a room (docs/protocol.md, "Subscribing")

/** The grant or token typed for the operation, as subscribe() takes it (with a grant, the
 *  info it signs, sent as it was typed). */
function shown() {
  const kind = ui.subKind.value;
  const value = ui.subCredential.value.trim();
  const info = ui.subInfo.value.trim();
  if (!kind || !value) return {};
  return kind === "grant" && info ? { grant: value, info } : { [kind]: value };
}

/** Run an operation on `room` and show its answer in `result` (a status line), or its
 *  refusal's code and reason. */
async function operate(what, room, result, call) {
  if (!room) return showResult(result, "a room id, please", true);
  if (!client || client.state !== State.OPEN) return showResult(result, "not connected", true);
  try {
    showResult(result, await call(client, room), false);
  } catch (error) {
    if (!(error instanceof SubscribeError)) {
      return showResult(result, `${what} ${room}: ${error.message}`, true);
    }
    const said = error.code ? `${error.code} ${error.reason}` : `no reply (${error.reason})`;
    showResult(result, `${what} ${room} refused: ${said}`, true, error.code);
  }
}

/** An operation of the subscribe box, on the room typed there. */
function subscription(what, call) {
  return operate(what, ui.subRoom.value.trim(), ui.subResult, call);
}

function subscribed(verb, { room, position, expires }) {
  const at = position ? ` at #${position[1]} of epoch ${position[0]}` : "";
  const until = expires ? `, until ${new Date(expires * 1000).toTimeString().slice(0, 8)}` : "";
  return `${verb} ${room}${at}${until}`;
}

$("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  subscription("subscribe", async (c, room) => subscribed("subscribed to", await c.subscribe(room, shown())));
});
$("unsubscribe").addEventListener("click", () =>
  subscription("unsubscribe", async (c, room) => {
    await c.unsubscribe(room);
    return `unsubscribed from ${room}`;
  }),
);
$("refresh-subscription").addEventListener("click", () => {
  const { token } = shown();
  if (!token) return showResult(ui.subResult, 'a refresh needs a token: choose "a token" and paste it', true);
  subscription("refresh", async (c, room) => subscribed("renewed", await c.refresh(room, token)));
});

// Publish: the page's connection talks to a room it is in (docs/protocol.md, "Publishing")

$("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const tag = Number(ui.pubTag.value);
  operate("publish", ui.pubRoom.value.trim(), ui.pubResult, async (c, room) => {
    await c.publish(room, ui.pubText.value, { tag });
    return `published to ${room}`;
  });
});

function showResult(result, text, isError, code = null) {
  result.textContent = text;
  result.classList.toggle("error", isError);
  if (code === null) delete result.dataset.code;
  else result.dataset.code = String(code);
}

// Presence: who is in each room that keeps it (client.presence), redrawn on each change

function showPresence() {
  const rooms = client ? client.rooms.filter((room) => client.presence(room) !== null) : [];
  ui.presence.replaceChildren(
    ...rooms.map((room) => {
      const members = [...client.presence(room).values()];
      const section = document.createElement("section");
      section.className = "presence-room";
      section.dataset.room = room;
      const title = document.createElement("h3");
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(members.length);
      title.append(`${room} `, count);
      const list = document.createElement("ul");
      list.append(
        ...members.map(({ user, info, wsId }) => {
          const item = document.createElement("li");
          item.dataset.user = user ?? wsId;
          item.textContent = user ?? `anonymous ${wsId.slice(0, 8)}`;
          if (wsId !== null && wsId === client.wsId) item.className = "me";
          if (info) item.append(cell("info", JSON.stringify(info)));
          return item;
        }),
      );
      section.append(title, list);
      return section;
    }),
  );
  ui.noPresence.hidden = rooms.length > 0;
}

// Push

for (const radio of document.querySelectorAll('input[name="target"]')) {
  radio.addEventListener("change", () => {
    ui.pushRoom.disabled = pushTarget() !== "room";
    if (!ui.pushRoom.disabled) ui.pushRoom.focus();
  });
}

function pushTarget() {
  return document.querySelector('input[name="target"]:checked').value;
}

$("push-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  let val = ui.pushVal.value;
  if (ui.pushJson.checked) {
    try {
      val = JSON.parse(val);
    } catch (error) {
      return showPushResult(`the value is not JSON: ${error.message}`, true);
    }
  }
  const tag = Number(ui.pushTag.value);
  const room = ui.pushRoom.value.trim();
  try {
    const answer =
      pushTarget() === "room" ? await api().pushRoom(room, val, tag) : await api().pushAll(val, tag);
    const where = answer.room !== undefined ? ` in room ${answer.room}` : "";
    const n = answer.delivered;
    showPushResult(`delivered to ${n} connection${n === 1 ? "" : "s"}${where}`, false);
  } catch (error) {
    showPushResult(error.message, true);
  }
});

function showPushResult(text, isError) {
  ui.pushResult.textContent = text;
  ui.pushResult.classList.toggle("error", isError);
}

// Messages

function showMessage({ type, data, room, stream, seq, epoch, from, time }) {
  received += 1;
  ui.messageCount.textContent = String(received);
  ui.noMessages.hidden = true;
  const item = document.createElement("li");
  item.className = "message fresh";
  item.dataset.type = String(type);
  item.dataset.room = room ?? "";
  item.dataset.stream = stream;
  if (seq !== null) {
    item.dataset.seq = String(seq);
    item.title = `${stream} #${seq}, epoch ${epoch}`;
  }
  // A member's message names who sent it (its user, or an anonymous one's wsId) before its data.
  const body = document.createElement("span");
  body.className = "body";
  if (from) {
    item.dataset.from = from.wsId;
    const sender = cell("from", from.user ?? `anonymous ${from.wsId.slice(0, 8)}`);
    sender.title = `from ${from.wsId}`;
    body.append(sender, " ");
  }
  body.append(cell("data", typeof data === "string" ? data : JSON.stringify(data)));
  item.append(
    cell("time", time.toTimeString().slice(0, 8) + "." + String(time.getMilliseconds()).padStart(3, "0")),
    cell("type", `type ${type}`),
    cell(room === null ? "room all" : "room", room === null ? "all" : room),
    body,
  );
  ui.messages.prepend(item);
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.lastElementChild.remove();
}

function cell(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

$("clear").addEventListener("click", () => {
  ui.messages.replaceChildren();
  received = 0;
  ui.messageCount.textContent = "0";
  ui.noMessages.hidden = false;
});

// Server

async function refreshStats() {
  if (document.hidden) return;
  const server = api();
  try {
    const stats = await server.stats();
    $("stat-connections").textContent = String(stats.connections);
    $("stat-rooms").textContent = String(stats.rooms);
    $("stat-users").textContent = stats.users === undefined ? "—" : String(stats.users);
    $("stat-nodes").textContent = Array.isArray(stats.nodes) ? String(stats.nodes.length) : "—";
    chartStats(stats);
    $("stat-version").textContent = stats.version ?? "—";
    $("stat-uptime").textContent = formatUptime(stats.uptimeSeconds);
    ui.statsNote.textContent = "";
    ui.statsNote.classList.remove("error");
  } catch (error) {
    ui.statsNote.textContent = `stats: ${error.message}`;
    ui.statsNote.classList.add("error");
    return;
  }
  if (roomsEndpoint) await refreshRoomTable(server);
}

async function refreshRoomTable(server) {
  try {
    const answer = await server.request("GET", "/rooms");
    const rows = Array.isArray(answer.rooms) ? answer.rooms : [];
    ui.roomTable.tBodies[0].replaceChildren(
      ...rows.map(({ id, members }) => {
        const row = document.createElement("tr");
        const name = document.createElement("td");
        const open = document.createElement("button");
        open.type = "button";
        open.className = "link";
        open.textContent = id;
        open.title = "list its members";
        open.addEventListener("click", () => showMembers(id));
        name.append(open);
        const count = document.createElement("td");
        count.textContent = String(members);
        row.append(name, count);
        return row;
      }),
    );
    ui.roomTable.hidden = rows.length === 0;
  } catch (error) {
    if (error.status === 404) {
      roomsEndpoint = false; // this server has no per-room counts: show the totals only
      ui.roomTable.hidden = true;
    }
  }
}

// Live charts: connections, deliveries per second, and delivery latency p50/p99,
// from successive GET /stats answers (counters and histograms over every gateway).

const live = {
  connections: new Series("connections", "#3b6fd8"),
  deliveries: new Series("deliveries/s", "#2e9d5b"),
  p50: new Series("p50", "#d08a1c"),
  p99: new Series("p99", "#c43d3d"),
  previous: null,
};
const charts = [
  new Chart($("chart-connections"), $("legend-connections"), [live.connections]),
  new Chart($("chart-deliveries"), $("legend-deliveries"), [live.deliveries]),
  new Chart($("chart-latency"), $("legend-latency"), [live.p50, live.p99], {
    unit: "ms",
    digits: 1,
  }),
];

function chartStats(stats) {
  const now = Date.now();
  live.connections.add(now, stats.connections);
  const previous = live.previous;
  if (previous && typeof stats.deliveries === "number") {
    const seconds = (now - previous.time) / 1000;
    const delivered = stats.deliveries - previous.deliveries;
    if (seconds > 0 && delivered >= 0) {
      live.deliveries.add(now, delivered / seconds);
      const before = previous.latency;
      const after = stats.deliveryLatency;
      if (delivered > 0) {
        live.p50.add(now, 1000 * quantileBetween(before, after, 0.5));
        live.p99.add(now, 1000 * quantileBetween(before, after, 0.99));
      }
    }
  }
  live.previous = { time: now, deliveries: stats.deliveries, latency: stats.deliveryLatency };
  for (const chart of charts) chart.draw(now);
}

// A room's members, a page at a time (GET /rooms/{id}?limit=&cursor=)

const members = { room: null, cursor: null, page: 0 };

async function showMembers(room, cursor = null) {
  members.room = room;
  members.page = cursor ? members.page + 1 : 1;
  $("members-panel").hidden = false;
  $("members-room").textContent = room;
  const note = $("members-note");
  try {
    const answer = await api().roomMembers(room, { limit: MEMBERS_PER_PAGE, cursor });
    $("members-count").textContent = String(answer.count);
    $("members-table").tBodies[0].replaceChildren(
      ...answer.members.map(({ wsId, user, node, connectedSince }) => {
        const row = document.createElement("tr");
        const since = connectedSince ? new Date(connectedSince).toLocaleTimeString() : "—";
        for (const text of [wsId, user ?? "—", node, since]) {
          const td = document.createElement("td");
          td.textContent = text;
          row.append(td);
        }
        if (wsId === client?.wsId) row.className = "me";
        return row;
      }),
    );
    members.cursor = answer.nextCursor;
    $("members-next").disabled = !answer.nextCursor;
    $("members-first").disabled = members.page === 1;
    const first = (members.page - 1) * MEMBERS_PER_PAGE + 1;
    note.textContent = answer.members.length
      ? `page ${members.page}: ${first}-${first + answer.members.length - 1} of ${answer.count}`
      : "nobody in this room now";
    note.classList.remove("error");
  } catch (error) {
    note.textContent = `members: ${error.message}`;
    note.classList.add("error");
  }
}

$("members-next").addEventListener("click", () => showMembers(members.room, members.cursor));
$("members-first").addEventListener("click", () => showMembers(members.room));
$("members-close").addEventListener("click", () => ($("members-panel").hidden = true));

function formatUptime(seconds) {
  if (typeof seconds !== "number") return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// Connection log and notices

function log(kind, text) {
  const time = new Date();
  const item = document.createElement("li");
  item.dataset.kind = kind;
  item.append(cell("time", time.toTimeString().slice(0, 8)), cell("text", text));
  ui.log.prepend(item);
  while (ui.log.childElementCount > MAX_LOG) ui.log.lastElementChild.remove();
  ui.noLog.hidden = true;
}

/** Log it and show it as a notice (an error notice unless kind is "info"). */
function report(logKind, text, noticeKind = "error") {
  log(logKind, text);
  notify(text, noticeKind);
}

let noticeTimer = 0;
let noticeAbout = null; // "connecting": the notice says why a connection fails

function notify(text, kind = "error", about = null) {
  ui.notice.textContent = text;
  ui.notice.className = kind === "info" ? "info" : "";
  ui.notice.hidden = false;
  noticeAbout = about;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(clearNotice, 6000);
}

function clearNotice() {
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
  noticeAbout = null;
}

// Start

window.pushgateConsole = { client: null, refreshStats };
settingsFromLink();
connect();
refreshStats();
setInterval(refreshStats, STATS_EVERY_MS);
