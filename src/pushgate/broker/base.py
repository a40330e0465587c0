"""The Broker interface: how nodes hand each other pushes.

Every push goes through a broker, even in a single process (the memory broker
loops it straight back), so one code path serves one node and a cluster.

A broker carries opaque bytes on string topics. It knows nothing of rooms or
connections: membership stays in each node's hub, and the node subscribes to a
room's topic only while it has a local member there.

Delivery contract, for every implementation:

- **At most once.** A payload published on a topic reaches each node subscribed to
  that topic at the time of publishing at most once; nothing is stored or replayed
  for a node that was not subscribed or not reachable.
- **Ordered per publisher and topic.** Two payloads published by one broker, one
  after the other (the first ``publish`` returned before the second was called), on
  the same topic, reach every subscriber in that order.
- **Subscribed means subscribed.** Once :meth:`Broker.subscribe` has returned, every
  later publish on that topic reaches this node's handler.
"""

from typing import Protocol


class BrokerHandler(Protocol):
    """Receives what a broker delivers to this node."""

    def on_message(self, topic: str, payload: bytes) -> int:
        """Deliver ``payload`` published on ``topic``; return how many local
        connections it was handed to. Must not await or block."""
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
