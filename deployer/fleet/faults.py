"""Fault injection on the local fleet's hosts: pull a host's cable, kill, freeze or restart its
sshd, change its host key, give it a small or full disk, make a command hang.

`Faults` is a mixin of `deployer.fleet.harness.Fleet`: its methods use the fleet's `spec`,
`hostdir`, `nsenter`, `sh` and `_write_known_hosts`.
"""

from __future__ import annotations

import signal
import time

from .procs import FleetError, _kill, _run


class Faults:
    """Fault injection, as methods of `Fleet` (`fleet.cut("web2")`, ...)."""

    def cut(self, name: str) -> None:
        """Cut the host off the network (its cables are pulled: packets are dropped), on each
        network it is on."""
        for veth, _ in self.spec.host(name).bridges():
            _run(["ip", "link", "set", veth, "down"])

    def reconnect(self, name: str) -> None:
        for veth, bridge in self.spec.host(name).bridges():
            _run(["ip", "link", "set", veth, "master", bridge, "up"])

    def _sshd_pid(self, name: str) -> int:
        return int((self.hostdir(name) / "sshd.pid").read_text())

    def kill_sshd(self, name: str) -> None:
        pid = self._sshd_pid(name)
        _kill(pid, signal.SIGKILL)
        (self.hostdir(name) / "sshd.pid").unlink(missing_ok=True)

    def stop_ssh(self, name: str) -> None:
        """The host stops answering SSH: its listener AND every open session die (killing only the
        listener leaves established connections working)."""
        pid = self._sshd_pid(name)
        _run(["pkill", "-KILL", "-P", str(pid)], check=False)
        self.kill_sshd(name)

    def start_sshd(self, name: str) -> None:
        self.nsenter(name, ["/usr/sbin/sshd", "-f", str(self.hostdir(name) / "sshd_config")])
        deadline = time.monotonic() + 10
        while not self.port_open(name, 22, 0.2):
            if time.monotonic() > deadline:
                raise FleetError(f"fleet: sshd on {name} did not come back")
            time.sleep(0.05)

    def freeze_sshd(self, name: str) -> None:
        """SIGSTOP the listener: TCP connects succeed (kernel backlog) but no banner ever comes."""
        _kill(self._sshd_pid(name), signal.SIGSTOP)

    def thaw_sshd(self, name: str) -> None:
        _kill(self._sshd_pid(name), signal.SIGCONT)

    def rekey(self, name: str) -> None:
        """Give the host a new host key (as a reinstalled or impersonated machine would have)."""
        d = self.hostdir(name)
        for f in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            (d / f).unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / "ssh_host_ed25519_key")])
        self.kill_sshd(name)
        self.start_sshd(name)

    def trust(self) -> None:
        """Rewrite known_hosts from the hosts' current keys (after `rekey`)."""
        self._write_known_hosts(self.spec)

    def small_disk(self, name: str, path: str, size: str = "2m") -> None:
        """Mount a size-limited filesystem at `path` inside the host (its deploy path, say)."""
        self.sh(name, f"{{ [ -e {path} ] || {{ mkdir -p {path} && chown --reference=$(dirname {path}) {path}; }}; }} && "
                      f"owner=$(stat -c %u:%g {path}) && "
                      f"mount -t tmpfs -o size={size},mode=0755 deployer-small {path} && chown $owner {path}")

    def fill_disk(self, name: str, path: str) -> None:
        self.sh(name, f"dd if=/dev/zero of={path}/.filler bs=64k >/dev/null 2>&1 || true")

    def free_disk(self, name: str, path: str) -> None:
        self.sh(name, f"umount {path} 2>/dev/null || true")

    def hang(self, name: str, command: str) -> None:
        """Make `command` (looked up on PATH) hang forever on that host."""
        self.sh(name, f"printf '#!/bin/sh\\nexec sleep 3600\\n' > /srv/bin/{command} && chmod 755 /srv/bin/{command}")

    def unhang(self, name: str, command: str) -> None:
        self.sh(name, f"rm -f /srv/bin/{command}")
