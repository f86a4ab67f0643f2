"""The last minutes of the overview's totals, for its small chart."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["History", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """The totals over all job queues at one moment (``at_s``: Unix time)."""

    at_s: float
    values: dict[str, float]


class History:
    """A ring of samples: at most one per ``every_s``, kept for ``window_s``."""

    def __init__(self, window_s: float = 600.0, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._samples: deque[Sample] = deque(maxlen=max(2, int(window_s / every_s) + 1))

    def add(self, at_s: float, values: dict[str, float]) -> bool:
        """Record ``values`` unless the last sample is younger than ``every_s``; True if kept.

        Several open pages poll the overview; the chart's spacing stays even.
        """
        if self._samples and at_s - self._samples[-1].at_s < self.every_s * 0.9:
            return False
        self._samples.append(Sample(at_s, dict(values)))
        return True

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Each value's ``(at_s, value)`` points, oldest first."""
        out: dict[str, list[tuple[float, float]]] = {}
        for sample in self._samples:
            for key, value in sample.values.items():
                out.setdefault(key, []).append((sample.at_s, value))
        return out
