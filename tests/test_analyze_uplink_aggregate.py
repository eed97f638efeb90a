"""A leaf's uplinks judged on the leaf's aggregate cross-leaf traffic against the other leaves' under the same
schedule (tomography.leaf_terms): on a 2:1 oversubscribed fabric with static ECMP hashing, collisions spread
single paths by ~30%, so a 15-30% short uplink is invisible path by path, but it holds every path of its leaf
down in every round while collisions hit random pairs (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest

from fabricbench.analyze import tomography
from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.importers import load
from fabricbench.analyze.simulate import SimSpec, parse_fault, write
from fabricbench.analyze.topo_adapter import fabric_from_leaves


def _static_2to1(tmp_path, faults, seed, noise=0.03):
    spec = SimSpec(nodes=64, leaves=4, spines=4, noise=noise, heavy=True, dips=0.01, failures=0.002, repeats=2,
                   oversubscription=2.0, routing="static", seed=seed, faults=[parse_fault(f) for f in faults])
    out, truth = write(spec, tmp_path / f"sim{seed}")
    return analyze(load(out), fabric_from_leaves(truth["leaves"], spines=4, oversubscription=2.0))


@pytest.mark.parametrize("seed", [1, 2])
def test_degraded_uplink_on_static_oversubscribed_fabric_is_named(tmp_path, seed):
    res = _static_2to1(tmp_path, ["uplink:leaf3:0.8"], seed)
    got = [(v.kind, v.identifiers.get("switch")) for v in res.faults()]
    assert got == [("uplink", "leaf3")]
    v = res.faults()[0]
    assert v.confidence >= 0.9 and 5 < v.deficit_pct < 25  # collisions dilute a 20% capacity loss, never hide it
    assert "under the same schedule" in v.summary
    assert res.exit_code == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_static_oversubscribed_fabric_names_no_uplink(tmp_path, seed):
    res = _static_2to1(tmp_path, [], seed)
    assert [v for v in res.verdicts if v.kind == "uplink"] == []
    assert res.exit_code == 0


def _rows(rng, nl=6, per=12, shift=None, spread=0.3, rounds=40):
    """Single measurements between hosts on nl leaves: heavy collision-like noise on every path, plus optional
    {(leaf, direction): log shift} on one leaf's traffic."""
    leaf = np.repeat(np.arange(nl), per)
    n = len(leaf)
    src, dst = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    src, dst = src.ravel(), dst.ravel()
    keep = src != dst
    src, dst = np.repeat(src[keep], rounds // 10), np.repeat(dst[keep], rounds // 10)
    y = rng.standard_t(3, len(src)) * spread / np.sqrt(3)
    for (k, direction), s in (shift or {}).items():
        y[(leaf[src] if direction == "up" else leaf[dst]) == k] += s
    return y, src, dst, leaf


def test_leaf_terms_find_the_short_leaf_and_a_slow_destination_does_not_move_the_others():
    rng = np.random.default_rng(0)
    y, src, dst, leaf = _rows(rng, shift={(2, "up"): -0.12, (4, "down"): -0.3})
    t = tomography.leaf_terms(y, src, dst, leaf, np.ones(len(y), dtype=bool))
    d, sigma, n = t.judge(2, "up")
    assert n == 5 and 0.08 < d < 0.16 and d > 4 * sigma
    d4, s4, _ = t.judge(4, "down")
    assert d4 > 0.25
    for k in (0, 1, 3, 5):  # the slow destination leaf is its own column, not the other leaves' uplinks
        dk, sk, _ = t.judge(k, "up")
        assert abs(dk) < 0.03 and abs(dk) < 4 * sk


def test_leaf_terms_noise_includes_how_much_healthy_leaves_differ():
    """Leaves that differ by a few percent among themselves (each with its own recurring collisions) widen the
    noise a leaf is judged against: a leaf as far out as the others scatter is not singled out."""
    rng = np.random.default_rng(1)
    y, src, dst, leaf = _rows(rng, nl=8, shift={(k, "up"): s for k, s in enumerate(
        [0.04, -0.03, 0.02, -0.04, 0.03, -0.02, 0.0, -0.05])})
    t = tomography.leaf_terms(y, src, dst, leaf, np.ones(len(y), dtype=bool))
    d, sigma, _ = t.judge(7, "up")
    assert sigma > 0.02 and d < 4 * sigma


def test_leaf_terms_need_three_leaves():
    rng = np.random.default_rng(2)
    y, src, dst, leaf = _rows(rng, nl=2)
    assert tomography.leaf_terms(y, src, dst, leaf, np.ones(len(y), dtype=bool)) is None


@pytest.mark.parametrize("x, dof, expected", [(2.0, 1, 0.14758361765043326), (2.0, 2, 0.09175170953613698),
                                              (2.0, 5, 0.050969739414929174), (4.0, 10, 0.0012591663123683473)])
def test_student_t_tail_matches_published_values(x, dof, expected):
    # expected: scipy.stats.t.sf(x, dof) (SciPy 1.17.1), written down here so the tests need no SciPy
    assert tomography.student_t_sf(x, dof) == pytest.approx(expected, rel=1e-9)
    assert tomography.student_t_sf(-x, dof) == pytest.approx(1 - expected, rel=1e-9)


def test_three_leaves_margin_read_on_a_t_tail():
    """Two other leaves say next to nothing about how far healthy leaves differ: a leaf 3 'sigmas' below them on
    a 3-leaf fabric is not an uplink fault (the real lab's contended 2:1 sweep reads that way when healthy)."""
    assert tomography.student_t_sf(4.0, 1) > 0.07  # Cauchy: 6 leaf terms x 0.078 is far beyond any budget
    assert tomography.student_t_sf(4.0, 61) < 1e-4


def test_noise_estimated_from_few_leaves_has_few_degrees_of_freedom():
    """3 leaves: 6 leaf-to-leaf blocks, 5 fitted terms, one residual degree of freedom behind the spread, and two
    other leaves behind the scatter: the margin must be read on a tail that heavy (Cauchy). 8 leaves that agree: many."""
    def terms(nl, up, spread):
        n = np.full(nl, nl - 1)
        return tomography.LeafTerms(np.array(up, float), np.zeros(nl), n, n, np.full((2, nl), 500), spread,
                                    nl * (nl - 1) - (2 * nl - 1))
    three = terms(3, [0.02, -0.01, -0.12], 0.004)
    d, sigma, _ = three.judge(2, "up")
    assert d / sigma > 4 and three.scatter_dof(2, "up") < 2
    assert 6 * tomography.student_t_sf(d / sigma, three.scatter_dof(2, "up")) > 0.01  # beyond the false-alarm budget
    eight = terms(8, [0.0, 0.001, -0.001, 0.002, 0.0, -0.002, 0.001, -0.12], 0.004)
    assert eight.scatter_dof(7, "up") > 20
