"""One CLI, two front ends: every verb run through `deployer` (click) and `inv` (the Invoke tasks
generated from it in deployer/tasks.py) with the same arguments gives the same exit code and the same
output (program names normalised). No fleet: the hosts are 127.0.0.1 ports nothing listens on,
so every command that reaches for them is refused (exit 3) at once."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from invoke import Program

from deployer import tasks, verbs
from deployer.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += leaves(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


VERBS = leaves(cli)
PATHS = [p for p, _ in VERBS]
IDS = [" ".join(p) for p in PATHS]
WITH_ENV = [p for p, c in VERBS if any(o.name == "env" and o.required for o in c.params)]
WITH_CONFIG = [p for p, c in VERBS if any(o.name == "sets" for o in c.params)]
WITH_HOSTS = [p for p, c in VERBS if any(o.name == "hosts" for o in c.params)]


def command(path: tuple[str, ...]) -> click.Command:
    return dict(VERBS)[path]


# -- running both front ends in this process ---------------------------------------------------

def run_click(path, args, capsys):
    capsys.readouterr()
    try:
        cli.main(args=[*path, *args], prog_name="deployer")
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, normalise(out, path), normalise(err, path)


def run_inv(path, args, capsys, monkeypatch):
    argv = ["inv", ".".join(path), *args]
    monkeypatch.setattr(sys, "argv", argv)  # a task's words after `--` come from the command line
    capsys.readouterr()
    try:
        Program(namespace=tasks.ns, name="Invoke", binary="inv").run(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, normalise(out, path), normalise(err, path)


def normalise(text: str, path) -> str:
    text = text.replace("deployer " + " ".join(path), "PROG").replace("inv " + ".".join(path), "PROG")
    text = re.sub(r'"at": "[^"]*"', '"at": "<at>"', text)
    text = re.sub(r"\b\d+\.\d+s\b", "<t>", text)
    text = re.sub(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b", "<run>", text)  # each run's own id
    if path == ("exec",):  # hosts print as they finish, in any order: sort the `host | ` lines
        lines = text.splitlines(keepends=True)
        at = [i for i, line in enumerate(lines) if re.match(r"[a-z0-9-]+ *\| ", line)]
        for i, line in zip(at, sorted(lines[i] for i in at), strict=True):
            lines[i] = line
        text = "".join(lines)
    return text


def both(path, args, capsys, monkeypatch):
    """Both front ends' (code, stdout, stderr), asserted equal; returns one of them."""
    c = run_click(path, args, capsys)
    i = run_inv(path, args, capsys, monkeypatch)
    assert c == i, f"{' '.join(path)} {' '.join(args)}:\nclick: {c}\ninv:   {i}"
    return c


@pytest.fixture(autouse=True)
def quiet_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DEPLOYER_LOG_DIR", str(tmp_path / "log"))
    for var in ("GITHUB_STEP_SUMMARY", "DEPLOYER_ROOT", "DEPLOYER_KNOWN_HOSTS_DATA", "DEPLOYER_SSH_KEY_DATA"):
        monkeypatch.delenv(var, raising=False)


def closed_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def project(tmp_path):
    """A project whose env `unreach` has its hosts on closed local ports: a refused connection."""
    root = tmp_path / "proj"
    (root / "hosts").mkdir(parents=True)
    (root / "hosts" / "known_hosts").write_text("")
    p = closed_ports(3)
    (root / "hosts" / "unreach.yaml").write_text(f"""\
playbook: demo
repo: https://git.example.com/app.git
ssh: {{known_hosts: known_hosts, connect_timeout: 2}}
database: {{name: app}}
schedules:
  - {{name: maintenance, cron: "0 3 * * 0", command: maintenance.run}}
hosts:
  - {{name: web1, address: 127.0.0.1, port: {p[0]}, roles: [web, worker, migrate]}}
  - {{name: web2, address: 127.0.0.1, port: {p[1]}, roles: [web, worker]}}
  - {{name: db1, address: 127.0.0.1, port: {p[2]}, roles: [db, ledger]}}
""")
    return root


