"""Unit tests never read the ssh config, keys, known_hosts or agent of whoever runs them: HOME
is an empty temporary directory and SSH_AUTH_SOCK is unset."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home
