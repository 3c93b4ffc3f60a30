"""The Grafana dashboard only plots metrics the services actually export."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "callbridge.json"
_METRIC = re.compile(r"\b(callbridge_[a-z_]+)")
_SUFFIXES = ("_bucket", "_total", "_count", "_sum")


def _exported_names() -> set[str]:
    source = "\n".join(p.read_text() for p in ROOT.glob("services/*/metrics.py"))
    names = set(re.findall(r'"(callbridge_[a-z_]+)"', source))
    for prefix, var in (("callbridge_gateway", "_NS"), ("callbridge_ingress", "PREFIX")):
        names |= {prefix + m for m in re.findall(r'f"\{' + var + r'\}(_[a-z_]+)"', source)}
    return names


def test_every_plotted_metric_is_exported() -> None:
    exported = _exported_names()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 8
    for panel in panels:
        for target in panel["targets"]:
            for name in _METRIC.findall(target["expr"]):
                base = name
                for suffix in _SUFFIXES:
                    base = base.removesuffix(suffix)
                assert base in exported or name in exported, (panel["title"], name)
