"""The server's own delivery latency, read from its ``GET /metrics`` before and after
a run: the histogram ``pushgate_delivery_latency_seconds`` (accepted to written to
each socket), beside the bench's client-side latency (sent to received); and how many
frames each socket write carried (``pushgate_frames_written_total`` over
``pushgate_writes_total``), which sets most of a burst's CPU per delivery."""

from dataclasses import dataclass

METRIC = "pushgate_delivery_latency_seconds_bucket"
WRITES, FRAMES = "pushgate_writes_total ", "pushgate_frames_written_total "


@dataclass(frozen=True, slots=True)
class LatencyBuckets:
    """Cumulative counts by upper bound (seconds), +Inf last; and the socket writes
    and the frames they carried so far (0 where the server does not count them)."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    writes: float = 0.0
    frames: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "LatencyBuckets | None":
        pairs = []
        writes = frames = 0.0
        for line in text.splitlines():
            if line.startswith(METRIC + "{"):
                labels, _, value = line.rpartition(" ")
                le = labels.partition('le="')[2].partition('"')[0]
                pairs.append((float(le), float(value)))
            elif line.startswith(WRITES):
                writes = float(line[len(WRITES) :])
            elif line.startswith(FRAMES):
                frames = float(line[len(FRAMES) :])
        if not pairs:
            return None
        pairs.sort()
        return cls(tuple(b for b, _ in pairs), tuple(c for _, c in pairs), writes, frames)

    def since(self, earlier: "LatencyBuckets") -> "LatencyBuckets":
        """What was observed between ``earlier`` and this reading."""
        before = dict(zip(earlier.bounds, earlier.counts, strict=True))
        pairs = zip(self.bounds, self.counts, strict=True)
        return LatencyBuckets(
            self.bounds,
            tuple(c - before.get(b, 0.0) for b, c in pairs),
            self.writes - earlier.writes,
            self.frames - earlier.frames,
        )

    @property
    def frames_per_write(self) -> float | None:
        return self.frames / self.writes if self.writes > 0 else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds, linear within its bucket (None: no data)."""
        total = self.counts[-1] if self.counts else 0.0
        if total <= 0:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
            lower, below = bound, count
        return lower


def ms_of(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
