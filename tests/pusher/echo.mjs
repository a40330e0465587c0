// Laravel Echo (the real one, with its Pusher connector over pusher-js, in Node) that
// a Python test drives, as driver.cjs drives pusher-js: commands in on stdin, what
// the app's callbacks get out on stdout, one JSON object per line. Authorization as
// a Laravel back end's /broadcasting/auth would answer, made by the `pusher` library.
//
//   node echo.mjs WS_HOST WS_PORT APP_ID KEY SECRET
//
// An ES module: laravel-echo's CommonJS build cannot be required by Node 20 (its
// package says "type": "module").
//
// Commands: {"op": "listen", "channel": C, "event": E}        echo.channel(C).listen(E)
//           {"op": "private", "channel": C, "event": E, "whisper"?: W}
//                                         echo.private(C).listen(E).listenForWhisper(W)
//           {"op": "join", "channel": C, "user_id": U, "user_info": I}
//                                         echo.join(C).here().joining().leaving()
//           {"op": "whisper", "channel": C, "event": W, "data": D}  (on a private channel)
// Output:   {"kind": "state", "current": S, "socket_id": ID}
//           {"kind": "echo", "channel": C, "callback": "listen"|"whisper"|"here"|
//             "joining"|"leaving"|"subscribed", "data": D}
import readline from "node:readline";
import Echo from "laravel-echo";
import PusherServer from "pusher";
import Pusher from "pusher-js";

const [host, port, appId, key, secret] = process.argv.slice(2);
const backEnd = new PusherServer({ appId, key, secret, host, port, useTLS: false });
let member = null;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const echo = new Echo({
  broadcaster: "pusher",
  key,
  cluster: "local",
  wsHost: host,
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  Pusher,
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => {
      const presence = channelName.startsWith("presence-") ? member : undefined;
      callback(null, backEnd.authorizeChannel(socketId, channelName, presence));
    },
  },
});
echo.connector.pusher.connection.bind("state_change", ({ current }) => {
  out({ kind: "state", current, socket_id: echo.socketId() });
});

const tell = (channel, callback) => (data) => out({ kind: "echo", channel, callback, data });

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "listen") {
    echo
      .channel(command.channel)
      .subscribed(tell(command.channel, "subscribed"))
      .listen(command.event, tell(command.channel, "listen"));
  } else if (command.op === "private") {
    const channel = echo
      .private(command.channel)
      .subscribed(tell(command.channel, "subscribed"))
      .listen(command.event, tell(command.channel, "listen"));
    if (command.whisper) channel.listenForWhisper(command.whisper, tell(command.channel, "whisper"));
  } else if (command.op === "join") {
    member = { user_id: command.user_id, user_info: command.user_info };
    echo
      .join(command.channel)
      .here(tell(command.channel, "here"))
      .joining(tell(command.channel, "joining"))
      .leaving(tell(command.channel, "leaving"));
  } else if (command.op === "whisper") {
    echo.private(command.channel).whisper(command.event, command.data);
  } else if (command.op === "leave") {
    echo.leave(command.channel);
  }
}).on("close", () => {
  echo.disconnect();
  process.exit(0);
});
