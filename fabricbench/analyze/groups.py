"""Collectives and ring results as group tests.

Each collective result covers a set of hosts. Results of the same operation, rank count and size are compared
with their robust median; a host that is in slow groups and in no healthy group is a suspect (the classic
group-testing argument), with modest confidence since one group result cannot say which member was slow.
Wrong data (`#wrong` > 0) is a verdict of its own: a fact, not a statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fabricbench.analyze.verdicts import Verdict, pct


def analyze_groups(groups: pd.DataFrame, rel: float, floor: float) -> tuple[list[Verdict], list[str], list[dict]]:
    verdicts: list[Verdict] = []
    notes: list[str] = []
    table: list[dict] = []
    if groups.empty:
        return verdicts, notes, table
    g = groups.copy()
    g["hosts"] = g["hosts"].fillna("").astype(str)
    wrong = g[(g["nwrong"].fillna(0) > 0)]
    for (op, hosts), sub in wrong.groupby(["op", "hosts"]):
        members = [h for h in hosts.split(",") if h]
        verdicts.append(Verdict(
            component=hosts if len(members) != 1 else members[0], kind="node" if len(members) <= 1 else "node",
            severity="critical", confidence=0.95 if members else 0.9, deficit_pct=0.0,
            summary=f"{op}: wrong data ({int(sub['nwrong'].sum()):g} wrong elements) on "
                    f"{', '.join(members) or 'unnamed hosts'}: memory, GPU or link corruption",
            evidence=[f"{op} size {int(s)}: #wrong {w:g}" for s, w in zip(sub["size"], sub["nwrong"])][:5],
            retest=[f"{op} -c 5 on each of {', '.join(members) or 'the hosts'} separately"], hosts=members,
            basis="data"))
    ok = g[(g["status"] == "ok") & np.isfinite(g["busbw"]) & (g["busbw"] > 0)]
    suspects: dict[str, list[str]] = {}
    healthy_hosts: set[str] = set()
    bad_groups = 0
    for (op, nranks, size), sub in ok.groupby(["op", "nranks", "size"]):
        per_group = sub.groupby("hosts")["busbw"].max()
        table.append({"op": op, "nranks": int(nranks), "size": int(size), "groups": int(len(per_group)),
                      "median_busbw": float(per_group.median())})
        if len(per_group) < 3:
            continue
        logs = np.log(per_group.to_numpy())
        med = np.median(logs)
        for hosts, lv in zip(per_group.index, logs):
            members = [h for h in hosts.split(",") if h]
            if lv - med < -rel:
                bad_groups += 1
                for h in members:
                    suspects.setdefault(h, []).append(f"{op} n={nranks} size {size}: {pct(lv - med):.0f}% below "
                                                      f"the median of {len(per_group)} groups")
            else:
                healthy_hosts |= set(members)
    for host, why in sorted(suspects.items()):
        if host in healthy_hosts:
            continue
        verdicts.append(Verdict(component=host, kind="node", severity="minor", confidence=min(0.5 + 0.1 * len(why), 0.8),
                                deficit_pct=0.0, summary=f"{host} is in {len(why)} slow collective group(s) and in no "
                                "healthy one (group test)", evidence=why[:5],
                                retest=[f"a pairwise sweep including {host}"], hosts=[host], basis="group"))
    if not ok.empty and ok.groupby(["op", "nranks", "size"])["hosts"].nunique().max() < 3:
        notes.append("collective results: fewer than 3 comparable groups per operation and size, so they are not "
                     "compared with each other (only with --topology's expectation or a --baseline)")
    return verdicts, notes, table
