"""Metric names on both sides of the dashboard contract: the ones the Grafana dashboard's
PromQL queries select, and the ones a Prometheus text exposition (a daemon's /metrics) exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "gepa-stream.json"

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:$])\d[\d.]*(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*")  # and durations
_IDENTIFIER = re.compile(r"(?<![\w$])[A-Za-z_:][\w:]*(\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)")
_SAMPLE = re.compile(r"[A-Za-z_:][\w:]*")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panel_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL `expr` of every panel target, however deeply nested (rows, libraries)."""
    stack: list[Any] = [dashboard.get("panels", [])]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """The metric names the dashboard's panel queries and template variables select."""
    names = set().union(*(promql_metric_names(expr) for expr in panel_queries(dashboard)))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        names.update(_LABEL_VALUES.findall(text))
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in matchers and grouping clauses), strings, numbers or Grafana variables."""
    bare = expr
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING, _NUMBER):
        bare = pattern.sub(" ", bare)
    return {
        match.group(0)
        for match in _IDENTIFIER.finditer(bare)
        if match.group(1) is None and match.group(0) not in _KEYWORDS
    }


def exported_metric_names(exposition: str) -> set[str]:
    """Names a Prometheus text exposition exports. A labelled metric with no samples yet shows
    only `# HELP`/`# TYPE` lines, so declared names count; histograms add their series suffixes."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            if match:
                names.add(match.group(0))
    return names
