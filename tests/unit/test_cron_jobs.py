"""Crontab lines that run for any install: the absolute path of the `deployer` program, `cd` to the
project root, `flock -n`, the log; run here as cron runs them (`env -i`, /bin/sh), and the check
`cron install` makes before it touches the crontab. No fleet: the programs are real, the verbs
are `--help` or a stand-in `deployer` that records what it was run with."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployer import maintenance as M
from deployer import verbs
from deployer.config import load_config
from deployer.cron import Schedule, check_argv, cron_lines, job_command
from deployer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MAINTENANCE = Schedule("maintenance", "0 3 * * 0", "maintenance.run")


def recorder(path: Path, record: Path) -> Path:
    """A stand-in `deployer`: writes its working directory and arguments to `record`, one a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n{{ pwd; for a in "$@"; do echo "$a"; done; }} > \'{record}\'\n'
                    'echo "ran from cron"\n')
    path.chmod(0o755)
    return path


def this_tree(path: Path) -> Path:
    """A `deployer` program that runs this tree's deployer with this Python (cron's environment
    has no PYTHONPATH: the script sets it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nPYTHONPATH='{ROOT}' exec '{sys.executable}' -m deployer \"$@\"\n")
    path.chmod(0o755)
    return path


def unescape(line: str) -> str:
    """The command cron hands to /bin/sh: the line after its 5 fields, \\% back to %."""
    return line.split(" ", 5)[5].replace("\\%", "%")


def cron_sh(command: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "/bin/sh", "-c", command],
                          cwd="/", capture_output=True, text=True, timeout=60)


def test_a_line_runs_from_crons_environment_in_a_project_with_a_space(tmp_path):
    project = tmp_path / "my shop"
    (project / "hosts").mkdir(parents=True)
    record = tmp_path / "argv"
    deployer = recorder(tmp_path / "venv 100%" / "bin" / "deployer", record)
    logs = tmp_path / "log dir"
    logs.mkdir()
    (line,) = cron_lines("prod", [MAINTENANCE], project_dir=project, deployer_path=deployer,
                         log_dir=logs, lock_dir=tmp_path)[2:]
    assert line.startswith("0 3 * * 0 cd ")
    proc = cron_sh(unescape(line), tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert record.read_text().splitlines() == [str(project), "maintenance", "run", "--env", "prod"]
    assert (logs / "deployer-prod-maintenance.log").read_text() == "ran from cron\n"
    assert (tmp_path / "deployer-prod-maintenance.lock").exists()


def test_flock_skips_a_run_while_the_last_one_still_holds_the_lock(tmp_path):
    record = tmp_path / "argv"
    deployer = recorder(tmp_path / "bin" / "deployer", record)
    lock = tmp_path / "job.lock"
    command = job_command("prod", MAINTENANCE, project_dir=tmp_path, deployer_path=deployer, lock=lock,
                          for_cron=False)
    with open(lock, "w") as held:  # the last run, still going
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = cron_sh(command, tmp_path)
    assert proc.returncode == 1 and not record.exists()
    assert cron_sh(command, tmp_path).returncode == 0 and record.exists()


def test_the_install_check_runs_the_real_program_with_help(tmp_path):
    project = tmp_path / "my shop"
    (project / "hosts").mkdir(parents=True)
    deployer = this_tree(tmp_path / "bin dir" / "deployer")
    good = job_command("prod", MAINTENANCE, project_dir=project, deployer_path=deployer,
                       lock=tmp_path / "a.lock", for_cron=False)
    proc = subprocess.run(check_argv(good, tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: deployer maintenance run [OPTIONS]" in proc.stdout
    bad = job_command("prod", Schedule("b", "@daily", "backup.run"), project_dir=project,
                      deployer_path=deployer, lock=tmp_path / "b.lock", for_cron=False)
    proc = subprocess.run(check_argv(bad, tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "No such command 'backup'" in proc.stderr


def test_the_installed_program_is_found_by_its_absolute_path(tmp_path, monkeypatch):
    program = recorder(tmp_path / "venv" / "bin" / "deployer", tmp_path / "argv")
    os.symlink(program, tmp_path / "deployer")  # a pipx-style link in ~/.local/bin
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["deployer", "cron", "show"])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert M.installed_deployer() == program
    monkeypatch.setattr(sys, "argv", ["inv", "cron.show"])  # inv: the program beside this Python
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    assert M.installed_deployer() == program
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere" / "python"))
    assert M.installed_deployer() == tmp_path / "deployer"  # from PATH
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"^cron: no `deployer` program found \(not beside "):
        M.installed_deployer()


INVENTORY = """\
playbook: demo
repo: https://git.example.com/app.git
ssh: {{known_hosts: known_hosts}}
database: {{name: app}}
schedules:
  - {{name: {name}, cron: "0 3 * * 0", command: {command}}}
