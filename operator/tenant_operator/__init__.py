"""tenant-operator: one Tenant resource in, a provisioned SaaS tenant out."""

GROUP = "tenancy.dev"
VERSION = "v1alpha1"
PLURAL = "tenants"
KIND = "Tenant"
API_VERSION = f"{GROUP}/{VERSION}"

__version__ = "0.1.0"
