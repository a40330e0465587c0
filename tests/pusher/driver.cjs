// A pusher-js client (the real one, in Node) that a Python test drives: commands in on
// stdin, one JSON object per line; what the client sees out on stdout, one JSON
// object per line. Channel authorization is made by the real `pusher` server library
// (authorizeChannel), as a Pusher app's back end makes it.
//
//   node driver.cjs WS_HOST WS_PORT APP_ID KEY SECRET
//
// Commands: {"op": "subscribe", "channel": C, "user_id"?: U, "user_info"?: I, "bad_auth"?: true}
//           {"op": "unsubscribe", "channel": C}
//           {"op": "trigger", "channel": C, "event": E, "data": D}   (a client event)
//           {"op": "signin", "user": {"id": U, ...}}   (user authentication by the back end)
//           {"op": "disconnect"}
// Output:   {"kind": "state", "current": S, "socket_id": ID}
//           {"kind": "message", "event": E, "channel": C, "data": D, "user_id": U}  (every message)
//           {"kind": "channel", "channel": C, "event": E, "data": D, "user_id": U}  (what a
//             channel's bindings hear: pusher:subscription_succeeded with its members, ...)
//           {"kind": "triggered", "ok": B}
//           {"kind": "error", "error": E}  (the connection's errors: pusher:error's data)
//           {"kind": "signed_in", "user": U}; {"kind": "user", "event": E, "data": D}
//             (what the signed-in user hears: pushes to it)
"use strict";
const readline = require("node:readline");
const Pusher = require("pusher-js");
const PusherServer = require("pusher");

const [host, port, appId, key, secret] = process.argv.slice(2);
const backEnd = new PusherServer({ appId, key, secret, host, port, useTLS: false });
const users = {}; // channel -> channel_data member, set by subscribe
let signinAs = null; // the user_data of a signin

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const client = new Pusher(key, {
  wsHost: host,
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  cluster: "local",
  activityTimeout: 30000,
  pongTimeout: 10000,
  userAuthentication: {
    customHandler: ({ socketId }, callback) => {
      const auth = backEnd.authenticateUser(socketId, signinAs);
      if (signinAs.bad_auth) auth.auth = `${key}:${"0".repeat(64)}`;
      callback(null, auth);
    },
  },
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => {
      const member = users[channelName];
      if (member && member.bad_auth) {
        callback(null, { auth: `${key}:${"0".repeat(64)}` });
        return;
      }
      const presence = member && member.user_id !== undefined
        ? { user_id: member.user_id, user_info: member.user_info }
        : undefined;
      callback(null, backEnd.authorizeChannel(socketId, channelName, presence));
    },
  },
});

client.connection.bind("state_change", ({ current }) => {
  out({ kind: "state", current, socket_id: client.connection.socket_id });
});
client.connection.bind("error", (error) => {
  out({ kind: "error", error: error && error.error ? error.error.data : error && error.data ? error.data : error });
});
client.connection.bind("message", (message) => {
  out({
    kind: "message",
    event: message.event,
    channel: message.channel,
    data: message.data,
    user_id: message.user_id,
  });
});

function members(channel) {
  const seen = [];
  channel.members.each((member) => seen.push({ id: member.id, info: member.info }));
  seen.sort((a, b) => (a.id < b.id ? -1 : 1));
  return { count: channel.members.count, me: channel.members.me, members: seen };
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "subscribe") {
    users[command.channel] = command;
    const channel = client.subscribe(command.channel);
    const tell = (event) => (data, metadata) =>
      out({
        kind: "channel",
        channel: command.channel,
        event,
        data: event === "pusher:subscription_succeeded" && channel.members ? members(channel) : data,
        user_id: metadata && metadata.user_id,
      });
    for (const event of [
      "pusher:subscription_succeeded",
      "pusher:subscription_error",
      "pusher:member_added",
      "pusher:member_removed",
      "pusher:cache_miss",
    ]) {
      channel.bind(event, tell(event));
    }
    channel.bind_global((event, data) => {
      if (!event.startsWith("pusher:")) out({ kind: "channel", channel: command.channel, event, data });
    });
  } else if (command.op === "unsubscribe") {
    client.unsubscribe(command.channel);
  } else if (command.op === "trigger") {
    const ok = client.channel(command.channel).trigger(command.event, command.data);
    out({ kind: "triggered", ok });
  } else if (command.op === "signin") {
    signinAs = command.user;
    client.user.bind("pusher:signin_error", (error) => out({ kind: "user", event: "pusher:signin_error", data: error }));
    client.user.bind_global((event, data) => out({ kind: "user", event, data }));
    client.signin();
    client.user.signinDonePromise.then(() =>
      out({ kind: "signed_in", user: client.user.user_data }),
    );
  } else if (command.op === "disconnect") {
    client.disconnect();
  }
});
input.on("close", () => {
  client.disconnect();
  process.exit(0);
});
