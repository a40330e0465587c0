"""The title line of a ``pushgate bench`` run's table (:func:`run_title`): the
scenario, its connections and workers, its load, and whose server.
"""

from pushgate.bench.clientkinds import PUSHGATE
from pushgate.bench.options import BenchOptions

API_TITLES = {
    "batch": "copies in batches (POST /push/batch)",
    "room": "copies one POST /push/room each",
}


def run_title(opts: BenchOptions) -> str:
    pace = f"{opts.rate:g} pushes/s" if opts.rate else "back to back"
    if not opts.scenario.pushes:
        load = f"{opts.push_duration:g} s idle"
    elif opts.push_count is not None:
        load = f"{opts.push_count:,} pushes {pace}, val {opts.size} B"
    else:
        load = f"{opts.push_duration:g} s of pushes {pace}, val {opts.size} B"
    where = "external server" if opts.external else "own server"
    if opts.scenario.name == "abuse":
        return _abuse_title(opts, where)
    if opts.scenario.name == "chat":
        return _chat_title(opts, where)
    if opts.scenario.drops:
        return _drop_title(opts, pace, where)
    clients = "" if opts.client == PUSHGATE else f" {opts.client}"
    churn = ""
    if opts.scenario.name == "churn":
        churn = (
            f", {opts.churn_rate:g} connects/s living {opts.churn_lifetime:g} s "
            f"from {opts.churn_worker_count} workers of their own"
        )
    return (
        f"pushgate bench {opts.scenario.name}: {opts.connections:,}{clients} connections "
        f"over {opts.worker_count} workers{churn}, {load}, {where}"
    )


def _drop_title(opts: BenchOptions, pace: str, where: str) -> str:
    """resume and reconnect: how the clients come back, and after how many pushes."""
    before = (
        f"{opts.push_count:,} pushes"
        if opts.push_count is not None
        else f"{opts.push_duration:g} s of pushes"
    )
    on = " on the next gateway" if opts.resume_on == "other" else ""
    verb = "resume"
    if opts.scenario.name == "reconnect":
        verb = "reconnect afresh " + ("into the room" if opts.token_secret else "in no room")
    return (
        f"pushgate bench {opts.scenario.name}: {opts.connections:,} connections over "
        f"{opts.worker_count} workers drop and {verb}{on} after {before} ({pace}, "
        f"val {opts.size} B), {where}"
    )


def _chat_title(opts: BenchOptions, where: str) -> str:
    subscribes = f"{opts.subscribe_rate:g}/s" if opts.subscribe_rate else "all at once"
    resume = f"{opts.chat_resume_rate:g}/s per client" if opts.chat_resume_rate else "none"
    return (
        f"pushgate bench chat: {opts.connections:,} connections over {opts.worker_count} "
        f"workers in rooms of {opts.room_size}; subscribes {subscribes}; each client "
        f"publishes {opts.rate:g}/s for {opts.push_duration:g} s, data {opts.size} B; "
        f"the API's {API_TITLES[opts.api_push]}; API pushes while resuming: {resume}; "
        f"{where}"
    )


def _abuse_title(opts: BenchOptions, where: str) -> str:
    names = {
        "ping": "a ping flood",
        "fragments": "an endless message",
        "nonreaders": f"{opts.non_readers:,} non-readers",
        "handshakes": f"{opts.fat_handshakes:,} fat handshakes",
    }
    attacks = ", ".join(names[a] for a in opts.attacks)
    return (
        f"pushgate bench abuse: {opts.connections:,} honest connections over "
        f"{opts.worker_count} workers, {opts.rate:g} pushes/s of val {opts.size} B; "
        f"{opts.push_duration:g} s quiet, then {opts.push_duration:g} s under {attacks}; {where}"
    )
