"""The input contract, operator side: every malformed spec of contract_cases is
refused by spec.parse with its field named, every valid one parses, and the CRD
carries the very patterns and limits spec.py applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tenant_operator import config, contract, spec
from tenant_operator.errors import SpecError

from .contract_cases import MALFORMED, VALID

CFG = config.from_dict({"mysql": {"servers": {"main": {"host": "db"}}},
                        "objectStorage": {"endpoint": "http://s3:9000"},
                        "rabbitmq": {"managementUrl": "http://mq:15672"}})
CRD = yaml.safe_load((Path(__file__).parents[2] / "crds" / "tenant.yaml").read_text())
SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def body(case) -> dict:
    return {"metadata": {"name": case.name or "acme", "uid": "u1"}, "spec": case.spec}


@pytest.mark.parametrize("case", MALFORMED, ids=[c.id for c in MALFORMED])
def test_the_operator_refuses_each_malformed_spec_naming_the_field(case):
    with pytest.raises(SpecError) as info:
        spec.parse(body(case), CFG)
    assert info.value.field == case.field, str(info.value)
    assert str(info.value).startswith(case.field + ": ") and info.value.message


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_the_operator_parses_each_valid_edge(case):
    assert spec.parse(body(case), CFG).name == "acme"


def test_the_cases_cover_the_issue():
    assert len(MALFORMED) >= 34
    assert len({c.id for c in MALFORMED + VALID}) == len(MALFORMED) + len(VALID)
    assert any(c.api is None for c in MALFORMED) and sum(c.api is not None for c in MALFORMED) >= 34


def _cel_regexes(node: dict) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def test_the_crd_carries_spec_pys_patterns():
    assert SPEC["backup"]["properties"]["schedule"]["pattern"] == contract.CRON
    assert SPEC["deletion"]["properties"]["gracePeriod"]["pattern"] == contract.GRACE_PERIOD
    assert str(contract.MAX_GRACE_SECONDS) in _cel_regexes(SPEC["deletion"]["properties"]["gracePeriod"])[0]
    ingress = SPEC["ingress"]["properties"]
    assert ingress["className"]["pattern"] == ingress["clusterIssuer"]["pattern"] == contract.DNS_SUBDOMAIN
    admin = SPEC["admins"]["items"]
    assert admin["properties"]["namespace"]["pattern"] == contract.DNS_LABEL
    assert any(contract.DNS_SUBDOMAIN in rule for rule in _cel_regexes(admin))
    assert any(contract.QUOTA_KEY in rule for rule in _cel_regexes(SPEC["quota"]))
    quantities = [SPEC["quota"]["additionalProperties"]] + [
        res for section in SPEC["limits"]["properties"].values() for res in section["properties"].values()]
    assert len(quantities) == 13
    for q in quantities:
        assert q["pattern"] == contract.QUANTITY and q["minimum"] == 0


def test_the_crd_list_limits_are_spec_pys():
    def at(path: str) -> dict:
        node = SPEC
        parts = path.split(".")[1:]
        for i, part in enumerate(parts):
            node = node[part] if i == 0 else node["properties"][part]
        return node
    for path, limit in contract.MAX_ITEMS.items():
        node = at(path)
        assert node.get("maxItems", node.get("maxProperties")) == limit, path
