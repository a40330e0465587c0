"""Brokers move opaque bytes between the nodes of a cluster, by topic."""

from pushgate.broker.base import Broker, BrokerHandler

__all__ = ["Broker", "BrokerHandler"]
