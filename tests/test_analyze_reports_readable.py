"""Reports read at 3 a.m.: one line per finding first, 80 columns, colour only on terminals; HTML with provenance,
human sizes and identifiers, a colour-blind-safe scale, host names at any scale, numbers in small matrices.

The HTML is also checked by eye (docs/analyze.md, 'Looking at the HTML report'): rendered to PNG with headless
chromium; that step is manual, not part of CI."""

from __future__ import annotations

import html
import re

import pytest

from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.importers import load
from fabricbench.analyze.report_html import render as render_html
from fabricbench.analyze.report_text import render as render_text
from fabricbench.cli import main


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "faulty"
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(out), "--nodes", "12", "--leaves", "3", "--gpus", "4", "--seed", "3",
              "--fault", "nic:node0003:0.6", "--fault", "gpu:node0010/1:0.5"])
    return analyze(load(str(out)))


def test_text_one_line_per_finding_first_and_80_columns(faulty):
    text = render_text(faulty, width=80, color=False)
    lines = text.splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    assert "\x1b[" not in text  # no colour when not a terminal
    assert "12 hosts" in lines[0] and "FAULTS (exit 1)" in lines[0]
    head = lines[1:1 + len(faulty.verdicts)]
    comps = {v.component for v in faulty.verdicts}
    for ln in head:  # status, component, how far below what, confidence, what to do - on one line
        assert ln.startswith("FAULT") and "below fleet" in ln and "->" in ln
        assert re.search(r"\b0\.\d\d\b", ln)
    assert {c for c in comps if any(c in ln for ln in head)} == comps


def test_text_uses_the_full_width_and_colours_a_terminal(faulty):
    wide = render_text(faulty, width=160, color=True)
    assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", ln)) for ln in wide.splitlines()) > 120
    assert "\x1b[" in wide


def test_html_provenance_human_forms_and_no_internal_counters(faulty):
    page = render_html(faulty)
    assert re.search(r"generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ by fabricbench \d+\.\d+", page)
    assert "inputs: <code" in page
    assert "pair_rows" not in page and "{'pairs'" not in page and "groups 0" not in page
    assert "256 MiB" in page and "1 GiB" in page  # sizes in human form
    assert "host node0003" in page  # identifiers in words
    assert "cividis" in page


def test_html_small_matrices_carry_numbers_and_names(faulty):
    page = html.unescape(render_html(faulty))
    gpu = page[page.index("<h2>GPU x GPU</h2>"):]
    cells = re.findall(r"<td style='background:#[0-9a-f]{6};color:#[0-9a-f]{6}' title='([^']+)'>(\d*)</td>", gpu)
    assert cells and all(num for _, num in cells[:10] if "not measured" not in _)
    assert any(t.startswith("GPU1 -> GPU") for t, _ in cells)
    pair = page[page.index("<h2>Pair matrix</h2>"):page.index("<h3>Every host</h3>")]
    assert "title='node0001 -> node0002:" in pair  # hover names both hosts


def test_html_names_every_host_past_hundreds(tmp_path):
    out = tmp_path / "big"
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(out), "--nodes", "260", "--leaves", "10", "--pattern", "random-4",
              "--seed", "5", "--fault", "nic:node0200:0.5"])
    res = analyze(load(str(out)))
    page = render_html(res)
    assert page.count("<details") >= 2  # paginated
    hosts = set(re.findall(r"<tr><td>(node\d{4})</td>", page))
    assert len(hosts) == 260
    first = page[page.index("<h3>Every host</h3>"):]
    assert re.search(r"<tr><td>node0200</td>", first[:3000])  # worst first
