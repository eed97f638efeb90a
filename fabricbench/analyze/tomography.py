"""Path tomography over a leaf/spine switch graph: which link lies on the bad paths and not on the good ones.

A cross-leaf path i -> j uses host i's port, leaf(i)'s uplinks (toward the spines), leaf(j)'s downlinks (from
the spines) and host j's port. With ECMP or adaptive routing a flow may take any spine, so the unit we can
blame is a leaf's uplink bundle, and the report says that the exact spine port is uncertain unless routes are
given. With only two leaves both bundles are on every cross-leaf path, so an uplink is identifiable only with
three or more leaves (REFERENCE.md); `identifiable()` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinkEvidence:
    leaf: int
    direction: str  # up (leaf -> spines) | down (spines -> leaf)
    bad_on: int  # bad paths through this bundle
    paths_on: int  # measured paths through it
    bad_off: int  # bad paths elsewhere (cross-leaf, not through it, healthy ends)
    paths_off: int

    @property
    def frac_on(self) -> float:
        return self.bad_on / self.paths_on if self.paths_on else 0.0

    @property
    def frac_off(self) -> float:
        return self.bad_off / self.paths_off if self.paths_off else 0.0


def identifiable(leaf: np.ndarray | None) -> bool:
    return leaf is not None and len(np.unique(leaf)) >= 3


def link_evidence(Y: np.ndarray, leaf: np.ndarray, healthy_src: np.ndarray, healthy_dst: np.ndarray,
                  bad_threshold: float) -> list[LinkEvidence]:
    """Counts, per leaf bundle and direction, of bad and good cross-leaf paths between healthy ends."""
    nl = int(leaf.max()) + 1
    with np.errstate(invalid="ignore"):
        ends = healthy_src[:, None] & healthy_dst[None, :] & (leaf[:, None] != leaf[None, :]) & np.isfinite(Y)
        bad = ends & (Y < -bad_threshold)
    key = (leaf.astype(np.int32)[:, None] * nl + leaf.astype(np.int32)[None, :])
    meas = np.bincount(key[ends], minlength=nl * nl).reshape(nl, nl).astype(np.float64)
    badc = np.bincount(key[bad], minlength=nl * nl).reshape(nl, nl).astype(np.float64)
    del key, ends, bad
    total_m, total_b = meas.sum(), badc.sum()
    out = []
    for k in range(nl):
        on_m, on_b = meas[k].sum(), badc[k].sum()
        out.append(LinkEvidence(k, "up", int(on_b), int(on_m), int(total_b - on_b - badc[:, k].sum() + badc[k, k]),
                                int(total_m - on_m - meas[:, k].sum() + meas[k, k])))
        on_m, on_b = meas[:, k].sum(), badc[:, k].sum()
        out.append(LinkEvidence(k, "down", int(on_b), int(on_m), int(total_b - on_b - badc[k].sum() + badc[k, k]),
                                int(total_m - on_m - meas[k].sum() + meas[k, k])))
    return out
