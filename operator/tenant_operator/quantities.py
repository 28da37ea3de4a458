"""Kubernetes quantities ('500m', '2Gi', '1e3') and ResourceQuota key names,
shared by the Tenant spec and the operator config (policy.maxQuota)."""

from __future__ import annotations

import re
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from tenant_operator import contract

# ResourceQuota names: standard ones (`pods`, `requests.cpu`), extended resources
# (`requests.nvidia.com/gpu`), storage-class scoped ones and `count/<resource>`.
QUOTA_KEYS = contract.QUOTA_KEY_RE

# The Kubernetes quantity grammar, non-negative: a decimal number and an optional
# binary SI suffix, decimal exponent or decimal SI suffix. Stricter than
# parse_quantity, which also takes ' 2', '1_000', 'inf' or '1K'.
_QUANTITY = re.compile(contract.QUANTITY)


def parse(value: object) -> Decimal:
    """The value of a quantity (str or number) as a Decimal; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    text = str(value)
    if not _QUANTITY.fullmatch(text):
        raise ValueError(f"{value!r} is not a quantity")
    return Decimal(parse_quantity(text))
