"""Webhooks: what happens in pushgate, POSTed to the back end's receivers in signed
batches, at least once and in order (docs/webhooks.md).

- events.py: the events, the receivers, and the bytes queued and POSTed (pure);
- signing.py: the ``X-Pushgate-Signature`` header (pure);
- queue.py: the WebhookQueue contract; memqueue.py keeps it in one process,
  redisqueue.py in Redis (import it only where Redis is used);
- sender.py: one receiver's sender; service.py: a node's :class:`Webhooks`;
- stats.py: what they count, for ``/metrics`` (pushgate.metrics.WebhookCollector).

Nothing is imported here: importing a module of the package costs only its own
imports (pushgate.metrics imports stats.py).
"""
