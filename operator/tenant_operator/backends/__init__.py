"""Backends: one package per backend (`<name>/client.py` speaks to the service,
`<name>/component.py` turns a Tenant into its state there), on the shared
rules and deletion interface of `base.py`."""

from __future__ import annotations

from tenant_operator.config import OperatorConfig
from tenant_operator.kube.client import Kube


def build_backends(cfg: OperatorConfig, kube: Kube) -> list:
    """All components, in reconcile and purge order; each reports NotConfigured
    when a tenant needs a backend the config lacks."""
    from tenant_operator.backends.mysql.component import MySQLComponent
    from tenant_operator.backends.objectstore.component import ObjectStorageComponent
    from tenant_operator.backends.rabbitmq.component import RabbitMQComponent
    from tenant_operator.backup.component import BackupComponent
    from tenant_operator.operations.drills import DrillComponent
    mysql, backup = MySQLComponent(cfg, kube), BackupComponent(cfg, kube)
    mysql.final_dump = backup.dump_service
    backup.owned_services = mysql.owned_services
    return [mysql, ObjectStorageComponent(cfg, kube), RabbitMQComponent(cfg, kube), backup,
            DrillComponent(cfg, kube, backup.rendered)]
