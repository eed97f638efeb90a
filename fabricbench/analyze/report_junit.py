"""JUnit XML: one test case per acceptance test for the cluster, and one per host (failing with its verdicts)."""

from __future__ import annotations

from xml.etree import ElementTree as ET


def render(res, criteria: dict) -> str:
    suite = ET.Element("testsuite", name="fabricbench.analyze")
    cases = 0
    failures = 0
    for name, t in criteria["cluster"]["tests"].items():
        case = ET.SubElement(suite, "testcase", classname="cluster", name=name)
        cases += 1
        if not t["pass"]:
            failures += 1
            f = ET.SubElement(case, "failure", message="; ".join(t["why"][:5])[:500])
            f.text = "\n".join(t["why"])
    for host, node in sorted(criteria["nodes"].items()):
        case = ET.SubElement(suite, "testcase", classname="node", name=str(host))
        cases += 1
        if not node["pass"]:
            failures += 1
            f = ET.SubElement(case, "failure", message="; ".join(node["failed"][:3])[:500])
            f.text = "\n".join(node["failed"])
    # an inconclusive run fails the criteria's "evidence" test above: nothing judged never passes
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
