"""OpenSSH conventions: ~/.ssh/config aliases, ProxyJump chains, precedence, default keys and
the agent, known_hosts names; the connections through real (in-process) SSH servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from deployer.config import load_config
from deployer.errors import ConfigError, ConnectError
from deployer.session import ssh_settings
from deployer.sshconfig import Endpoint, parse_jump, split_chain
from deployer.transport import Transport

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(_own_home) -> Path:
    ssh = _own_home / ".ssh"
    ssh.mkdir(exist_ok=True)
    (ssh / "known_hosts").touch()
    return _own_home


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "playbooks", tmp_path / "playbooks")
    (tmp_path / "hosts").mkdir()
    return tmp_path


def inventory(root: Path, hosts: list[dict], **top: Any) -> None:
    data = {"playbook": "demo", "repo": "/srv/repo.git", **top, "hosts": hosts}
    hosts[0].setdefault("roles", ["web", "worker", "migrate"])
    for h in hosts[1:]:
        h.setdefault("roles", ["web"])
    (root / "hosts" / "prod.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def ssh_config(home: Path, text: str) -> None:
    (home / ".ssh" / "config").write_text(text)


def load(root: Path, **kw):
    return load_config("prod", root=root, environ=kw.pop("environ", {}), **kw)


def error_of(root: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load(root)
    return exc.value.message


# ------------------------------------------------------------------ resolving


def test_an_address_may_be_an_ssh_config_alias(root, home):
    ssh_config(home, "Host app1\n  HostName 10.1.0.11\n  User alice\n  Port 2222\n"
                     "  IdentityFile ~/.ssh/app_key\n  IdentityFile %d/.ssh/other\n"
                     "Host *\n  ServerAliveInterval 30\n")
    inventory(root, [{"name": "web1", "address": "app1"}, {"name": "web2", "address": "10.1.0.12"}])
    cfg = load(root)
    web1, web2 = cfg.host("web1"), cfg.host("web2")
    assert (web1.address, web1.port, web1.user) == ("10.1.0.11", 2222, "alice")
    assert web1.endpoint.identity_files == (f"{home}/.ssh/app_key", f"{home}/.ssh/other")
    assert web1.endpoint.host_key_names() == ["[10.1.0.11]:2222", "[app1]:2222"]
    assert web1.endpoint.known_hosts[0] == f"{home}/.ssh/known_hosts"
    # the templates' and health checks' {address} is the real address
    assert cfg.template_values(web1)["address"] == "10.1.0.11"
    assert (web2.address, web2.port, web2.user, web2.endpoint.jumps) == ("10.1.0.12", 22, "root", ())
    assert web2.endpoint.host_key_names() == ["10.1.0.12"]


def test_inventory_values_win_over_the_ssh_config(root, home):
    ssh_config(home, "Host app*\n  User alice\n  Port 2222\n  ProxyJump gw.example.com\n")
    hosts = [{"name": "web1", "address": "app1", "user": "bob", "port": 2200, "jump": "none"},
             {"name": "web2", "address": "app2"}]
    inventory(root, hosts)
    cfg = load(root)
    assert (cfg.host("web1").user, cfg.host("web1").port, cfg.host("web1").endpoint.jumps) == ("bob", 2200, ())
    assert (cfg.host("web2").user, cfg.host("web2").port) == ("alice", 2222)  # ssh.* unset: the config's
    assert [j.address for j in cfg.host("web2").endpoint.jumps] == ["gw.example.com"]
    # ssh.user / ssh.port set (in any layer) win over the config's User / Port
    inventory(root, [{"name": "web1", "address": "app1"}], ssh={"user": "deploy", "port": 22})
    web1 = load(root).host("web1")
    assert (web1.user, web1.port) == ("deploy", 22)
    inventory(root, [{"name": "web1", "address": "app1"}])
    assert load(root, environ={"DEPLOYER_SSH_USER": "ci"}).host("web1").user == "ci"
    # ssh.jump wins over ProxyJump; a host's jump over ssh.jump
    inventory(root, [{"name": "web1", "address": "app1"}, {"name": "web2", "address": "app2", "jump": "j2"}],
              ssh={"jump": "j1"})
    cfg = load(root)
    assert [j.name for j in cfg.host("web1").endpoint.jumps] == ["j1"]
    assert [j.name for j in cfg.host("web2").endpoint.jumps] == ["j2"]


def test_jump_without_user_is_a_host_with_the_default_user(root, home):
    inventory(root, [{"name": "web1", "address": "10.0.0.1"}], ssh={"jump": "bastion.example.com"})
    (jump,) = load(root).host("web1").endpoint.jumps
    assert (jump.address, jump.port, jump.user) == ("bastion.example.com", 22, "root")
    inventory(root, [{"name": "web1", "address": "10.0.0.1"}],
              ssh={"user": "deploy", "jump": "ops@bastion.example.com:2222"})
    (jump,) = load(root).host("web1").endpoint.jumps
    assert (jump.address, jump.port, jump.user) == ("bastion.example.com", 2222, "ops")
    inventory(root, [{"name": "web1", "address": "10.0.0.1"}], ssh={"user": "deploy", "jump": "b.example.com"})
    assert load(root).host("web1").endpoint.jumps[0].user == "deploy"


def test_jump_chains_with_aliases_and_the_first_hops_own_proxyjump(root, home):
    ssh_config(home, "\n".join([
        "Host outer", "  HostName 198.51.100.1", "  User gate", "  Port 2022",
        "Host inner", "  HostName 10.0.0.2", "  ProxyJump outer", "  IdentityFile ~/.ssh/inner_key",
        "Host app", "  HostName 10.0.0.3", "  ProxyJump inner,ops@10.0.0.4:2200",
        "Host *.corp", "  ProxyJump gw.corp",  # matches gw.corp itself: ignored for it
    ]))
    inventory(root, [{"name": "web1", "address": "app"}, {"name": "web2", "address": "x.corp"},
                     {"name": "web3", "address": "gw.corp"}])
    cfg = load(root)
    hops = cfg.host("web1").endpoint.jumps
    assert [(h.name, h.address, h.port, h.user) for h in hops] == [
        ("outer", "198.51.100.1", 2022, "gate"), ("inner", "10.0.0.2", 22, "root"),
        ("ops@10.0.0.4:2200", "10.0.0.4", 2200, "ops")]
    assert hops[1].identity_files == (f"{home}/.ssh/inner_key",)
    assert hops[0].host_key_names() == ["[198.51.100.1]:2022", "[outer]:2022"]
    assert [h.name for h in cfg.host("web2").endpoint.jumps] == ["gw.corp"]
    assert cfg.host("web3").endpoint.jumps == ()


def test_a_proxyjump_loop_is_an_error_naming_the_host(root, home):
    ssh_config(home, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    inventory(root, [{"name": "web1", "address": "10.0.0.1", "jump": "a"}])
    assert error_of(root) == ("hosts/prod.yaml: hosts[0].jump: web1: jump: ProxyJump loops or is longer "
                              "than 10 hops: a -> b -> a")


def test_ssh_config_none_and_paths(root, home):
    ssh_config(home, "Host app1\n  HostName 10.1.0.11\n")
    inventory(root, [{"name": "web1", "address": "app1"}], ssh={"config": "none"})
    assert load(root).host("web1").address == "app1"
    (root / "hosts" / "ssh_config").write_text("Host app1\n  HostName 10.9.9.9\n"
                                               "Include extra.conf\n")
    (home / ".ssh" / "extra.conf").write_text("Host app2\n  HostName 10.9.9.10\n  HostKeyAlias app2-key\n")
    inventory(root, [{"name": "web1", "address": "app1"}, {"name": "web2", "address": "app2"}],
              ssh={"config": "ssh_config"})
    cfg = load(root)
    assert cfg.ssh.config == str(root / "hosts" / "ssh_config")
    assert cfg.host("web1").address == "10.9.9.9"
    assert cfg.host("web2").endpoint.host_key_names() == ["app2-key"]
    inventory(root, [{"name": "web1", "address": "app1"}], ssh={"config": "nope"})
    assert error_of(root) == (f"hosts/prod.yaml: ssh.config: {root}/hosts/nope: cannot read: "
                              "No such file or directory")
    ssh_config(home, "Host app1\n  = nothing\n")
    inventory(root, [{"name": "web1", "address": "app1"}])
    assert "/.ssh/config: Unparsable line = nothing" in error_of(root)


def test_invalid_jumps_are_config_errors():
    for good in ("bastion", "u@b.example.com:22", "a,b,c", "[2001:db8::1]:2222", "ssh://u@h:22", "none"):
        split_chain(good)
    assert parse_jump("bastion.example.com") == (None, "bastion.example.com", None)
    assert parse_jump("ops@[2001:db8::1]:2222") == ("ops", "2001:db8::1", 2222)
    for bad in ("", "a,,b", "u@", "@h", "h:0", "h:99999", "a b", "u@@h"):
        with pytest.raises(ValueError):
            split_chain(bad)


def test_invalid_jump_in_the_inventory(root, home):
    inventory(root, [{"name": "web1", "address": "10.0.0.1", "jump": "a,,b"}], ssh={"jump": "u@@h"})
    assert error_of(root).splitlines() == [
        "hosts/prod.yaml: ssh.jump: expected [user@]host[:port] (host: a name, an address or an ssh "
        "config alias), got 'u@@h'",
        "hosts/prod.yaml: hosts[0].jump: expected [user@]host[:port] items separated by commas (or "
        "none), got 'a,,b'"]


# ------------------------------------------------------------------ connecting


class _Server(paramiko.ServerInterface):
    def __init__(self, user: str, keys: list[paramiko.PKey], forwards: list):
        self.user, self.keys, self.forwards = user, keys, forwards

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = username == self.user and any(k.get_base64() == key.get_base64() for k in self.keys)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        self.forwards.append((chanid, destination))
        return paramiko.OPEN_SUCCEEDED


class SSHServer:
    """A real SSH server on 127.0.0.1 (paramiko's server side): public-key auth for `user`,
    direct-tcpip forwarding (a jump host); `forwards` lists the destinations asked for."""

    def __init__(self, user: str = "deploy", keys: list[paramiko.PKey] | None = None):
        self.host_key = paramiko.ECDSAKey.generate()
        self.user, self.keys = user, list(keys or [])
        self.forwards: list = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def known(self, name: str) -> str:
        return f"{name} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client) -> None:
        t = paramiko.Transport(client)
        self.transports.append(t)
        t.add_server_key(self.host_key)
        server = _Server(self.user, self.keys, self.forwards)
        try:
            t.start_server(server=server)
        except (paramiko.SSHException, EOFError, OSError):  # the client refused us (a reset)
            return
        while t.is_active():
            chan = t.accept(0.5)
            if chan is None:
                continue
            dest = next((d for cid, d in server.forwards if cid == chan.get_id()), None)
            if dest is not None:
                threading.Thread(target=_relay, args=(chan, dest), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for t in self.transports:
            t.close()


def _relay(chan, dest) -> None:
    try:
        sock = socket.create_connection(dest, timeout=5)
    except OSError:
        chan.close()
        return

    def pump(src, dst) -> None:
        try:
            while data := src.recv(32768):
                dst.sendall(data)
        except (OSError, EOFError):  # a paramiko channel ends with EOFError when its transport is gone
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except (OSError, EOFError):
                    pass

    threading.Thread(target=pump, args=(chan, sock), daemon=True).start()
    pump(sock, chan)


@pytest.fixture
def client_key(home) -> paramiko.PKey:
    key = paramiko.ECDSAKey.generate()
    return key


@pytest.fixture
def servers(client_key):
    made: list[SSHServer] = []

    def make(**kw) -> SSHServer:
        kw.setdefault("keys", [client_key])
        made.append(SSHServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _connect(cfg, name: str = "web1"):
    t = Transport(ssh_settings(cfg))
    try:
        conn = t.connection(cfg.host(name).endpoint)
        assert conn.is_connected
    finally:
        t.close()


def test_default_key_and_host_key_under_the_alias_through_a_bastion(root, home, servers, client_key):
    bastion, app = servers(), servers()
    client_key.write_private_key_file(str(home / ".ssh" / "id_ecdsa"))
    ssh_config(home, f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User deploy\n"
                     f"Host app\n  HostName 127.0.0.1\n  Port {app.port}\n  ProxyJump bastion\n  User deploy\n")
    # the bastion's key under its alias, the app's under [HostName]:port
    (home / ".ssh" / "known_hosts").write_text(bastion.known(f"[bastion]:{bastion.port}")
                                               + app.known(f"[127.0.0.1]:{app.port}"))
    inventory(root, [{"name": "web1", "address": "app"}])
    cfg = load(root)
    assert [j.name for j in cfg.host("web1").endpoint.jumps] == ["bastion"]
    _connect(cfg)
    assert [d for _, d in bastion.forwards] == [("127.0.0.1", app.port)]  # through the bastion
    assert app.forwards == []


def test_unknown_or_changed_jump_host_key_is_refused_naming_it(root, home, servers, client_key):
    bastion, app = servers(), servers()
    client_key.write_private_key_file(str(home / ".ssh" / "id_ecdsa"))
    ssh_config(home, f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User deploy\n")
    (home / ".ssh" / "known_hosts").write_text(app.known(f"[127.0.0.1]:{app.port}"))
    inventory(root, [{"name": "web1", "address": "127.0.0.1", "port": app.port, "user": "deploy",
                      "jump": "bastion"}])
    cfg = load(root)
    with pytest.raises(ConnectError, match=(rf"web1: jump host bastion \(127\.0\.0\.1:{bastion.port}\): "
                                            rf"host key unknown; add it to {home}/\.ssh/known_hosts")):
        _connect(cfg)
    assert bastion.forwards == []
    other = paramiko.ECDSAKey.generate()
    (home / ".ssh" / "known_hosts").write_text(
        app.known(f"[127.0.0.1]:{app.port}")
        + f"[bastion]:{bastion.port} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(ConnectError, match=rf"web1: jump host bastion \(127\.0\.0\.1:{bastion.port}\): "
                                           "host key CHANGED"):
        _connect(load(root))


def test_a_host_that_refuses_every_key_names_the_host_and_what_was_tried(root, home, servers):
    app = servers(keys=[])  # accepts no key
    (home / ".ssh" / "known_hosts").write_text(app.known(f"[127.0.0.1]:{app.port}"))
    inventory(root, [{"name": "web1", "address": "127.0.0.1", "port": app.port, "user": "deploy"}])
    with pytest.raises(ConnectError) as exc:
        _connect(load(root))
    assert str(exc.value) == (
        f"web1 (127.0.0.1): authentication as deploy failed; tried: no ssh-agent (SSH_AUTH_SOCK is not "
        f"set); not found: {home}/.ssh/id_ed25519, {home}/.ssh/id_ecdsa, {home}/.ssh/id_rsa (set ssh.key, an "
        "IdentityFile in the ssh config, or load the key in ssh-agent)")
    paramiko.ECDSAKey.generate().write_private_key_file(str(home / ".ssh" / "id_ecdsa"))
    with pytest.raises(ConnectError, match=rf"web1 \(127\.0\.0\.1\): authentication as deploy failed; "
                                           rf"tried: key {home}/\.ssh/id_ecdsa, no ssh-agent"):
        _connect(load(root))


def test_the_ssh_agent_is_used_when_no_key_is_named(root, home, servers, client_key, tmp_path, monkeypatch):
    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        pytest.skip("no ssh-agent on this machine")
    app = servers()
    (home / ".ssh" / "known_hosts").write_text(app.known(f"[127.0.0.1]:{app.port}"))
    key_file = tmp_path / "agent_key"
    client_key.write_private_key_file(str(key_file))
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(key_file)], check=True, capture_output=True)
        inventory(root, [{"name": "web1", "address": "127.0.0.1", "port": app.port, "user": "deploy"}])
        _connect(load(root))
    finally:
        agent.terminate()
        agent.wait()


def test_an_inventory_key_is_the_only_one_offered(root, home, servers, client_key, tmp_path):
    app = servers()
    client_key.write_private_key_file(str(home / ".ssh" / "id_ecdsa"))  # would work, not offered
    wrong = tmp_path / "wrong_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(wrong))
    (home / ".ssh" / "known_hosts").write_text(app.known(f"[127.0.0.1]:{app.port}"))
    inventory(root, [{"name": "web1", "address": "127.0.0.1", "port": app.port, "user": "deploy"}],
              ssh={"key": str(wrong)})
    with pytest.raises(ConnectError, match=rf"authentication as deploy failed; tried: key {wrong} \("):
        _connect(load(root))


def test_endpoint_defaults_keep_plain_connections():
    ep = Endpoint("web1", "10.0.0.1", 22, "root")
    assert ep.host_key_names() == ["10.0.0.1"] and ep.jumps == () and ep.known_hosts == ()
