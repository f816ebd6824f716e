"""The Fabric side of benchmarks/compare.py: the nine steps as a plain Fabric script would run
them, step by step, `group.run` per step over a ThreadingGroup (one SSH connection per host,
opened at the first step and reused, through the jump host as deployer goes), then a GET of each
host's health URL through that host's SSH connection (a direct-tcpip channel, as deployer's
health checks go: the hosts are on a private network).

    .venv/bin/python benchmarks/compare/plain_fabric.py --hosts 10.78.0.101,10.78.0.102 \
        --user deploy --jump deploy@10.77.0.5 \
        --key .fleet/id_ed25519 --known-hosts .fleet/known_hosts --repo /path/to/repo \
        --ref bench --deploy-to /srv/cmp-fabric --health-url 'http://{address}:8000/health'

Host keys are checked strictly, as deployer does: the known_hosts file is loaded and an unknown
key is refused (paramiko's RejectPolicy instead of Fabric's AutoAddPolicy). The code arrives the
way deployer brings it: a bare mirror per host (`git clone --mirror` the first time, `git fetch`
after), then `git archive | tar -x` of the commit into the release. Migrate runs once, on the
first host (deployer runs it on its migrate host). Exit 0 and one JSON line on stdout (the
release and each step's seconds), or exit 1 on the first failed step.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import paramiko
from fabric import Config, Connection, ThreadingGroup


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", required=True, help="comma-separated addresses")
    ap.add_argument("--user", default="deploy")
    ap.add_argument("--jump", default=None, help="user@host of the jump host (ProxyJump)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--known-hosts", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--deploy-to", required=True)
    ap.add_argument("--health-url", required=True, help="template with {address}")
    args = ap.parse_args()
    hosts = args.hosts.split(",")

    def strict(conn: Connection) -> Connection:  # strict host keys
        client = paramiko.SSHClient()
        client.load_host_keys(args.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client = client
        return conn

    common = {"connect_timeout": 10, "config": Config(overrides={"load_ssh_configs": False}),
              "connect_kwargs": {"key_filename": args.key, "allow_agent": False, "look_for_keys": False}}
    gateway = None
    if args.jump:
        jump_user, _, jump_host = args.jump.rpartition("@")
        gateway = strict(Connection(jump_host, user=jump_user or args.user, **common))
    group = ThreadingGroup(*hosts, user=args.user, gateway=gateway, **common)
    for conn in group:
        strict(conn)

    q = shlex.quote
    d = args.deploy_to
    mirror = f"{d}/repo"
    times: dict[str, float] = {}

    def step(name: str, fn) -> object:
        t0 = time.monotonic()
        out = fn()
        times[name] = round(time.monotonic() - t0, 3)
        return out

    try:
        # The ref, resolved on the first host (as deployer resolves it before anything changes).
        out = step("resolve", lambda: group[0].run(
            f"git ls-remote -- {q(args.repo)} {q('refs/tags/' + args.ref + '^{}')}", hide=True))
        commit = out.stdout.split()[0]
        release = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + commit[:7]
        rel = f"{d}/releases/{release}"

        step("1 mkdir", lambda: group.run(f"mkdir -p {q(rel)} {q(d + '/shared')}", hide=True))
        step("2 fetch", lambda: group.run(
            f"if [ -d {q(mirror)} ]; then git -C {q(mirror)} remote set-url origin {q(args.repo)} && "
            f"git -C {q(mirror)} fetch --quiet --prune --tags origin '+refs/heads/*:refs/heads/*'; "
            f"else git clone --quiet --mirror -- {q(args.repo)} {q(mirror)}; fi", hide=True))
        step("3 unpack", lambda: group.run(
            f"git -C {q(mirror)} archive --format=tar {q(commit)} | tar -x -C {q(rel)}", hide=True))
        step("4 link .env", lambda: group.run(
            f"ln -sfn {q(d + '/shared/.env')} {q(rel + '/.env')}", hide=True))
        step("5 build", lambda: group.run(f"cd {q(rel)} && sleep 0.2", hide=True))
        step("6 migrate", lambda: group[0].run(f"cd {q(rel)} && sleep 0.1", hide=True))
        step("7 cache warm", lambda: group.run("true", hide=True))
        tmp = f"{d}/.current.{release}.tmp"
        step("8 switch", lambda: group.run(
            f"ln -sfn {q(rel)} {q(tmp)} && mv -T {q(tmp)} {q(d + '/current')}", hide=True))
        step("9 restart", lambda: group.run(f"echo {q(release)} > {q(rel + '/restarted')}", hide=True))

        def health(conn: Connection) -> int:
            url = urllib.parse.urlsplit(args.health_url.replace("{address}", conn.host))
            chan = conn.client.get_transport().open_channel(
                "direct-tcpip", (url.hostname, url.port or 80), ("127.0.0.1", 0), timeout=5)
            try:
                chan.settimeout(5)
                chan.sendall(f"GET {url.path or '/'} HTTP/1.0\r\nHost: {url.netloc}\r\n\r\n".encode())
                data = b""
                while chunk := chan.recv(65536):
                    data += chunk
            finally:
                chan.close()
            return int(data.split(b" ", 2)[1])

        if gateway is not None:
            gateway.open()  # once, before the hosts' connections share it
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            statuses = step("health", lambda: list(pool.map(health, list(group))))
        bad = [h for h, s in zip(hosts, statuses, strict=True) if s != 200]
        if bad:
            print(f"health check failed on {', '.join(bad)}", file=sys.stderr)
            return 1
    except Exception as exc:  # noqa: BLE001 - a failed step ends the script, as `set -e` would
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        group.close()
    print(json.dumps({"release": release, "hosts": len(hosts), "steps": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
