"""The Broker interface: how nodes hand each other pushes.

Every push goes through a broker, even in a single process (the memory broker
loops it straight back), so one code path serves one node and a cluster.

A broker carries opaque bytes on string topics. It knows nothing of rooms or
connections: membership stays in each node's hub, and the node subscribes to a
room's topic only while it has a local member there.

Two kinds of traffic share it:

- **Pushes** (:meth:`Broker.publish_push`, topics ``all``, ``room:<id>``,
  ``user:<uid>``) go to streams: when history is on, the broker gives each push the
  next :class:`~pushgate.streams.Position` of its topic's stream and keeps it in that
  stream's history *in the same atomic step* as it publishes it, so a push is in
  history if and only if it was published. Subscribers get a
  :class:`~pushgate.streams.Publication` (``on_publication``).
- **Control messages** (:meth:`Broker.publish`, joins and replies between nodes) are
  fire and forget (``on_message``).

Delivery contract, for every implementation:

- **At most once, live.** A payload published on a topic reaches each node subscribed
  to that topic at the time of publishing at most once. What a node missed (it was
  not subscribed, or a message was lost while the broker reconnected) is not
  replayed by the broker: the node reads it from :meth:`Broker.history`, which is
  how sessions resume and how a node fills a gap it sees in a stream's positions.
- **Ordered per publisher and topic.** Two payloads published by one broker, one
  after the other (the first ``publish`` returned before the second was called), on
  the same topic, reach every subscriber in that order.
- **Subscribed means subscribed.** Once :meth:`Broker.subscribe` has returned, every
  later publish on that topic reaches this node's handler.
- **History expires; positions outlive it.** A stream keeps its last
  ``history_size`` pushes, each for ``history_ttl`` after it was published (the
  memory broker also within a byte cap, oldest first); a push no longer kept is
  never read back, and a read after a position before it is not ``complete``. The
  stream's position (epoch and seq) is kept while any node subscribes to its topic,
  and for ``max(history_ttl, session_ttl)`` plus a margin after its last publish,
  read or unsubscribe, so a session resuming within its TTL never sees a new epoch
  unless history was really lost.
"""

from collections.abc import Iterable, Mapping
from typing import Protocol

from pushgate.streams import History, Position, Publication


class BrokerHandler(Protocol):
    """Receives what a broker delivers to this node."""

    def on_message(self, topic: str, payload: bytes) -> int:
        """Deliver ``payload`` published on ``topic``; return how many local
        connections it was handed to. Must not await or block."""
        ...

    def on_publication(self, topic: str, pub: Publication) -> int:
        """Deliver a push published on a stream; like :meth:`on_message`. Without
        history ``pub.seq`` is 0 and ``pub.epoch`` empty."""
        ...

    def on_interrupted(self, topics: Mapping[str, bool]) -> None:
        """A subscription broke, carrying ``topics`` (:meth:`on_reconnected` follows
        once it is rebuilt); called before anything else is delivered, and only by a
        broker whose subscriptions can break. Each topic maps to True when the
        connection was closed under its subscription, confirmed and delivering (an
        end of file or a reset, as when the server stops): whatever the server had
        written on it was delivered first. False when the subscription went silent
        (the server may have gone on publishing, unseen), was not confirmed yet, or
        failed otherwise. Called again, every topic False, when an attempt to
        reconnect then fails otherwise than refused (something answers: the server
        may be up, publishing unseen). Must not await or block."""
        ...

    def on_reconnected(self) -> None:
        """The broker's subscriptions were rebuilt after an outage: anything published
        meanwhile did not arrive, and should be read from history."""
        ...


class Broker(Protocol):
    """One node's connection to the message bus shared by the cluster."""

    async def start(self, handler: BrokerHandler) -> None:
        """Connect, and deliver every later message on a subscribed topic to ``handler``."""
        ...

    async def publish(self, topic: str, payload: bytes) -> int | None:
        """Send ``payload`` to every node subscribed to ``topic``.

        Returns the number of connections it was handed to when the broker can know
        it (the memory broker can), else ``None``. Raises
        :class:`pushgate.errors.PushgateError` subclasses when it cannot publish.
        """
        ...

    async def publish_push(self, topic: str, message: bytes) -> int | None:
        """Publish a push (JSON and a newline, see :mod:`pushgate.wire`) on ``topic``'s
        stream: with history on, at the stream's next position, kept in its history.
        Returns and raises as :meth:`publish`."""
        ...

    async def history(self, topic: str, since: Position | None) -> History:
        """The pushes of ``topic`` kept after ``since``, and the stream's position now
        (``since`` None: the position only). Raises like :meth:`publish`."""
        ...

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        """:meth:`history` of several topics at once (a resume reads every stream of
        its session): one round trip, not one per topic. Raises like :meth:`publish`."""
        ...

    async def sync(self, topics: Iterable[str] | None = None) -> None:
        """Return once every push published before this call, on a topic this node is
        subscribed to (of ``topics``, when given), has been handed to the handler.
        Raises like :meth:`publish`."""
        ...

    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic``. Subscribing twice is the same as once."""
        ...

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``. Unsubscribing a topic not subscribed is harmless."""
        ...

    async def close(self) -> None:
        """Stop receiving anything and release the connection."""
        ...

    @property
    def ready(self) -> bool:
        """Connected, and every subscription confirmed and delivering."""
        ...

    @property
    def answers_at_once(self) -> bool:
        """Every call completes without waiting for anything outside this process
        (and without a timeout that needs a task): an operation a client sends can
        be answered in the turn that read it (clientops.Serial)."""
        ...

    @property
    def keeps_history(self) -> bool:
        """Pushes carry stream positions and are kept in history (``history_size``
        above 0): the node checks positions and recovers. Fixed for its lifetime."""
        ...
