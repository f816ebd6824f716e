"""Pending migrations (the playbook's migrate.pending step prints a JSON list of objects) are
read into `PendingMigration`s: the deploy decides maintenance mode from them, preflight lists them."""

from __future__ import annotations

import pytest

from deployer import preflight as P
from deployer.facts import PendingMigration, parse_pending


def test_pending_migrations_are_typed():
    out = '[{"name": "add_orders"}, {"version": 3, "online_safe": true}, {}, {"name": null}]\n'
    assert parse_pending(out) == [PendingMigration("add_orders", False), PendingMigration("3", True),
                                  PendingMigration(None, False), PendingMigration("None", False)]
    assert parse_pending("") == []
    for bad in ('{"a": 1}\n', '[1, 2]\n'):
        with pytest.raises(ValueError):
            parse_pending(bad)


def test_preflight_names_them_as_before():
    out = '[{"version": 3}, {}, {"name": "x", "online_safe": true}]\n'
    assert P.parse_pending(out, 0) == (
        True, "3 pending: 3 (not online-safe: maintenance mode), ? (not online-safe: maintenance mode), x")
    assert P.parse_pending("[1]\n", 0) == (False, "migrate.pending did not print a JSON list of objects")
