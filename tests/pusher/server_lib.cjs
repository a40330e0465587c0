// The `pusher` server library for Node (the real one) making one call to pushgate's
// logic API, as a Pusher app's back end makes it; a Python test runs it.
//
//   node server_lib.cjs API_HOST API_PORT APP_ID KEY SECRET CALL
//
// CALL is JSON: {"op": "trigger", "channels": [C], "event": E, "data": D, "params"?: P}
//               {"op": "triggerBatch", "batch": [{"channel": C, "name": E, "data": D}]}
//               {"op": "get", "path": "/channels", "params"?: P}
//               {"op": "post", "path": "/events", "body": B}  (signed, unchecked by the library)
//               {"op": "sendToUser", "user": U, "event": E, "data": D}
//               {"op": "terminateUserConnections", "user": U}
//               {"op": "webhook", "headers": H, "body": B}  (a webhook request received:
//                  the library's own check; answers {"status": 200, "body": {"valid": V,
//                  "events": [...]}})
// Output, one line: {"status": S, "body": B} (B parsed when it is JSON), for an
// answer and for a refusal alike.
"use strict";
const Pusher = require("pusher");

const [host, port, appId, key, secret, callText] = process.argv.slice(2);
const pusher = new Pusher({ appId, key, secret, host, port, useTLS: false });
const call = JSON.parse(callText);

function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function run() {
  switch (call.op) {
    case "webhook": {
      const webhook = pusher.webhook({ headers: call.headers, rawBody: call.body });
      const valid = webhook.isValid();
      const events = valid ? webhook.getEvents() : [];
      return { status: 200, text: async () => JSON.stringify({ valid, events }) };
    }
    case "trigger":
      return pusher.trigger(call.channels, call.event, call.data, call.params);
    case "triggerBatch":
      return pusher.triggerBatch(call.batch);
    case "get":
      return pusher.get({ path: call.path, params: call.params || {} });
    case "post":
      return pusher.post({ path: call.path, body: call.body });
    case "sendToUser":
      return pusher.sendToUser(call.user, call.event, call.data);
    case "terminateUserConnections":
      return pusher.terminateUserConnections(call.user);
    default:
      throw new Error(`unknown op ${call.op}`);
  }
}

Promise.resolve()
  .then(run)
  .then(
    async (response) => ({ status: response.status, body: parsed(await response.text()) }),
    (error) => {
      if (error.status === undefined) throw error;
      return { status: error.status, body: parsed(error.body) };
    }
  )
  .then((result) => process.stdout.write(JSON.stringify(result) + "\n"));
