"""The front's /metrics: every worker's series summed, plus what only the front knows.

Summing keeps the names and labels of a single server, so dashboards and benchmarks read one
server's worth of series whatever `--workers` is. Histograms sum bucket by bucket; `_created`
timestamps take the earliest. A restarted worker starts its counters again from zero, so the front
keeps the counters of a worker that exited in its sums as last read (by the once-a-second poll or a
/metrics it answered): a sum never steps below what it has shown. A worker that does not answer
(hung) stays in the sums as last read, gauges too; one that exited leaves the sessions gauge as its
sessions as last read join `lipstream_sessions_ended_total{reason="worker_exited"}`, so started
less ended is the sessions gauge at every read.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, generate_latest

CREATED_SUFFIX = "_created"
MONOTONIC_TYPES = ("counter", "histogram")  # what may be kept after the worker that counted is gone


class FrontMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_rejected = Counter(
            "lipstream_sessions_rejected", "Session requests refused for capacity", registry=r)
        self.sessions_ended = Counter(
            "lipstream_sessions_ended", "Sessions ended, by reason", ["reason"], registry=r)
        self.worker_restarts = Counter(
            "lipstream_worker_restarts", "Worker processes restarted after they exited", registry=r)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


@dataclass
class _Family:
    comments: dict[str, str] = field(default_factory=dict)  # HELP, TYPE -> the first text's line
    samples: dict[str, float] = field(default_factory=dict)  # 'name{labels}' -> value


def sum_exposition(texts: Iterable[str]) -> str:
    """Prometheus text expositions -> one, each series (name and labels) summed across them."""
    families: dict[str, _Family] = {}
    for text in texts:
        current = _Family()
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                current = families.setdefault(parts[2] if len(parts) > 2 else "", _Family())
                current.comments.setdefault(parts[1], line)
            elif line.strip():
                series, _, value = line.rpartition(" ")
                current.samples[series] = _combine(series, current.samples.get(series), float(value))
    return "".join(_render(family) for family in families.values())


def counters_only(text: str) -> str:
    """The counter and histogram families of an exposition (not gauges, not `_created`)."""
    kept: list[str] = []
    help_line, keep = "", False
    for line in text.splitlines():
        if line.startswith("# HELP "):
            help_line, keep = line, False
        elif line.startswith("# TYPE "):
            keep = line.rsplit(" ", 1)[-1] in MONOTONIC_TYPES
            kept += [h for h in (help_line, line) if h and keep]
            help_line = ""
        elif keep and line.strip():
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def gauge_value(text: str, name: str) -> float:
    """The value of the unlabelled series `name` in an exposition (0 when it is not there)."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name:
            return float(value)
    return 0.0


def _combine(series: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    name = series.split("{", 1)[0]
    return min(old, new) if name.endswith(CREATED_SUFFIX) else old + new


def _render(family: _Family) -> str:
    samples = [f"{series} {value!r}" for series, value in family.samples.items()]
    lines = list(family.comments.values()) + samples
    return "\n".join(lines) + "\n"
