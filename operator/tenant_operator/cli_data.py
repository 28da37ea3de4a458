"""Subcommands that act on tenant data (backup, restore, verify); each lives
in its own module and registers itself here."""

from __future__ import annotations


def add_commands(sub) -> None:
    for module_name in ("tenant_operator.backup.cli", "tenant_operator.verify"):
        try:
            module = __import__(module_name, fromlist=["add_command"])
        except ModuleNotFoundError:
            continue
        module.add_command(sub)
