"""Every CRD field is described (what `kubectl explain` shows), and the README's
spec reference is the table rendered from those descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tenant_operator import crd_reference

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds/tenant.yaml").read_text())
# The API server refuses anything but `type` on the root's metadata.
UNDESCRIBABLE = {".metadata"}


def test_every_property_of_the_schema_has_a_description():
    root = crd_reference.schema(CRD)
    assert root.get("description"), "the Tenant itself has no description"
    missing = [path for path, node in crd_reference.fields(root, "")
               if path not in UNDESCRIBABLE and not str(node.get("description", "")).strip()]
    assert not missing, "CRD properties without a description: " + ", ".join(p.lstrip(".") for p in missing)


def test_the_walk_reaches_nested_and_array_item_properties():
    paths = {path for path, _ in crd_reference.fields(crd_reference.schema(CRD), "")}
    assert {".spec.backup.retention.daily", ".spec.admins[].kind", ".spec.limits.min.ephemeral-storage",
            ".status.conditions[].lastTransitionTime", ".status.placement.mysql"} <= paths


def test_config_driven_defaults_are_described_and_not_set_by_the_api_server():
    spec = crd_reference.schema(CRD)["properties"]["spec"]
    assert "tier" not in spec.get("required", [])
    for path, key in (("tier", "defaults.tier"), ("podSecurity", "defaults.podSecurity"),
                      ("ingress.className", "defaults.ingress.className"),
                      ("ingress.clusterIssuer", "defaults.ingress.clusterIssuer"),
                      ("ingress.service", "defaults.ingress.service"), ("ingress.port", "defaults.ingress.port"),
                      ("backup.schedule", "defaults.backup.schedule"),
                      ("backup.retention.daily", "defaults.backup.retention.daily"),
                      ("backup.retention.weekly", "defaults.backup.retention.weekly"),
                      ("backup.retention.monthly", "defaults.backup.retention.monthly"),
                      ("deletion.gracePeriod", "defaults.deletion.gracePeriod")):
        node = spec
        for name in path.split("."):
            node = node["properties"][name]
        assert "default" not in node, f"spec.{path}: an OpenAPI default would hide the operator's {key}"
        assert f"`{key}` (built-in: " in node["description"], f"spec.{path} does not name {key}"


def test_immutable_fields_say_so():
    placement = crd_reference.schema(CRD)["properties"]["spec"]["properties"]["placement"]
    for name, node in placement["properties"].items():
        assert "Immutable once set" in node["description"], name


def test_the_readme_spec_reference_is_up_to_date():
    readme = (ROOT / "README.md").read_text()
    wanted = crd_reference.update(readme, crd_reference.table(CRD))
    assert readme == wanted, "README.md's spec reference differs from crds/tenant.yaml: run `make docs`"


def test_the_table_has_one_row_per_spec_field_and_escapes_markdown():
    text = crd_reference.table(CRD)
    rows = text.splitlines()[2:]
    spec_fields = list(crd_reference.fields(crd_reference.schema(CRD)["properties"]["spec"], "spec"))
    assert len(rows) == len(spec_fields)
    assert rows[0].startswith("| `spec.displayName` | string | ")
    row = next(r for r in rows if r.startswith("| `spec.quota` "))
    assert "| map[string]int-or-string |" in row
    assert crd_reference._escape("a|b <t> *.com x_y `c<d>`") == "a\\|b &lt;t&gt; \\*.com x\\_y `c<d>`"


def test_update_needs_the_markers_once():
    with pytest.raises(ValueError, match="markers"):
        crd_reference.update("no markers here", "| table |\n")
    text = f"before\n{crd_reference.START}\nold\n{crd_reference.END}\nafter"
    assert crd_reference.update(text, "new\n") == f"before\n{crd_reference.START}\nnew\n{crd_reference.END}\nafter"


def test_check_mode_reports_a_stale_readme_and_writes_nothing(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{crd_reference.START}\nstale\n{crd_reference.END}\n")
    crd = str(ROOT / "crds/tenant.yaml")
    assert crd_reference.main([crd, str(readme), "--check"]) == 1
    assert "run `make docs`" in capsys.readouterr().err and "stale" in readme.read_text()
    assert crd_reference.main([crd, str(readme)]) == 0
    assert crd_reference.main([crd, str(readme), "--check"]) == 0
