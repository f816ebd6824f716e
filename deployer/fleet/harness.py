"""The local fleet: real OpenSSH hosts in network + mount + UTS namespaces on this machine.

Each host is a holder process (`sleep infinity`) started with
`ip netns exec <ns> unshare --mount --uts`, which bind-mounts the host's own /srv, /tmp,
/root, /home/deploy and /etc/sudoers.d, sets its hostname and starts its services (sshd;
supervisord on web hosts, PostgreSQL on the db host, HAProxy on the lb host). Everything else
enters those namespaces with `nsenter -t <holder pid>`. `down()` kills every process in our
namespaces and deletes them, so nothing is left behind; `up()` starts with `down()` to clear
what a crash left.

Shaped like production: the app hosts (web, db) live on a private bridge (`dplbr1`,
10.78.0.0/24) that this machine has no address on; the jump host bastion1 and the load
balancer lb1 have a leg on each network (public `dplbr0`, 10.77.0.0/24, where this machine is
10.77.0.1). deployer reaches the hosts through the bastion (ProxyJump) as the OS user
`deploy`, which each host's sudo rules (derived from the playbook: deployer.privileges) let run
the few commands the playbook marks `{sudo}`; root cannot log in on the app hosts. What the
harness itself checks on a host (its sshd answering, ...) it checks from inside a namespace.

With `s3` (the default; `DEPLOYER_FLEET_S3=0` turns it off), `up()` also starts a real S3
server, SeaweedFS's `weed server -s3`, in its own network namespace on the fleet's bridge
(`s3`, 10.77.0.30:8333), with the bucket `deployer-state` and credentials written to
`<fleet_dir>/s3.env` (boto3's standard environment variables), and writes
`<fleet_dir>/inventory-s3.yaml`: the fleet's inventory with its state in that bucket.

Fault injection (`fleet.cut(host)`, `kill_sshd`, `fill_disk`, ...) lives in `faults.py`, a
mixin of `Fleet`, and the S3 server's part in `s3_part.py`, another; each host's own files and
the deploy user in `hostfs.py`; running commands and finding processes on this machine in
`procs.py`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import hostfs as H
from . import spec as S
from .faults import Faults
from .procs import FleetError, _alive, _kill, _links, _marked_pids, _netns_list, _port_open, _probe, _run
from .s3_part import S3Part

ROOT = Path(__file__).resolve().parents[2]


def fleet_dir() -> Path:
    return Path(os.environ.get("DEPLOYER_FLEET_DIR", ROOT / ".fleet")).resolve()


def require_root() -> None:
    if os.geteuid() != 0:
        raise FleetError(
            "fleet: needs root (network namespaces, bridges and mounts); run as root, e.g. `sudo inv fleet.up`"
        )
    for tool in ("ip", "unshare", "nsenter", "/usr/sbin/sshd", "ssh-keygen", "haproxy", "sudo", "useradd"):
        if not shutil.which(tool):
            raise FleetError(f"fleet: `{tool}` not found; run ./bootstrap to install the fleet's packages")


class Fleet(Faults, S3Part):
    """The local fleet, as recorded in `<fleet_dir>/fleet.json`."""

    def __init__(self, directory: Path | None = None):
        self.dir = directory or fleet_dir()
        self.state_file = self.dir / "fleet.json"

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> dict:
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    @property
    def spec(self) -> S.FleetSpec:
        st = self.state
        if not st:
            raise FleetError("fleet: not up (run `inv fleet.up`)")
        return S.FleetSpec.of(st["web"], production=st.get("production", False))

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def repo(self) -> Path:
        return self.dir / "demo-app"

    def hostdir(self, name: str) -> Path:
        return self.dir / "hosts" / name

    def holder_pid(self, name: str) -> int:
        return int(self.state["pids"][name])

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self, web: int = 3, *, keep_data: bool = False, s3: bool | None = None, production: bool = False,
           log=print) -> dict:
        """Bring up a fleet of `web` web hosts, db1, lb1 and the jump host bastion1 (and the S3 server unless `s3` is
        False or DEPLOYER_FLEET_S3=0). Clears whatever a crash left first; the hosts (and the
        bucket) start empty unless keep_data (then /srv, the database and the ledger survive).
        `production`: HAProxy's and the demo worker's production intervals (`FleetSpec`)."""
        require_root()
        spec = S.FleetSpec.of(web, production=production)
        if s3 is None:
            s3 = os.environ.get("DEPLOYER_FLEET_S3", "1").strip().lower() not in ("0", "no", "false", "off")
        t0 = time.monotonic()
        self.down(quiet=True)
        if not keep_data:
            for sub in ("hosts", "s3"):
                if (self.dir / sub).exists():
                    shutil.rmtree(self.dir / sub)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        H.ensure_deploy_user()
        self._client_key()
        self._network(spec)
        s3_box: dict = {}
        s3_thread = self._start_s3(s3_box) if s3 else None  # starts while the hosts do
        db_password = self._db_password()
        from .demo_repo import build_demo_repo

        tags = build_demo_repo(self.repo)
        pids: dict[str, int] = {}
        cfg = fleet_config(self, spec)
        for host in spec.hosts:
            self._prepare_host(host, spec, db_password, cfg)
        for host in spec.hosts:
            pids[host.name] = self._start_host(host)
        record = {"web": web, "pids": pids, "tags": tags, "production": production}
        self.state_file.write_text(json.dumps(record, indent=2))
        self._wait_ready(spec)
        self._write_known_hosts(spec)
        self.inventory_path.write_text(S.inventory(spec, self.dir, self.repo))
        self.s3_inventory_path.unlink(missing_ok=True)
        if s3_thread is not None:
            s3_thread.join()
            if "error" in s3_box:
                raise s3_box["error"]
            server = s3_box["server"]
            record["s3"] = {"pid": server.pid, "endpoint": server.endpoint_url, "bucket": S.S3_BUCKET}
            self.state_file.write_text(json.dumps(record, indent=2))
            self.s3_inventory_path.write_text(S.inventory(spec, self.dir, self.repo) + S.state_section())
        took = time.monotonic() - t0
        log(f"fleet: {len(spec.hosts)} hosts up ({web} web, db1, lb1, bastion1"
            + (f", S3 at {S.S3_ENDPOINT}" if s3 else "") + f") in {took:.1f}s; inventory {self.inventory_path}"
            + (f" (S3 state: {self.s3_inventory_path}, credentials {self.s3_env_path})" if s3 else ""))
        return {"hosts": len(spec.hosts), "seconds": took, "s3": bool(s3)}

    def down(self, *, quiet: bool = False) -> list[str]:
        """Kill every process in our namespaces, delete them and the bridge. Idempotent."""
        require_root()
        removed: list[str] = []
        from . import s3 as weed

        weed.stop_stale(self.s3_dir, timeout=1)  # the S3 server (then its pidfile and sockets)
        names = [n for n in _netns_list() if n.startswith(S.NETNS_PREFIX)]
        for ns in names:
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                _kill(int(pid), signal.SIGKILL)
        # Holders whose netns is already gone (a crash between steps) are found by their marker.
        for pid in _marked_pids(str(self.dir)):
            _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for ns in names:
            while _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            _run(["ip", "netns", "delete", ns], check=False)
            removed.append(ns)
        for link in _links():
            if link.startswith((S.VETH_PREFIX, S.PRIVATE_VETH_PREFIX)):
                _run(["ip", "link", "delete", link], check=False)
        for link in _links():  # the bridges last (their ports are gone)
            if link in (S.BRIDGE, S.PRIVATE_BRIDGE):
                _run(["ip", "link", "delete", link], check=False)
        _run(["ip", "route", "del", "unreachable", str(S.PRIVATE_SUBNET)], check=False)
        if self.state_file.exists():
            self.state_file.unlink()
        if not quiet:
            print(f"fleet: down ({len(removed)} hosts removed)")
        return removed

    def status(self) -> list[dict]:
        st = self.state
        if not st:
            return []
        rows = []
        spec = self.spec
        answering = self.probe([(h.address, 22) for h in spec.hosts], timeout=0.5)
        for host in spec.hosts:
            pid = st["pids"].get(host.name)
            alive = pid is not None and _alive(int(pid))
            rows.append({"name": host.name, "address": host.address, "roles": list(host.roles),
                         "public": host.public, "holder": pid, "alive": alive,
                         "ssh": alive and (host.address, 22) in answering})
        if st.get("s3"):  # not an SSH host: "ssh" says whether its S3 port answers
            pid = st["s3"].get("pid")
            alive = pid is not None and _alive(int(pid))
            rows.append({"name": "s3", "address": S.S3_ADDRESS, "roles": ["s3"], "holder": pid,
                         "alive": alive, "ssh": alive and _port_open(S.S3_ADDRESS, S.S3_PORT, 0.5),
                         "service": st["s3"].get("endpoint", S.S3_ENDPOINT)})
        return rows

    # -- building blocks ----------------------------------------------------------------------
    def _client_key(self) -> None:
        if not self.client_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer-fleet",
                  "-f", str(self.client_key)])
        shutil.copy(f"{self.client_key}.pub", self.dir / "authorized_keys")

    def _db_password(self) -> str:
        path = self.dir / "db_password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(18))
        return path.read_text().strip()

    def _network(self, spec: S.FleetSpec) -> None:
        """Two bridges: the public one (this machine 10.77.0.1) and the private one (no address
        here); app hosts on the private one only, without a default route; bastion1 and lb1 on
        both (eth0 public, eth1 private), their default route to this machine."""
        for bridge in (S.BRIDGE, S.PRIVATE_BRIDGE):
            _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{S.GATEWAY}/{S.SUBNET.prefixlen}", "dev", S.BRIDGE])
        for bridge in (S.BRIDGE, S.PRIVATE_BRIDGE):
            _run(["ip", "link", "set", bridge, "up"])
        # This machine has no way into the private network: without this route its packets for
        # 10.78.0.0/24 would follow the default route out of the machine (where some networks
        # answer any address); with it, a connection to an app host fails here at once.
        _run(["ip", "route", "replace", "unreachable", str(S.PRIVATE_SUBNET)])
        batch = []
        for h in spec.hosts:
            batch.append(f"netns add {h.netns}")
            for i, (veth, bridge) in enumerate(h.bridges()):
                batch += [f"link add {veth} type veth peer name eth{i} netns {h.netns}",
                          f"link set {veth} master {bridge} up"]
        _run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        for h in spec.hosts:
            if h.public:
                inside = [f"addr add {h.public}/{S.SUBNET.prefixlen} dev eth0",
                          f"addr add {h.address}/{S.PRIVATE_SUBNET.prefixlen} dev eth1",
                          "link set eth0 up", "link set eth1 up", "link set lo up",
                          f"route add default via {S.GATEWAY}"]
            else:
                inside = [f"addr add {h.address}/{S.PRIVATE_SUBNET.prefixlen} dev eth0",
                          "link set eth0 up", "link set lo up",
                          f"route add {S.S3_ADDRESS}/32 via {S.S3_PRIVATE}"]
            _run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join(inside) + "\n")
            if h.public:  # on both networks, and no router between them (a new namespace's IPv4
                # settings are copied from this machine's, which may forward)
                _run(["ip", "netns", "exec", h.netns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])

    def probe(self, targets: list[tuple[str, int]], timeout: float = 0.3) -> set[tuple[str, int]]:
        """Which of the (address, port) targets accept a TCP connection, seen from the
        bastion's namespace (on both networks): the app hosts are not reachable from here."""
        bastion = next(h for h in self.spec.hosts if "bastion" in h.roles)
        return _probe(bastion.netns, targets, timeout)

    def port_open(self, name: str, port: int = 22, timeout: float = 0.3) -> bool:
        """Whether host `name` accepts connections on `port` at its (private) address."""
        address = self.spec.host(name).address
        return (address, port) in self.probe([(address, port)], timeout)

    def _prepare_host(self, host: S.FleetHost, spec: S.FleetSpec, db_password: str, cfg) -> None:
        d = self.hostdir(host.name)
        H.prepare_host(d, host, spec, authorized_keys=self.dir / "authorized_keys", db_password=db_password)
        self.write_sudoers(host.name, cfg)
        (d / "init.sh").write_text(H.init_script(d, host, self.dir))

    def _start_host(self, host: S.FleetHost) -> int:
        d = self.hostdir(host.name)
        log = open(d / "init.log", "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--propagation",
             "private", "/bin/sh", str(d / "init.sh")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return proc.pid

    def _wait_ready(self, spec: S.FleetSpec, timeout: float = 60) -> None:
        """Every host's sshd answers at its private address (seen from the bastion's namespace),
        and the bastion's at its public one (from here)."""
        deadline = time.monotonic() + timeout
        pending = {h.name: h for h in spec.hosts}
        while pending:
            answering = self.probe([(h.address, 22) for h in pending.values()], timeout=0.2)
            for name, h in list(pending.items()):
                if (h.address, 22) in answering and (
                        "bastion" not in h.roles or _port_open(h.public, 22, 0.2)):
                    del pending[name]
                elif not _alive(self.holder_pid(name)):
                    log = (self.hostdir(name) / "init.log").read_text()[-2000:]
                    raise FleetError(f"fleet: host {name} failed to start:\n{log}")
            if pending and time.monotonic() > deadline:
                raise FleetError(f"fleet: hosts not answering SSH after {timeout}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.05)

    def _write_known_hosts(self, spec: S.FleetSpec) -> None:
        lines = []
        for h in spec.hosts:
            pub = (self.hostdir(h.name) / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.address} {pub[0]} {pub[1]}")
            if h.public:  # the bastion is reached at its public address
                lines.append(f"{h.public} {pub[0]} {pub[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def write_sudoers(self, name: str, *configs) -> None:
        """The host's own /etc/sudoers.d/deployer: the rules each config's playbook needs on it
        (derived from the playbook: deployer.privileges), and a log of every command run
        through sudo (/srv/log/sudo.log, root's)."""
        from ..privileges import sudoers_rules

        text = (f"# generated by deployer fleet for {name}\n"
                f"Defaults:{S.DEPLOY_USER} logfile=/srv/log/sudo.log, loglinelen=0\n")
        for cfg in configs:
            if any(h.name == name for h in cfg.hosts):
                text += sudoers_rules(cfg, name)
        H.write_sudoers(self.hostdir(name) / "sudoers.d", "deployer", text)

    # -- running things inside a host ---------------------------------------------------------
    def nsenter(self, name: str, argv: list[str], *, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess:
        pid = self.holder_pid(name)
        return _run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *argv], check=check,
                    timeout=timeout, input=input)

    def sh(self, name: str, script: str, **kw) -> subprocess.CompletedProcess:
        return self.nsenter(name, ["/bin/sh", "-c", script], **kw)


def fleet_config(fleet: Fleet, spec: S.FleetSpec, inventory=None):
    """The config of one of the fleet's inventories (the demo's by default; `inventory`: a
    function of the fleet directory giving an inventory's text), loaded without connecting and
    before the fleet's known_hosts exists: what each host's sudo rules are derived from."""
    import tempfile

    from ..config import load_config

    with tempfile.TemporaryDirectory(prefix="fleet-cfg-") as tmp:
        root = Path(tmp)
        for name in ("id_ed25519", "known_hosts"):
            (root / name).write_text("")
        text = inventory(root) if inventory else S.inventory(spec, root, fleet.repo)
        path = root / "hosts" / "local.yaml"
        path.parent.mkdir()
        path.write_text(text)
        return load_config("local", inventory=path, root=root, environ={})
