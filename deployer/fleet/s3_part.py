"""The fleet's S3 server, as part of `Fleet` (a mixin): where its data, credentials and
inventory live, and starting it in its own network namespace on the fleet's bridge."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from . import spec as S
from .procs import FleetError, _run


class S3Part:
    dir: Path
    state: dict

    @property
    def s3_dir(self) -> Path:
        return self.dir / "s3"

    @property
    def s3_env_path(self) -> Path:
        return self.dir / "s3.env"

    @property
    def s3_inventory_path(self) -> Path:
        return self.dir / "inventory-s3.yaml"

    def s3_env(self) -> dict[str, str]:
        """The S3 server's credentials (AWS_ACCESS_KEY_ID, ...), for a CLI's environment."""
        if not self.state.get("s3"):
            raise FleetError("fleet: no S3 server (bring the fleet up with s3, the default)")
        return S.parse_env_file(self.s3_env_path.read_text())

    @property
    def s3_endpoint(self) -> str:
        return S.S3_ENDPOINT

    def _start_s3(self, box: dict):
        """Start the S3 server in its own namespace, in a thread (joined by `up`): its
        namespace and veth on the bridge, the credentials (kept across `up`s in s3.env, 0600)."""
        import threading

        from . import s3 as weed

        h = S.S3_HOST
        # eth0 on the public bridge; eth1 on the private one, where the app hosts' route to
        # S3_ADDRESS leads (this namespace answers for its address on either leg)
        private = S.PRIVATE_VETH_PREFIX + h.name
        _run(["ip", "-batch", "-"], input=f"netns add {h.netns}\nlink add {h.veth} type veth peer name "
                                          f"eth0 netns {h.netns}\nlink set {h.veth} master {S.BRIDGE} up\n"
                                          f"link add {private} type veth peer name eth1 netns {h.netns}\n"
                                          f"link set {private} master {S.PRIVATE_BRIDGE} up\n")
        _run(["ip", "-n", h.netns, "-batch", "-"],
             input=f"addr add {h.address}/{S.SUBNET.prefixlen} dev eth0\nlink set eth0 up\n"
                   f"addr add {S.S3_PRIVATE}/{S.PRIVATE_SUBNET.prefixlen} dev eth1\nlink set eth1 up\n"
                   f"link set lo up\nroute add default via {S.GATEWAY}\n")
        _run(["ip", "netns", "exec", h.netns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        try:
            env = S.parse_env_file(self.s3_env_path.read_text())
            access, secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        except (OSError, KeyError):
            access, secret = "DEPLOYER" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)
            self.s3_env_path.unlink(missing_ok=True)
            fd = os.open(self.s3_env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(S.s3_env_file(access, secret, weed.REGION))

        def go() -> None:
            try:
                box["server"] = weed.start(self.s3_dir, S.S3_ADDRESS, S.S3_PORT, netns=h.netns,
                                           buckets=(S.S3_BUCKET,), access_key=access, secret_key=secret,
                                           timeout=120)
            except BaseException as exc:  # noqa: BLE001 - raised by up() after the join
                box["error"] = exc

        t = threading.Thread(target=go, name="fleet-s3", daemon=True)
        t.start()
        return t
