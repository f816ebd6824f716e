"""The database of an inventory, as the kind its `database.kind` names: PostgreSQL
(deployer.commands.backup) or MariaDB / MySQL (deployer.commands.mariadb). Both have the same
methods (dump, verify, restore, restore_once, fence, unfence, migration_env, migration_over,
prove, backup_path, scratch_name): the plans call them and never ask which kind it is."""

from __future__ import annotations

from .backup import Postgres
from .mariadb import MariaDB

Db = Postgres | MariaDB


def of(cfg) -> Db:
    """`cfg`: the inventory's database section (deployer.config.inventory.Database)."""
    if cfg.kind == "postgresql":
        return Postgres.of(cfg)
    return MariaDB.of(cfg)
