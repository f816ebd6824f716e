"""The installed tool, as a user meets it: this repository `pip install`ed into a fresh virtualenv
(no system site-packages, its real dependencies), then an empty directory, and only the programs
of that virtualenv, with a bare environment (no PYTHONPATH, no activated virtualenv). No fleet:
nothing here connects to a host.

The install reuses pip's cache (and PIP_FIND_LINKS when set): about 20-50 s here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import deployer

ROOT = Path(__file__).resolve().parents[2]
#: what is not part of the source a user would install
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".fleet", "__pycache__", "*.pyc", "build", "*.egg-info",
                                    "reports", ".pytest_cache", ".ruff_cache", "tests", "benchmarks")
SCHEDULES = """
schedules:
  - {name: maintenance, cron: "0 3 * * 0", command: maintenance.run}
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The bin directory of a fresh virtualenv with this repository pip-installed into it."""
    base = tmp_path_factory.mktemp("install")
    shutil.copytree(ROOT, base / "src", symlinks=True, ignore=NOT_SOURCE)  # pip builds in the tree
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    pip = subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(base / "src")],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    assert "include-system-site-packages = false" in (base / "venv" / "pyvenv.cfg").read_text()
    print(f"\nvenv + pip install: {time.monotonic() - started:.1f} s")
    return base / "venv" / "bin"


@pytest.fixture(scope="module")
def user(venv, tmp_path_factory):
    """run(*argv, cwd=...): a program as the user runs it, PATH with the virtualenv's bin first
    (not activated), HOME of its own, nothing of this test run's Python environment."""
    home = tmp_path_factory.mktemp("home")
    env = {"PATH": f"{venv}:/usr/bin:/bin", "HOME": str(home), "NO_COLOR": "1", "LANG": "C.UTF-8",
           "DEPLOYER_LOG_DIR": str(home / "logs")}

    def run(*argv: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, (f"{' '.join(argv)}: exit {proc.returncode}\n"
                                         f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture(scope="module")
def project(user, tmp_path_factory) -> Path:
    """An empty directory where the user ran `deployer init --kind laravel --env production`."""
    root = tmp_path_factory.mktemp("shop")
    assert list(root.iterdir()) == []
    out = user("deployer", "init", "--kind", "laravel", "--env", "production", cwd=root).stdout
    assert "wrote tasks.py" in out and "next: " in out
    return root


def test_it_installs_as_its_own_distribution_with_its_docs_and_playbooks(venv, user, tmp_path):
    shown = user(str(venv / "pip"), "show", "-f", deployer.DISTRIBUTION, cwd=tmp_path).stdout
    assert f"Name: {deployer.DISTRIBUTION}\n" in shown and f"Version: {deployer.__version__}\n" in shown
    files = {line.strip() for line in shown.splitlines()}
    assert {"deployer/docs/cli.md", "deployer/playbooks/laravel.yaml", "deployer/tasks.py",
            "deployer/templates/tasks.py"} <= files
    assert user("deployer", "--version", cwd=tmp_path).stdout == (
        f"deployer {deployer.__version__} (pip: {deployer.DISTRIBUTION})\n")
    urls = user(str(venv / "pip"), "show", "-v", deployer.DISTRIBUTION, cwd=tmp_path).stdout
    assert "\n  Documentation, https://" in urls and "\n  Changelog, https://" in urls


def test_init_in_an_empty_directory(project):
    files = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert files == ["deploy/sudoers", "hosts/known_hosts", "hosts/production.yaml",
                     f"playbooks/{project.name}.yaml", "tasks.py"]
    assert "`deployer docs configuration`" in (project / "hosts" / "production.yaml").read_text()


def test_inv_runs_deployers_verbs_from_the_projects_tasks_py(user, project):
    listed = user("inv", "--list", cwd=project).stdout
    for task in ("deploy", "rollback", "status", "maintenance.run", "cron.show", "docs"):
        assert f"\n  {task} " in listed, listed
    helped = user("inv", "deploy", "--help", cwd=project).stdout
    assert helped.startswith("Usage: inv deploy [OPTIONS]") and "--dry-run" in helped and "--env" in helped
    missing = user("inv", "deploy", cwd=project, code=2)
    assert missing.stderr == "error: Missing option '--env' / '-e'. (see 'inv deploy --help')\n"
    bad = user("inv", "deploy", "--env", "production", "--bogus", cwd=project, code=2)
    assert bad.stderr.startswith("error: No idea what '--bogus' is!")
    assert user("deployer", "deploy", "--env", "production", "--bogus", cwd=project, code=2).stderr


def test_the_plan_and_the_config_are_checked_before_any_server_exists(user, project):
    """The hosts init wrote are placeholders nobody can reach: an offline plan and `config check`
    contact nothing, so both work now."""
    plan = user("inv", "deploy", "--env", "production", "--ref", "main", "--dry-run", "--offline", cwd=project)
    out = plan.stdout
    assert "offline plan: facts assumed, nothing contacted" in out
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if line[:1].isalpha()}
    for stage, host in (("maintenance", "web1"), ("backup", "db1"), ("pull", "web2"), ("migrate", "web1"),
                        ("cache_warm", "web2"), ("finalize", "web1")):
        assert (stage, host) in rows, out
    assert plan.stderr == ""
    check = user("deployer", "config", "check", "--env", "production", cwd=project)
    assert f"production: OK: hosts/production.yaml with playbook {project.name} (" in check.stdout
    assert check.stdout.rstrip().endswith("nothing contacted")


def test_a_project_adds_its_own_task_to_the_collection(user, project, tmp_path):
    mine = tmp_path / "mine"
    shutil.copytree(project, mine)
    with (mine / "tasks.py").open("a") as f:
        f.write("\n\nfrom invoke import task\n\n\n@task\ndef smoke(c):\n    print('smoke ok')\n\n\n"
                "ns.add_task(smoke)\n")
    assert "\n  smoke" in user("inv", "--list", cwd=mine).stdout
    assert user("inv", "smoke", cwd=mine).stdout == "smoke ok\n"


def test_docs_are_readable_from_the_install(user, venv, project):
    listed = user("deployer", "docs", cwd=project).stdout
    assert "  configuration  Configuration\n" in listed
    files = Path(listed.rstrip().rsplit("Files: ", 1)[1])
    assert files.is_relative_to(venv.parent) and (files / "configuration.md").is_file()
    shown = user("deployer", "docs", "servers", cwd=project)
    assert shown.stdout == (files / "servers.md").read_text()
    assert str(files / "servers.md") in shown.stderr
    assert "topics: cli, configuration" in user("deployer", "docs", "nope", cwd=project, code=2).stderr


def test_the_cron_line_runs_from_crons_environment(user, venv, project):
    with (project / "hosts" / "production.yaml").open("a") as f:
        f.write(SCHEDULES)
    shown = user("deployer", "cron", "show", "--env", "production", cwd=project).stdout
    (line,) = [x for x in shown.splitlines() if x.startswith("0 3 * * 0 ")]
    command = line.split(" ", 5)[5].replace("\\%", "%")
    assert command.startswith(f"cd {project} && /usr/bin/flock -n ")
    assert f" {venv / 'deployer'} maintenance run --env production >> " in command
    log = Path(command.rsplit(">> ", 1)[1].split()[0])
    assert log.parent.is_dir()
    tried = command.replace(" >> ", " --help >> ", 1)  # the whole line, the verb only printing its help
    proc = subprocess.run(["env", "-i", "/bin/sh", "-c", tried], cwd="/", capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert log.read_text().startswith("Usage: deployer maintenance run [OPTIONS]")
    # inv from a subdirectory: Invoke finds tasks.py above, deployer finds hosts/ above
    (project / "app" / "src").mkdir(parents=True)
    assert user("inv", "cron.show", "--env", "production", cwd=project / "app" / "src").stdout == shown
