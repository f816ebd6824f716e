"""Where the machine's CPU goes during a benchmark's run, by command name (root only).

    with CpuAccount() as acct:
        ...                      # the deploy
    print(acct.table())

Two sources, so that nothing is counted twice or missed:
- the processes that EXIT during the window (each SSH command's shell, python, curl, tar, the
  sessions' sshd): the kernel's process accounting (`acct(2)`, BSD format v3), one record per
  process with its user and system time; a process that was alive when the window opened has
  its CPU at that moment (read from /proc) taken off;
- the processes still alive when it closes (PostgreSQL backends, gunicorn, supervisord, the
  demo's workers): /proc/<pid>/stat read at both ends, the difference; an interpreter still
  alive is named with its script (`python3 worker.py`), one that exited by its command only.

The machine's total (from /proc/stat) is printed beside it: what the two sources miss (kernel
threads, interrupts) shows as the gap.
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
AHZ = 100  # the accounting file's unit (comp_t ticks)
RECORD = struct.Struct("<BBHIIIIIIf8H16s")  # struct acct_v3, 64 bytes


def _comp(v: int) -> int:
    """comp_t: 13-bit mantissa, 3-bit base-8 exponent."""
    return (v & 0x1FFF) << (3 * (v >> 13))


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def _machine_ticks() -> int:
    """All CPUs' busy ticks (everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = list(map(int, fields))
    return sum(ticks) - ticks[3] - ticks[4]


def _live() -> dict[tuple[int, int], tuple[str, float, str]]:
    """(pid, start epoch second) -> (command, cpu seconds so far, script) of every process."""
    boot, out = _boot_time(), {}
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        try:
            raw = Path(d.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile: it is in the accounting file
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        utime, stime, start = int(rest[11]), int(rest[12]), int(rest[19])
        out[(int(d.name), int(boot + start / HZ))] = (comm[:15], (utime + stime) / HZ, _script(d.path, comm))
    return out


def _script(proc: str, comm: str) -> str:
    """A long-lived interpreter's script (`python worker.py`), else ""."""
    if not comm.startswith("python"):
        return ""
    try:
        argv = Path(proc, "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    args = iter(a.decode(errors="replace") for a in argv[1:] if a)
    for a in args:
        if a == "-c":
            return "-c"
        if a == "-m":
            return next(args, "")
        if not a.startswith("-"):
            return os.path.basename(a)
    return ""


def _near(before: dict[tuple[int, int], tuple[str, float, str]], pid: int, btime: int) -> float:
    for b in (btime, btime - 1, btime + 1):
        if (pid, b) in before:
            return before[(pid, b)][1]
    return 0.0


class CpuAccount:
    def __init__(self) -> None:
        self.by_command: dict[str, list[float]] = {}  # command -> [processes, cpu seconds]
        self.wall = self.machine = 0.0

    def __enter__(self) -> CpuAccount:
        self._dir = tempfile.mkdtemp(prefix="cpu-acct-")
        self._file = os.path.join(self._dir, "pacct")
        Path(self._file).touch(mode=0o600)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._before = _live()
        self._t0, self._m0 = time.monotonic(), _machine_ticks()
        if self._libc.acct(self._file.encode()) != 0:
            raise OSError(ctypes.get_errno(), "acct(2): process accounting refused (root, and a kernel "
                                              "with BSD process accounting, are needed)")
        return self

    def __exit__(self, *exc: object) -> None:
        after = _live()
        self._libc.acct(None)
        self.wall = time.monotonic() - self._t0
        self.machine = (_machine_ticks() - self._m0) / HZ
        exited: set[tuple[int, str]] = set()
        data = Path(self._file).read_bytes()
        for off in range(0, len(data) - RECORD.size + 1, RECORD.size):
            rec = RECORD.unpack_from(data, off)
            if rec[1] & 0x0F != 3:
                continue  # not a v3 record
            pid, btime, utime, stime = rec[6], rec[8], _comp(rec[10]), _comp(rec[11])
            comm = rec[18].split(b"\0", 1)[0].decode(errors="replace")
            cpu = (utime + stime) / AHZ - _near(self._before, pid, btime)
            self._add(comm, max(cpu, 0.0))
            exited.add((pid, comm))
        for (pid, start), (comm, cpu, script) in after.items():
            if (pid, comm) in exited:
                continue
            self._add(f"{comm} {script}".strip(), max(cpu - _near(self._before, pid, start), 0.0),
                      count=(pid, start) not in self._before)
        os.unlink(self._file)
        os.rmdir(self._dir)

    def _add(self, comm: str, cpu: float, count: bool = True) -> None:
        row = self.by_command.setdefault(comm, [0, 0.0])
        row[0] += 1 if count else 0
        row[1] += cpu

    def table(self, top: int = 15, per: int = 0) -> str:
        """The `top` commands by CPU; `per`: also give each one's CPU per that many hosts."""
        counted = sum(cpu for _, cpu in self.by_command.values())
        lines = [f"CPU over {self.wall:.1f} s: machine {self.machine:.1f} CPU s busy "
                 f"({self.machine / max(self.wall, 1e-9):.2f} cores), {counted:.1f} CPU s by process"]
        head = f"  {'command':<24} {'processes':>9} {'cpu s':>8} {'share':>6}"
        lines.append(head + (f" {'cpu ms/host':>11}" if per else ""))
        rows = sorted(self.by_command.items(), key=lambda kv: -kv[1][1])
        for comm, (n, cpu) in rows[:top]:
            line = f"  {comm[:24]:<24} {int(n):>9} {cpu:>8.1f} {cpu / max(counted, 1e-9):>6.1%}"
            lines.append(line + (f" {cpu * 1000 / per:>11.0f}" if per else ""))
        rest = sum(cpu for _, (_, cpu) in rows[top:])
        lines.append(f"  {'(the others)':<24} {sum(int(n) for _, (n, _) in rows[top:]):>9} {rest:>8.1f} "
                     f"{rest / max(counted, 1e-9):>6.1%}")
        return "\n".join(lines)
