"""The README's spec reference, rendered from the CRD's descriptions.

The descriptions `kubectl explain tenant.spec...` shows are the only copy:
this module turns them into a Markdown table and writes it into the README
between two marker comments (`make docs`); a unit test fails when the README
is out of date.

    python -m tenant_operator.crd_reference CRD README [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

START = "<!-- spec-reference:start (generated from crds/tenant.yaml by `make docs`) -->"
END = "<!-- spec-reference:end -->"


def schema(crd: dict) -> dict:
    """The openAPIV3Schema of the CRD's (single) version."""
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def type_of(node: dict) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type", "")
    if kind == "array":
        return "[]" + type_of(node.get("items") or {})
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map[string]" + type_of(node["additionalProperties"])
    return kind


def fields(node: dict, path: str):
    """(path, node) of every property under `node`, depth first in schema
    order; the properties of an array's items are under `path[]`."""
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        yield here, child
        yield from fields(child, here)
        items = child.get("items")
        if isinstance(items, dict):
            yield from fields(items, f"{here}[]")


def _escape(text: str) -> str:
    """Markdown table cell: `|` escaped everywhere, and outside code spans
    also `<`, `>`, `*` and `_` (read as HTML or emphasis otherwise)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*").replace("_", "\\_")
    return "`".join(parts)


def table(crd: dict) -> str:
    rows = ["| field | type | description |", "|---|---|---|"]
    for path, node in fields(schema(crd)["properties"]["spec"], "spec"):
        rows.append(f"| `{path}` | {type_of(node)} | {_escape(node.get('description', ''))} |")
    return "\n".join(rows) + "\n"


def update(readme: str, generated: str) -> str:
    """The README with the text between the markers replaced."""
    pattern = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.S)
    if len(pattern.findall(readme)) != 1:
        raise ValueError(f"the README must hold the markers once, in this order:\n{START}\n{END}")
    return pattern.sub(lambda _: f"{START}\n{generated}{END}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the spec reference from the CRD into the README.")
    parser.add_argument("crd", type=Path)
    parser.add_argument("readme", type=Path)
    parser.add_argument("--check", action="store_true", help="only report whether the README is up to date")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    wanted = update(current, table(yaml.safe_load(args.crd.read_text())))
    if current == wanted:
        return 0
    if args.check:
        print(f"{args.readme}: the spec reference is out of date; run `make docs`", file=sys.stderr)
        return 1
    args.readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
