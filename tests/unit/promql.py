"""The metric names a PromQL expression reads, and the names the operator exports,
so that a dashboard panel or an alert cannot query a metric that does not exist."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

# What is not a metric name: strings, label matchers, ranges and subqueries,
# Grafana variables, and the label lists of grouping and matching clauses.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "atan2", "inf", "nan", "Inf", "NaN"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric names in `expr`. Any identifier followed by `(` is a function or an
    aggregation (whatever its name), so no list of PromQL functions is needed."""
    text = _VARIABLES.sub(" ", _STRINGS.sub(" ", expr))
    text = _RANGES.sub(" ", _MATCHERS.sub(" ", text))
    text = _CLAUSES.sub(" ", text)
    return {m.group(1) for m in _IDENTIFIER.finditer(text) if not m.group(2) and m.group(1) not in _KEYWORDS}


def exported() -> dict[str, str]:
    """Name a query uses -> type, for every metric the operator's registry holds
    (counters as `<name>_total`; a histogram under its base name)."""
    import tenant_operator.metrics  # noqa: F401 - registers the operator's metrics

    names = {}
    for family in REGISTRY.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        names[name] = family.type
    return names


def unknown(names: set[str], known: dict[str, str]) -> set[str]:
    """Of `names`, those that are neither exported nor a histogram's series."""
    out = set()
    for name in names:
        base = next((name[: -len(s)] for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if name in known or (base is not None and known.get(base) == "histogram"):
            continue
        out.add(name)
    return out
