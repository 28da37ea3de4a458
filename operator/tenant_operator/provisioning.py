"""Builds the backend components the operator config asks for."""

from __future__ import annotations

from tenant_operator.config import OperatorConfig
from tenant_operator.kube.client import Kube


def build_backends(cfg: OperatorConfig, kube: Kube) -> list:
    return []
