"""Sample Tenant objects shared by the unit tests."""

import copy

from tenant_operator import spec

PREMIUM = {
    "metadata": {"name": "client-abc", "generation": 3},
    "spec": {
        "displayName": "Client ABC",
        "tier": "premium",
        "domains": ["client-abc.example.com"],
        "billing": {"id": "sub_abc123", "costCenter": "CC-ABC-001"},
        "quota": {"pods": "60"},
        "databases": ["auth", "products", "orders"],
        "objectStorage": {"buckets": ["products", "sav"], "quotaGiB": 150},
        "messaging": {"queues": ["auth", "orders"]},
        "ingress": {"className": "nginx", "clusterIssuer": "letsencrypt-prod", "service": "api-gateway",
                    "port": 8100},
        "admins": [{"kind": "User", "name": "alice@client-abc.example.com"}],
        "backup": {"schedule": "0 2 * * *", "retention": {"daily": 30, "weekly": 12, "monthly": 12}},
        "deletion": {"gracePeriod": "720h", "policy": "Delete"},
    },
}


def parse_with(base: dict, cfg, **changes) -> spec.Tenant:
    """Parse a copy of `base` with top-level spec keys replaced (None removes the key)."""
    obj = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return spec.parse(obj, cfg)
