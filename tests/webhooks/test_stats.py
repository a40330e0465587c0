"""The webhook counts as /metrics shows them (pushgate.metrics.WebhookCollector)."""

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from pushgate.metrics import WebhookCollector
from pushgate.webhooks.stats import DROPPED, GAVE_UP, WebhookStats


def test_the_webhook_counts_are_exported() -> None:
    """Queued, sent, retried, failed by reason (every reason, even at 0), the buffer
    and the POST latency histogram."""
    stats = WebhookStats(queued=7, sent=5, retried=4, buffered=2)
    stats.failed[GAVE_UP] += 3
    stats.failed[DROPPED] += 1
    stats.post_seconds.observe(0.02)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WebhookCollector(stats))
    text = generate_latest(registry).decode()
    for line in [
        "pushgate_webhook_events_queued_total 7.0",
        "pushgate_webhook_events_sent_total 5.0",
        "pushgate_webhook_events_retried_total 4.0",
        'pushgate_webhook_events_failed_total{reason="gave_up"} 3.0',
        'pushgate_webhook_events_failed_total{reason="dropped"} 1.0',
        'pushgate_webhook_events_failed_total{reason="trimmed"} 0.0',
        "pushgate_webhook_events_buffered 2.0",
        'pushgate_webhook_post_duration_seconds_bucket{le="0.025"} 1.0',
        "pushgate_webhook_post_duration_seconds_count 1.0",
    ]:
        assert line + "\n" in text, line
