"""Fleet statistics: robust median and spread of log bandwidth per path class and size.

The spread is 1.4826 x MAD (a standard deviation for Gaussian noise, unmoved by a minority of faults) with a
floor (`Thresholds.min_spread`, default 1%) so that a very quiet fleet, where MAD is a fraction of a percent,
does not turn measurement jitter into verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826


@dataclass
class ClassStats:
    path_class: str
    size: int
    median_gbps: float
    spread: float  # robust sigma of log(bw), floored
    raw_spread: float
    count: int
    best_gbps: float
    ref_gbps: float = float("nan")  # the value normalized values are relative to

    def as_dict(self) -> dict:
        return {"class": self.path_class, "size": int(self.size), "median_gbps": self.median_gbps,
                "spread_pct": 100 * self.spread, "raw_spread_pct": 100 * self.raw_spread, "count": int(self.count),
                "best_gbps": self.best_gbps}


def robust_center_spread(logs: np.ndarray, floor: float) -> tuple[float, float, float]:
    logs = logs[np.isfinite(logs)]
    if logs.size == 0:
        return float("nan"), floor, float("nan")
    med = float(np.median(logs))
    raw = MAD_TO_SIGMA * float(np.median(np.abs(logs - med))) if logs.size >= 3 else float("nan")
    spread = max(raw, floor) if np.isfinite(raw) else max(floor, 0.03)
    return med, spread, raw


def class_stats(logs: np.ndarray, classes: np.ndarray, size_idx: np.ndarray, sizes: np.ndarray,
                class_names: list[str], floor: float, step: int = 1) -> tuple[dict[tuple[int, int], ClassStats], np.ndarray]:
    """Per (class code, size) stats, and every value normalized: log(bw) - log(class median).

    `size_idx` indexes `sizes`. Medians and MADs come from every `step`-th value (hundreds of thousands of
    values pin a median far below the noise); the normalization itself is one gather over all values."""
    out: dict[tuple[int, int], ClassStats] = {}
    width = len(sizes) + 1
    key = classes.astype(np.int32) * width + size_idx.astype(np.int32)
    counts = np.bincount(key, minlength=3 * width)
    centers = np.zeros(len(counts), dtype=np.float32)
    key_s, logs_s = key[::step], logs[::step]
    for k in np.flatnonzero(counts):
        sel = key_s == k
        vals = logs_s[sel] if sel.sum() >= 50 else logs[key == k]
        c, si = int(k) // width, int(k) % width
        med, spread, raw = robust_center_spread(vals.astype(np.float64), floor)
        fin = vals[np.isfinite(vals)]
        st = ClassStats(class_names[c], int(sizes[si]), float(np.exp(med)) if np.isfinite(med) else float("nan"),
                        spread, raw, int(counts[k]), float(np.exp(fin.max())) if fin.size else float("nan"))
        st.ref_gbps = st.median_gbps
        out[(c, int(sizes[si]))] = st
        centers[k] = med if np.isfinite(med) else 0.0
    norm = logs.astype(np.float32, copy=False) - centers[key]
    return out, norm
