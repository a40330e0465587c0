"""Merging the workers' /metrics into one exposition (pure; the live path is in
tests/test_workers.py)."""

from prometheus_client.parser import text_string_to_metric_families

from pushgate.metricsmerge import merge_expositions

WORKER_1 = """# HELP pushgate_connections Open WebSocket connections
# TYPE pushgate_connections gauge
pushgate_connections 3.0
# HELP pushgate_deliveries_total Pushes handed to connections
# TYPE pushgate_deliveries_total counter
pushgate_deliveries_total 10.0
# HELP pushgate_delivery_seconds Delivery latency
# TYPE pushgate_delivery_seconds histogram
pushgate_delivery_seconds_bucket{le="0.01"} 1.0
pushgate_delivery_seconds_bucket{le="+Inf"} 2.0
pushgate_delivery_seconds_count 2.0
pushgate_delivery_seconds_sum 0.5
"""
WORKER_2 = WORKER_1.replace("connections 3.0", "connections 5.0").replace(" 10.0", " 7.0")


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_every_sample_is_kept_with_its_worker_and_families_stay_one() -> None:
    """Both workers' samples are there, labelled; each family is declared once, so
    Prometheus can sum a family over workers."""
    text = merge_expositions({"gateway 1": WORKER_1, "gateway 2": WORKER_2})
    got = samples(text)
    assert got[("pushgate_connections", (("worker", "gateway 1"),))] == 3
    assert got[("pushgate_connections", (("worker", "gateway 2"),))] == 5
    assert got[("pushgate_deliveries_total", (("worker", "gateway 2"),))] == 7
    bucket = ("pushgate_delivery_seconds_bucket", (("le", "0.01"), ("worker", "gateway 1")))
    assert got[bucket] == 1
    assert text.decode().count("# TYPE pushgate_connections gauge") == 1
    assert text.decode().count("# TYPE pushgate_delivery_seconds histogram") == 1


def test_a_worker_that_was_not_read_is_reported_down_not_hidden() -> None:
    """A worker being restarted has no samples, and pushgate_worker_up says so."""
    got = samples(merge_expositions({"gateway 1": WORKER_1, "gateway 2": None}))
    assert got[("pushgate_worker_up", (("worker", "gateway 1"),))] == 1
    assert got[("pushgate_worker_up", (("worker", "gateway 2"),))] == 0
    assert ("pushgate_connections", (("worker", "gateway 2"),)) not in got
