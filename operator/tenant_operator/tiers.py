"""The tier table: what standard, premium and business tenants get by default.

Operator config may override any figure (config `tiers.<tier>.<section>.<key>`);
a Tenant's `spec.quota` / `spec.limits` override single keys for that tenant.
No tier sets `podSecurity` here: a tier without one uses the config's
`defaults.podSecurity` (built-in restricted), and `tiers.<tier>.podSecurity`
overrides that for one tier.
"""

from __future__ import annotations

import copy

TIER_NAMES = ("standard", "premium", "business")

DEFAULT_TIERS: dict[str, dict] = {
    "standard": {
        "quota": {
            "requests.cpu": "2", "requests.memory": "4Gi",
            "limits.cpu": "4", "limits.memory": "8Gi",
            "pods": "20", "persistentvolumeclaims": "5",
            "requests.storage": "50Gi", "services.loadbalancers": "0",
            "services.nodeports": "0",
        },
        "limits": {
            "default": {"cpu": "500m", "memory": "512Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
            "max": {"cpu": "2", "memory": "4Gi"},
        },
        "mysql": {"maxUserConnections": 20},
        "rabbitmq": {"maxConnections": 50, "maxQueues": 50},
        "objectStorage": {"quotaGiB": 50},
    },
    "premium": {
        "quota": {
            "requests.cpu": "4", "requests.memory": "8Gi",
            "limits.cpu": "8", "limits.memory": "16Gi",
            "pods": "50", "persistentvolumeclaims": "10",
            "requests.storage": "200Gi", "services.loadbalancers": "1",
            "services.nodeports": "0",
        },
        "limits": {
            "default": {"cpu": "1", "memory": "1Gi"},
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
            "max": {"cpu": "4", "memory": "8Gi"},
        },
        "mysql": {"maxUserConnections": 50},
        "rabbitmq": {"maxConnections": 200, "maxQueues": 200},
        "objectStorage": {"quotaGiB": 200},
    },
    "business": {
        "quota": {
            "requests.cpu": "16", "requests.memory": "32Gi",
            "limits.cpu": "32", "limits.memory": "64Gi",
            "pods": "200", "persistentvolumeclaims": "50",
            "requests.storage": "1Ti", "services.loadbalancers": "3",
            "services.nodeports": "0",
        },
        "limits": {
            "default": {"cpu": "2", "memory": "2Gi"},
            "defaultRequest": {"cpu": "500m", "memory": "512Mi"},
            "max": {"cpu": "8", "memory": "16Gi"},
        },
        "mysql": {"maxUserConnections": 200},
        "rabbitmq": {"maxConnections": 1000, "maxQueues": 1000},
        "objectStorage": {"quotaGiB": 1024},
    },
}


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (dicts merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
