"""OpenSSH conventions for the connections of a run: ~/.ssh/config (read with paramiko's
SSHConfig), ProxyJump chains, the default keys and known_hosts files.

Who wins, for each host of an inventory (its `address` is looked up in the ssh config, so it
may be an alias defined there):

- address: the ssh config's `HostName` (else the inventory's address itself);
- port: the host's `port`, else `ssh.port` when set, else the ssh config's `Port`, else 22;
- user: the host's `user`, else `ssh.user` when set, else the ssh config's `User`, else root;
- jump hosts: the host's `jump`, else `ssh.jump`, else the ssh config's `ProxyJump`;
  ``none`` at any of these levels means a direct connection;
- keys: `ssh.key` / DEPLOYER_SSH_KEY[_DATA] when set (then the ssh config's `IdentityFile`s,
  and neither the agent nor the default keys); else the `IdentityFile`s, the ssh-agent (unless
  `IdentitiesOnly yes`) and, when no `IdentityFile` applies, ~/.ssh/id_ed25519, id_ecdsa, id_rsa;
- host keys: always checked; `ssh.known_hosts` / DEPLOYER_KNOWN_HOSTS[_DATA] when set, else
  the ssh config's `UserKnownHostsFile` (default ~/.ssh/known_hosts) and /etc/ssh/ssh_known_hosts.
  A key is looked up under `HostKeyAlias` when the ssh config sets one, else under the address
  (``[address]:port`` off port 22) and under the alias the inventory gave.

A jump item is ``[user@]host[:port]``, `host` possibly an alias; its user and port, when
written, win over the ssh config's; its user defaults to the ssh config's, then `ssh.user`; its
port to the ssh config's, then 22. As with OpenSSH, the first item's own `ProxyJump` (from the
ssh config) is followed too.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

CONFIG_DEFAULT = "~/.ssh/config"
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
MAX_HOPS = 10

_ITEM_RE = re.compile(
    r"(?:ssh://)?(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
    r"(?::(?P<port>\d{1,5}))?\Z")
_INCLUDE_RE = re.compile(r"\s*include(?:\s*=\s*|\s+)(.+)", re.IGNORECASE)


class SSHConfigError(ValueError):
    """A problem with the ssh config or a jump chain; the message names where."""


def parse_jump(item: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (host: a name, an IPv4 address, ``[IPv6]`` or an ssh config alias)
    as (user or None, host, port or None)."""
    m = _ITEM_RE.match(item.strip())
    port = int(m["port"]) if m and m["port"] else None
    if not m or (port is not None and not 1 <= port <= 65535):
        raise ValueError(f"expected [user@]host[:port] (host: a name, an address or an ssh config "
                         f"alias), got {item!r}")
    return m["user"], m["v6"] or m["host"], port


def split_chain(text: str) -> list[str]:
    """The items of a jump chain ``a,b,c`` (ssh's -J / ProxyJump), each checked; ``none``: []."""
    text = text.strip()
    if text.lower() == "none":
        return []
    items = [i.strip() for i in text.split(",")]
    if not text or any(not i for i in items):
        raise ValueError(f"expected [user@]host[:port] items separated by commas (or none), got {text!r}")
    for item in items:
        parse_jump(item)
    return items


