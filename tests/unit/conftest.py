"""Unit tests do no I/O: host names in test configurations are never looked up.

Loading a configuration derives the tenants' egress to each backend, resolving
a host name that is neither an IP nor a Service name (egress.py). Here every
such name resolves to one documentation address (TEST-NET-1) unless a test
installs its own answers with the `resolver` fixture. This is set when the
test package is imported, before the modules that load configurations at
import time."""

from __future__ import annotations

import pytest
from tenant_operator import egress

UNIT_TEST_ADDRESS = "192.0.2.1"


def _unit_test_resolver(host: str) -> list[str]:
    return [UNIT_TEST_ADDRESS]


egress.resolve_host = _unit_test_resolver


@pytest.fixture
def resolver(monkeypatch):
    """`resolver.answers[host] = [addresses]`; a host not listed does not resolve.
    `resolver.asked` lists the lookups made."""
    class Fake:
        def __init__(self):
            self.answers: dict[str, list[str]] = {}
            self.asked: list[str] = []

        def __call__(self, host: str) -> list[str]:
            self.asked.append(host)
            return list(self.answers.get(host, []))

    fake = Fake()
    monkeypatch.setattr(egress, "resolve_host", fake)
    return fake