hosts:
  - {{name: web1, address: 203.0.113.10, roles: [web, worker, migrate]}}
  - {{name: db1, address: 203.0.113.20, roles: [db, ledger]}}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "the project"
    (root / "hosts").mkdir(parents=True)
    (root / "hosts" / "known_hosts").write_text("")
    (root / "hosts" / "prod.yaml").write_text(INVENTORY.format(name="maintenance", command="maintenance.run"))
    (root / "hosts" / "bad.yaml").write_text(INVENTORY.format(name="nightly", command="backup.run"))
    monkeypatch.setenv("DEPLOYER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("DEPLOYER_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(sys, "argv", [str(this_tree(tmp_path / "venv" / "bin" / "deployer"))])
    crontab = tmp_path / "crontab"  # a stand-in `crontab` on PATH, keeping the table in a file
    fake = tmp_path / "fakebin" / "crontab"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat \'{crontab}\' 2>/dev/null; '
                    f"else cat > '{crontab}'; fi\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    return root


def test_cron_show_names_the_program_the_project_and_the_verb(project, tmp_path, capsys):
    assert verbs.cron("prod", "show", root=str(project)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# BEGIN deployer prod" and out[-1] == "# END deployer prod"
    assert out[3] == (f"0 3 * * 0 cd '{project}' && /usr/bin/flock -n "
                      f"{tmp_path}/deployer-prod-maintenance.lock {tmp_path}/venv/bin/deployer "
                      f"maintenance run --env prod >> {tmp_path}/logs/deployer-prod-maintenance.log 2>&1")


def test_cron_install_checks_each_job_first(project, tmp_path, capsys, monkeypatch):
    assert verbs.cron("prod", "install", root=str(project)) == 0
    assert "crontab: installed 1 job(s) for prod" in capsys.readouterr().out
    installed = (tmp_path / "crontab").read_text()
    assert "deployer maintenance run --env prod" in installed
    # a program that runs from the user's shell only (it needs a variable cron does not set)
    shell_only = tmp_path / "shell-only" / "bin" / "deployer"
    shell_only.parent.mkdir(parents=True)
    shell_only.write_text('#!/bin/sh\n[ -n "$DEPLOYER_VENV" ] || { echo "DEPLOYER_VENV is not set" >&2; '
                          f'exit 127; }}\nexec \'{sys.executable}\' -m deployer "$@"\n')
    shell_only.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(shell_only)])
    monkeypatch.setenv("DEPLOYER_VENV", "set here, not in cron")
    assert verbs.cron("prod", "install", root=str(project)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cron install: schedule 'maintenance' does not run from cron's environment (`cd ")
    assert "maintenance run --env prod --help` exited 127: DEPLOYER_VENV is not set" in err
    assert err.rstrip().endswith("nothing was installed")
    assert (tmp_path / "crontab").read_text() == installed


def test_a_schedule_naming_no_command_is_refused_at_load(project, capsys):
    assert verbs.cron("bad", "install", root=str(project)) == 2
    assert capsys.readouterr().err.startswith(
        "error: hosts/bad.yaml: schedules[0].command: unknown command 'backup.run' (known: abort, ")


def test_an_uncreatable_log_directory_is_bad_input(project, monkeypatch, capsys):
    monkeypatch.setenv("DEPLOYER_LOG_DIR", "/proc/deployer-logs")
    cfg = load_config("prod", root=project, environ={})
    with pytest.raises(ConfigError, match=r"^cron: cannot create the log directory /proc/deployer-logs: "):
        M.cron_block(cfg)
    assert verbs.cron("prod", "show", root=str(project)) == 2
    assert "(DEPLOYER_LOG_DIR sets another)" in capsys.readouterr().err
