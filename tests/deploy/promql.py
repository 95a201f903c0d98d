"""Metric names out of PromQL expressions, and the names a /metrics exposition can be selected by.

Enough PromQL for our own dashboard, alerts and autoscaler queries: it does not evaluate
anything, it finds the identifiers that name series (not functions, keywords or label names).
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# Label lists of aggregations and vector matching: `by (le, model)`, `on (instance)`.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Not after a digit, dot or name character, so the `e3` of `1e3` and the `m` of `5m` are skipped.
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {
        *("by", "without", "on", "ignoring", "group_left", "group_right", "bool"),
        *("and", "or", "unless", "offset", "atan2", "inf", "nan"),
    }
)


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects, e.g. `rate(x_total[5m]) / y` gives {x_total, y}."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation: sum(...), rate(...)
        names.add(name)
    return names


_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def selectable_names(exposition: str) -> dict[str, str]:
    """Series name -> the family type it belongs to, from the `# TYPE` lines of an exposition.

    Families are included even when they have no samples now (the allocator gauges on a CPU),
    since a dashboard may rightly ask for them. Histogram series are selectable only by their
    `_bucket`/`_count`/`_sum` names, counters only by `_total`, gauges only by their own name.
    """
    names: dict[str, str] = {}
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        family, kind = parts[2], parts[3]
        if kind == "counter":
            base = family.removesuffix("_total")
            names[base + "_total"] = kind
        else:
            for suffix in _SUFFIXES.get(kind, ("",)):
                names[family + suffix] = kind
    return names


def sample_names(exposition: str) -> set[str]:
    """The names of the samples actually present."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
