"""One ``/metrics`` for every worker of ``--workers``: the workers' expositions merged,
each sample labelled with its worker.

Prometheus then sums or compares them like any labelled series
(``sum without (worker) (pushgate_connections)`` is the process group's total). A
worker that could not be read (restarting) is left out, and ``pushgate_worker_up``
says which: 1 for each worker read, 0 for each that was not.

Pure: parsing and rendering only; the supervisor fetches the texts.
"""

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

WORKER_LABEL = "worker"


class _Merged:
    """A collector that yields the merged families (the registry renders them)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_expositions(texts: Mapping[str, str | None]) -> bytes:
    """The Prometheus text of every worker's exposition (``None``: not read), merged.

    Families of the same name become one family; every sample gains the label
    ``worker`` with the worker's name.
    """
    merged: dict[str, Metric] = {}
    up = Metric("pushgate_worker_up", "1 when this worker's metrics were read", "gauge")
    for worker, text in texts.items():
        up.samples.append(
            Sample("pushgate_worker_up", {WORKER_LABEL: worker}, int(text is not None))
        )
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                into.unit = family.unit
            for sample in family.samples:
                labels = {**sample.labels, WORKER_LABEL: worker}
                into.samples.append(sample._replace(labels=labels))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([up, *merged.values()]))
    return generate_latest(registry)
