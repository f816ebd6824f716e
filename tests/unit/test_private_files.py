"""Data given in the environment (DEPLOYER_KNOWN_HOSTS_DATA) becomes a private file: never at a
predictable path a planted symlink could redirect, 0600 in a fresh 0700 directory, removed at
exit. Run as a user would, in a subprocess: the `deployer` command itself."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KNOWN = ("[127.0.0.1]:2222 ssh-ed25519 "
         "AAAAC3NzaC1lZDI1NTE5AAAAIGM6pCfdkEiPL3q4Y0a0IskWhD6sL3tBk8ZoN7Sa5v2R\n")  # any real key line


def client_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()


class Listener:
    """A TCP port that accepts and hangs up at once (the SSH handshake fails: the host counts as
    unreachable); on each connection it notes what the runtime directory holds at that moment,
    while the command that connected is still running."""

    def __init__(self, rundir: Path):
        self.rundir = rundir
        self.seen: list[dict[str, tuple]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.seen.append(self.snapshot())
            conn.close()

    def snapshot(self) -> dict[str, tuple]:
        """path -> (is a symlink, mode, content) of everything under the runtime directory."""
        out = {}
        for p in sorted(self.rundir.rglob("*")):
            st = p.lstat()
            text = p.read_text() if stat.S_ISREG(st.st_mode) else None
            out[str(p.relative_to(self.rundir))] = (p.is_symlink(), stat.S_IMODE(st.st_mode), text)
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_known_hosts_data_never_follows_a_planted_symlink_is_private_and_removed_at_exit(tmp_path):
    rundir, victim = tmp_path / "run", tmp_path / "victim"
    rundir.mkdir(mode=0o700)
    victim.mkdir()
    (victim / "known_hosts").write_text("attacker's own file\n")
    listener = Listener(rundir)
    proj = tmp_path / "proj"
    (proj / "hosts").mkdir(parents=True)
    (proj / "hosts" / "ci.yaml").write_text(f"""\
playbook: demo
repo: https://git.example.com/app.git
ssh: {{connect_timeout: 2}}
hosts:
  - {{name: web1, address: 127.0.0.1, port: {listener.port}, roles: [web, worker, migrate, db, ledger]}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYER_")}
    env.update(XDG_RUNTIME_DIR=str(rundir), TMPDIR=str(rundir), DEPLOYER_KNOWN_HOSTS_DATA=KNOWN,
               DEPLOYER_STATE_DIR=str(tmp_path / "state"), DEPLOYER_LOG_DIR=str(tmp_path / "log"),
               DEPLOYER_SSH_KEY_DATA=client_key())
    # The planted symlink sits where a predictable name would be: deployer-<pid of the command>
    # (exec keeps the shell's pid).
    script = ('ln -s "$VICTIM" "$XDG_RUNTIME_DIR/deployer-$$" && '
              'exec "$PYTHON" -m deployer.cli exec --env ci --root "$PROJ" -- true')
    try:
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**env, "VICTIM": str(victim), "PYTHON": sys.executable, "PROJ": str(proj)})
    finally:
        listener.close()
    assert proc.returncode == 3, proc.stdout + proc.stderr  # refused: the host is unreachable

    # the symlink's target is untouched
    assert (victim / "known_hosts").read_text() == "attacker's own file\n"
    assert sorted(p.name for p in victim.iterdir()) == ["known_hosts"]

    # while the command ran, the data was in a fresh private directory (0700) as a 0600 file
    assert listener.seen, "the command never connected\n" + proc.stdout + proc.stderr
    during = listener.seen[0]
    files = {p: v for p, v in during.items() if v[2] is not None}
    assert list(files.values()) == [(False, 0o600, KNOWN)], during
    (path,) = files
    private = path.split("/")[0]
    assert path == f"{private}/known_hosts"
    assert during[private][:2] == (False, 0o700), during

    # nothing is left behind once it exited (but the planted symlink)
    left = sorted(p.name for p in rundir.iterdir())
    assert len(left) == 1 and (rundir / left[0]).is_symlink(), left