def _bracket(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def expand(path: str) -> str:
    return os.path.expanduser(path)


@dataclass(frozen=True)
class Endpoint:
    """How to reach one SSH server: a host of the inventory or a jump host in front of it."""

    name: str  # the inventory's host name; for a jump host, the item as written
    address: str
    port: int
    user: str
    jumps: tuple[Endpoint, ...] = ()  # the hops in front of it, the first connected first
    alias: str = ""  # the name it was given when its ssh config HostName differs
    host_key_alias: str = ""
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    #: known_hosts files from the ssh config (used when the run has no ssh.known_hosts)
    known_hosts: tuple[str, ...] = ()

    def host_key_names(self) -> list[str]:
        """The names its host key may be recorded under, the first winning."""
        if self.host_key_alias:
            return [self.host_key_alias]
        names = [_bracket(self.address, self.port)]
        if self.alias and self.alias != self.address:
            names.append(_bracket(self.alias, self.port))
        return names

    def label(self) -> str:
        return f"{self.name} ({self.address}:{self.port})"


def _inline(path: str, depth: int = 0) -> str:
    """The text of an ssh config with its `Include` lines replaced by the files they name
    (globs; relative paths are relative to ~/.ssh, as for OpenSSH's user config)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        m = _INCLUDE_RE.match(line)
        if not m:
            out.append(line)
            continue
        if depth >= 16:
            raise SSHConfigError(f"{path}: Include nested more than 16 deep")
        for pattern in shlex.split(m[1]):
            pattern = expand(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(expand("~/.ssh"), pattern)
            for included in sorted(glob.glob(pattern)):
                out.append(_inline(included, depth + 1))
    return "\n".join(out) + "\n"


def read_config(setting: str | None):
    """The ssh config to use: `setting` (a path; ``none``: no ssh config), else ~/.ssh/config
    when it exists. A paramiko SSHConfig, or None."""
    if setting is not None and setting.strip().lower() == "none":
        return None
    path = expand(setting or CONFIG_DEFAULT)
    if setting is None and not os.path.isfile(path):
        return None
    import paramiko

    try:
        text = _inline(path)
    except OSError as exc:
        raise SSHConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SSHConfigError(f"{path}: not a text file") from None
    try:
        return paramiko.SSHConfig.from_text(text)
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise SSHConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Defaults:
    """The inventory's `ssh:` settings that matter here; *_given: set in some layer."""

    user: str = "root"
    user_given: bool = False
    port: int = 22
    port_given: bool = False
    jump: str | None = None
    known_hosts_given: bool = False


class Resolver:
    """Endpoints of the inventory's hosts, with the ssh config applied."""

    def __init__(self, config: Any, defaults: Defaults):
        self.config = config
        self.d = defaults

    def lookup(self, name: str) -> dict[str, Any]:
        if self.config is None:
            return {"hostname": name}
        return dict(self.config.lookup(name))

    def _common(self, opts: dict[str, Any]) -> dict[str, Any]:
        files = tuple(expand(f) for f in opts.get("identityfile") or ())
        known: tuple[str, ...] = ()
        if not self.d.known_hosts_given:
            user_files = shlex.split(opts.get("userknownhostsfile") or USER_KNOWN_HOSTS)
            global_files = shlex.split(opts.get("globalknownhostsfile") or GLOBAL_KNOWN_HOSTS)
            known = tuple(expand(f) for f in user_files + global_files if f.lower() != "none")
        return {"identity_files": files,
                "identities_only": str(opts.get("identitiesonly", "no")).lower() == "yes",
                "host_key_alias": opts.get("hostkeyalias") or "",
                "known_hosts": known}

    @staticmethod
    def _port(value: Any, where: str) -> int | None:
        if value is None:
            return None
        try:
            port = int(value)
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise SSHConfigError(f"{where}: Port {value!r}: expected 1..65535")
        return port

    def host(self, name: str, address: str, *, port: int | None = None, user: str | None = None,
             jump: str | None = None) -> Endpoint:
        """The endpoint of the inventory host `name` (`address`, `port`, `user`, `jump`: the
        host's own keys, None when not set)."""
        opts = self.lookup(address)
        hostname = opts.get("hostname") or address
        port = (port or (self.d.port if self.d.port_given else None)
                or self._port(opts.get("port"), f"ssh config for {address}") or self.d.port)
        user = user or (self.d.user if self.d.user_given else None) or opts.get("user") or self.d.user
        chain = jump if jump is not None else self.d.jump
        if chain is None:
            chain = opts.get("proxyjump")
            if chain and _names_itself(chain, address):
                chain = None  # the jump host itself, matched by its own pattern
        jumps = self.chain(chain, name) if chain else ()
        return Endpoint(name, hostname, port, user, jumps=jumps,
                        alias=address if hostname != address else "", **self._common(opts))

    def chain(self, text: str, target: str, depth: int = 0, path: tuple[str, ...] = ()) -> tuple[Endpoint, ...]:
        """The hops of the jump chain `text` in front of host `target`."""
        try:
            items = split_chain(text)
        except ValueError as exc:
            raise SSHConfigError(f"{target}: jump: {exc}") from None
        hops: list[Endpoint] = []
        for i, item in enumerate(items):
            user, host, port = parse_jump(item)
            opts = self.lookup(host)
            hostname = opts.get("hostname") or host
            if i == 0:
                own = opts.get("proxyjump")
                if own and _names_itself(own, host):
                    own = None  # `Host *.corp` + `ProxyJump bastion.corp` matching the bastion too
                if own and own.strip().lower() != "none":
                    if depth >= MAX_HOPS or item in path:
                        raise SSHConfigError(f"{target}: jump: ProxyJump loops or is longer than "
                                             f"{MAX_HOPS} hops: {' -> '.join((*path, item))}")
                    hops.extend(self.chain(own, target, depth + 1, (*path, item)))
            hops.append(Endpoint(
                item, hostname, port or self._port(opts.get("port"), f"ssh config for {host}") or 22,
                user or opts.get("user") or self.d.user,
                alias=host if hostname != host else "", **self._common(opts)))
        if len(hops) > MAX_HOPS:
            raise SSHConfigError(f"{target}: jump: more than {MAX_HOPS} hops")
        return tuple(hops)


def _names_itself(chain: str, host: str) -> bool:
    """Whether the ProxyJump `chain` of `host` goes through `host` itself (ignored, as a jump
    host's config block often matches the pattern that sends other hosts through it)."""
    try:
        return any(parse_jump(item)[1] == host for item in split_chain(chain))
    except ValueError:
        return False


def default_key_files() -> list[str]:
    return [expand(k) for k in DEFAULT_KEYS]