# -- the two front ends are one CLI -------------------------------------------------------------

def test_every_click_command_is_an_invoke_task_and_back():
    inv_paths = set()

    def walk(coll, prefix=()):
        for name in coll.tasks:
            inv_paths.add((*prefix, name))
        for name, sub in coll.collections.items():
            walk(sub, (*prefix, name))

    walk(tasks.ns)
    assert inv_paths == set(PATHS)
    assert {"init", "exec", "demo"} <= {p[-1] for p in PATHS}


def test_the_repositorys_tasks_py_is_the_packages_collection():
    spec = importlib.util.spec_from_file_location("repo_tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ns is tasks.ns


def test_every_command_and_option_has_help():
    for path, cmd in VERBS:
        assert cmd.help and cmd.help.strip(), f"{' '.join(path)} has no help"
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"{' '.join(path)} {p.opts[0]} has no help"
    for name in ("maintenance", "cron", "fleet"):
        assert cli.commands[name].help


def sample_args(cmd) -> tuple[list[str], list[str]]:
    """Every option of `cmd` with a sample value (flags set, the --no- side of a pair): the
    arguments, and the values a verb must receive."""
    args: list[str] = []
    values: list[str] = []
    for p in cmd.params:
        if not isinstance(p, click.Option):
            continue
        flag = next(o for o in p.opts if o.startswith("--"))
        if p.is_flag:
            args.append(p.secondary_opts[0] if p.secondary_opts else flag)
            continue
        if p.multiple:
            items = ["health.passes=2", "parallel=3"]
        elif isinstance(p.type, click.Choice):
            items = [list(p.type.choices)[-1]]
        elif p.type.name == "integer":
            items = ["7"]
        elif p.type.name == "float":
            items = ["1.5"]
        else:
            items = [f"v-{p.name.replace('_', '-')}"]
        for item in items:
            args += [flag, item]
        values += items
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    if arguments and arguments[0].nargs == -1:
        args += ["--", "echo", "two words", "--three"]
        values += ["echo", "two words", "--three"]
    elif arguments:
        args += ["--", "a-topic"]
        values += ["a-topic"]
    return args, values


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_both_front_ends_pass_the_same_values_to_the_verb(path, capsys, monkeypatch):
    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            return 0
        return record

    for name in ("deploy", "rollback", "resume", "releases", "preflight", "report", "status", "unlock",
                 "recover", "restore", "secrets_set", "exec_", "init", "maintenance_mode", "maintenance_run", "cron", "docs", "fleet_up",
                 "fleet_down", "fleet_status", "demo", "config_show", "config_check"):
        monkeypatch.setattr(verbs, name, recorder(name))
    args, values = sample_args(command(path))
    assert both(path, args, capsys, monkeypatch)[0] == 0
    assert len(calls) == 2 and calls[0] == calls[1], calls
    # ...and every value given reached the verb
    _, pos, kw = calls[0]
    received = set()
    for v in [*pos, *kw.values()]:
        received |= {str(x) for x in v} if isinstance(v, (tuple, list)) else {str(v)}
    assert set(values) <= received, (set(values) - received, kw)


def test_inverse_and_repeated_flags_reach_click(capsys, monkeypatch):
    got = []
    monkeypatch.setattr(verbs, "deploy", lambda env, ref, **kw: got.append(kw) or 0)
    both(("deploy",), ["-e", "prod", "--no-maintenance", "-y", "--set", "a=1", "--set", "b=2",
                       "--hosts", "web1,web2", "--lock-wait", "5"], capsys, monkeypatch)
    assert got[0] == got[1]
    assert got[0]["maintenance"] is False and got[0]["yes"] is True
    assert got[0]["sets"] == ("a=1", "b=2") and got[0]["hosts"] == "web1,web2"
    assert got[0]["lock_wait"] == 5.0


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_help(path, capsys, monkeypatch):
    code, out, err = both(path, ["--help"], capsys, monkeypatch)
    assert code == 0 and out.startswith("Usage: PROG [OPTIONS]") and not err
    assert command(path).help.split("\n")[0].strip() in " ".join(out.split())
    assert both(path, ["-h"], capsys, monkeypatch) == (code, out, err)


@pytest.mark.parametrize("path", WITH_ENV, ids=[" ".join(p) for p in WITH_ENV])
def test_missing_env_is_a_usage_error(path, capsys, monkeypatch):
    args = {("exec",): ["--", "true"], ("secrets", "set"): ["--", ".env"]}.get(path, [])
    code, out, err = both(path, args, capsys, monkeypatch)
    assert code == 2 and not out
    assert err == "error: Missing option '--env' / '-e'. (see 'PROG --help')\n"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_an_unknown_flag_is_bad_input_in_both(path, capsys, monkeypatch):
    c = run_click(path, ["--bogus"], capsys)
    i = run_inv(path, ["--bogus"], capsys, monkeypatch)
    assert c[0] == i[0] == 2
    for _, out, err in (c, i):
        assert not out and len(err.splitlines()) == 1 and "--bogus" in err


@pytest.mark.parametrize("path", WITH_CONFIG, ids=[" ".join(p) for p in WITH_CONFIG])
def test_bad_env_missing_inventory_bad_set_and_bad_root(path, project, capsys, monkeypatch):
    tail = {("exec",): ["--", "true"], ("restore",): ["--files"], ("secrets", "set"): ["--", ".env"]}.get(path, [])
    code, out, err = both(path, ["--env", "Bad!", "--root", str(project), *tail], capsys, monkeypatch)
    assert (code, err) == (2, "error: environment 'Bad!': expected lowercase letters, digits, _ and -, "
                              "starting with a letter\n")
    code, out, err = both(path, ["--env", "nosuch", "--root", str(project), *tail], capsys, monkeypatch)
    assert (code, err) == (2, "error: hosts/nosuch.yaml: no such inventory (known envs: unreach)\n")
    code, out, err = both(path, ["--env", "unreach", "--root", str(project), "--set", "paralel=2", *tail],
                          capsys, monkeypatch)
    assert (code, err) == (2, "error: --set paralel: unknown key (did you mean 'parallel'?)\n")
    code, out, err = both(path, ["--env", "unreach", "--root", str(project), "--set", "parallel", *tail],
                          capsys, monkeypatch)
    assert (code, err) == (2, "error: --set parallel: expected key=value, e.g. --set parallel=5\n")
    code, out, err = both(path, ["--env", "unreach", "--root", str(project / "nope"), *tail],
                          capsys, monkeypatch)
    assert (code, err) == (2, f"error: --root {project / 'nope'}: no such directory\n")


@pytest.mark.parametrize("path", WITH_HOSTS, ids=[" ".join(p) for p in WITH_HOSTS])
def test_unknown_hosts_and_roles(path, project, capsys, monkeypatch):
    tail = ["--", "true"] if path == ("exec",) else []
    code, out, err = both(path, ["-e", "unreach", "--root", str(project), "--hosts", "web1,web9", *tail],
                          capsys, monkeypatch)
    assert code == 2
    assert err.startswith("error: --hosts: unknown host 'web9' in hosts/unreach.yaml (hosts: web1, web2, db1)")
    code, out, err = both(path, ["-e", "unreach", "--root", str(project), "--roles", "lb", *tail],
                          capsys, monkeypatch)
    assert code == 2 and err.startswith("error: --roles: unknown role 'lb' in hosts/unreach.yaml")


#: what each verb does with hosts that refuse the connection: its arguments and exit code
UNREACHABLE = [
    (("deploy",), ["--dry-run"], 3),
    (("deploy",), ["--yes", "--no-maintenance"], 3),
    (("rollback",), ["--dry-run"], 3),
    (("rollback",), ["--yes", "--to", "v1"], 3),
    (("promote",), [], 3),
    (("abort",), [], 3),
    (("releases",), [], 3),
    (("status",), [], 3),
    (("status",), ["--hosts", "web2"], 3),
    (("unlock",), ["--force"], 3),
    (("recover",), [], 3),
    (("preflight",), [], 3),
    (("report",), [], 3),
    (("maintenance", "on"), [], 3),
    (("maintenance", "off"), ["--roles", "worker"], 3),
    (("maintenance", "run"), ["--force", "--reason", "test"], 3),
    (("exec",), ["--", "true"], 3),
    (("cron", "show"), [], 0),
]


@pytest.mark.parametrize("path,args,expected", UNREACHABLE,
                         ids=[" ".join([*p, *a]) for p, a, _ in UNREACHABLE])
def test_unreachable_hosts(path, args, expected, project, capsys, monkeypatch):
    code, out, err = both(path, ["-e", "unreach", "--root", str(project), *args], capsys, monkeypatch)
    assert code == expected, (out, err)
    if expected == 3:
        assert "127.0.0.1" in err and "Traceback" not in err


def test_unreachable_with_narrowing_and_json(project, capsys, monkeypatch):
    code, out, err = both(("exec",), ["-e", "unreach", "--root", str(project), "--roles", "db",
                                      "--output", "json", "--", "uptime"], capsys, monkeypatch)
    assert code == 3
    rows = [line for line in out.splitlines() if '"event": "row"' in line]
    assert len(rows) == 1 and '"host": "db1"' in rows[0] and '"exit": "unreachable"' in rows[0]
    assert out.splitlines()[-1].startswith('{"at": ') and '"exit_code": 3' in out.splitlines()[-1]


def test_an_unexpected_error_is_one_line_exit_4_and_the_traceback_only_with_verbose(
        project, capsys, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(verbs, "load_layered", boom)
    code, out, err = both(("status",), ["-e", "unreach", "--root", str(project)], capsys, monkeypatch)
    assert (code, out) == (4, "")
    assert err == "error: RuntimeError: boom (--verbose shows the traceback)\n"
    code, out, err = both(("status",), ["-e", "unreach", "--root", str(project), "-v"], capsys, monkeypatch)
    assert code == 4 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "error: RuntimeError: boom"


def test_an_unexpected_error_outside_a_verb_is_one_line_too(capsys, monkeypatch):
    monkeypatch.setattr(verbs, "fleet_status", lambda **kw: 1 / 0)
    code, out, err = both(("fleet", "status"), [], capsys, monkeypatch)
    assert (code, out) == (4, "")
    assert err == "error: ZeroDivisionError: division by zero (--verbose shows the traceback)\n"


def _ctrl_c_inside_a_lock(*a, **kw):
    """What Python raises when Ctrl-C strikes while the main thread re-takes a Condition's
    plain lock (threading.Event, paramiko's waits): the lock's release fails in `with`."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise RuntimeError("release unlocked lock")  # noqa: B904 - as threading does


def test_ctrl_c_reported_as_a_lock_error_is_still_an_interruption(project, capsys, monkeypatch):
    from deployer.errors import interrupted

    try:
        _ctrl_c_inside_a_lock()
    except RuntimeError as exc:
        assert interrupted(exc)
    assert not interrupted(RuntimeError("release unlocked lock"))
    monkeypatch.setattr(verbs, "load_layered", _ctrl_c_inside_a_lock)
    code, out, err = both(("status",), ["-e", "unreach", "--root", str(project)], capsys, monkeypatch)
    assert (code, err) == (130, "interrupted\n")
    monkeypatch.setattr(verbs, "fleet_status", _ctrl_c_inside_a_lock)
    code, out, err = both(("fleet", "status"), [], capsys, monkeypatch)
    assert (code, err) == (130, "interrupted\n")


def test_report_goes_to_the_current_directory_by_default(project, tmp_path, monkeypatch):
    from deployer import inspect

    seen = {}
    monkeypatch.setattr(inspect, "report", lambda cfg, rep, release=None, out=None:
                        seen.update(root=cfg.root, out=out) or 0)
    monkeypatch.chdir(tmp_path)
    assert verbs.report("unreach", root=str(project)) == 0
    assert seen == {"root": tmp_path, "out": None}
    assert verbs.report("unreach", root=str(project), out="x.html") == 0
    assert seen == {"root": project, "out": "x.html"}


# -- --yes: a real question on a terminal -------------------------------------------------------

class Tty:
    def __init__(self, text=""):
        self.text = text

    def isatty(self):
        return True

    def readline(self):
        return self.text

    def write(self, s):
        return len(s)

    def flush(self):
        pass


def test_deploy_asks_on_a_terminal_and_refuses_without_yes(project, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    code = verbs.deploy("unreach", "v2", root=str(project))
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("deploy v2 to unreach: 2 app hosts (web1, web2)? [y/N] ")
    assert "error: not confirmed: nothing was changed\nhint: --yes skips this question\n" in err
    # yes: on to the deploy itself (refused here: the hosts do not answer)
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    assert verbs.deploy("unreach", "v2", root=str(project)) == 3
    assert "Connection refused" in capsys.readouterr().err
    # --yes and --dry-run never ask
    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    for kw in ({"yes": True}, {"dry_run": True}):
        assert verbs.deploy("unreach", "v2", root=str(project), **kw) == 3
        assert "[y/N]" not in capsys.readouterr().err


def test_no_question_without_a_terminal(project, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Tty("n\n"))  # stdout is captured: not a terminal
    assert verbs.rollback("unreach", root=str(project)) == 3
    assert "[y/N]" not in capsys.readouterr().err


# -- the real programs, as a user runs them -----------------------------------------------------

def sh(*argv, cwd=ROOT):
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)


def test_inv_and_deployer_programs(project):
    inv = str(Path(sys.executable).parent / "inv")
    p = sh(inv, "deploy", "--help")
    assert p.returncode == 0 and "Usage: inv deploy [OPTIONS]" in p.stdout and "--no-maintenance" in p.stdout
    p = sh(inv, "deploy")
    assert (p.returncode, p.stderr) == (2, "error: Missing option '--env' / '-e'. (see 'inv deploy --help')\n")
    p = sh(inv, "deploy", "-e", "prod", "--bogus")
    assert p.returncode == 2 and p.stderr.startswith("error: No idea what '--bogus' is!")
    p = sh(inv, "exec", "-e", "unreach", "--root", str(project), "--hosts", "web2", "--", "echo", "a b")
    assert p.returncode == 3 and p.stderr.splitlines()[-1] == "error: exec: no host reachable: web2 (unreachable)"
    for program in ("deployer.cli", "deployer"):
        p = sh(sys.executable, "-m", program, "deploy", "-e", "unreach", "--root", str(project), "--dry-run")
        assert p.returncode == 3 and "Traceback" not in p.stderr and "Connection refused" in p.stderr


def test_the_program_exits_with_its_code_its_output_whole_its_exit_handlers_run_and_a_working_thread_waited_for(tmp_path):
    done = tmp_path / "done"
    p = sh(sys.executable, "-c", f"""
import atexit, sys, threading, time
from deployer import verbs
atexit.register(lambda: open({str(tmp_path / "handler")!r}, "w").write("ran"))
sys.stdout.write("x" * 100000)  # still in the buffer
sys.stderr.write("last words")
t = threading.Thread(target=lambda: (time.sleep(0.3), open({str(done)!r}, "w").write("written")))
t.start()
verbs.exit_now(3)
""")
    assert (p.returncode, len(p.stdout), p.stderr) == (3, 100000, "last words")
    assert done.read_text() == "written"
    assert (tmp_path / "handler").read_text() == "ran"
    # no thread left: the fast way out, exit handlers included
    p = sh(sys.executable, "-c", f"""
import atexit, sys
from deployer import verbs
atexit.register(lambda: open({str(tmp_path / "fast")!r}, "w").write("ran"))
print("out")
verbs.exit_now(5)
""")
    assert (p.returncode, p.stdout, (tmp_path / "fast").read_text()) == (5, "out\n", "ran")
