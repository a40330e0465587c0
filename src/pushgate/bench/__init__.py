"""``pushgate bench``: a load generator and meter for pushgate (or any server that
speaks the seed's protocol), loopback only.

One run, as :mod:`pushgate.bench.runner` drives it:

1. start ``pushgate serve`` in a child process on port 0 (or take the URLs and pids
   of an external server), and read its CPU and RSS from ``/proc``;
2. start client worker processes (:mod:`pushgate.bench.worker`), each holding a share
   of the WebSocket connections over several loopback source addresses;
3. put the connections in rooms over the logic API when the scenario needs it;
4. push over the logic API (:mod:`pushgate.bench.pusher`), every push carrying its
   send time and sequence number, while the workers count what arrives;
5. account deliveries, losses and latency (:mod:`pushgate.bench.report`, from the
   workers' typed replies, :mod:`pushgate.bench.replies`), show them
   (:mod:`pushgate.bench.table`), and stop every process it started, also on Ctrl-C
   or SIGTERM.

The resume scenario adds a step between 4 and 5 (:mod:`pushgate.bench.drops`, and
:mod:`pushgate.bench.reopen` in the workers): every client drops its connection at
once and resumes its session (docs/recovery.md) while the pushes go on; its clients
(:mod:`pushgate.bench.resumeclient`) count per stream, by position. The reconnect
scenario makes the same drop, and the clients connect afresh instead: the baseline
a resume storm is compared with.

The abuse scenario (issue 25, :mod:`pushgate.bench.abuse`) measures step 4 twice:
quiet, then while attacker processes (:mod:`pushgate.bench.abusers`) flood and
hold connections, and samples ``/healthz`` and the server's RSS meanwhile.

The CLI entry points are :func:`pushgate.bench.parser.add_bench_parser` and
:func:`pushgate.bench.cli.run_bench`.
"""
