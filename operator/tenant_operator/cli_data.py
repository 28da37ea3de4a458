"""Subcommands that act on tenant data, each in its own module."""

from __future__ import annotations


def add_commands(sub) -> None:
    from tenant_operator import verify
    from tenant_operator.backup import cli as backup_cli
    backup_cli.add_command(sub)
    verify.add_command(sub)
