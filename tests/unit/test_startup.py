"""The program's startup pauses the garbage collector until the first host is contacted; deployer
imported as a library never touches it."""

import subprocess
import sys


def run(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_imported_as_a_library_deployer_leaves_the_collector_alone():
    out = run("import gc; from deployer import cli, startup; from deployer.engine import deploy; "
              "startup.over(); print(gc.isenabled(), gc.get_freeze_count())")
    assert out == "True 0"


def test_the_program_pauses_the_collector_then_freezes_its_startup_when_a_host_is_contacted():
    out = run("import gc; from deployer import startup; startup.pause(); paused = not gc.isenabled(); "
              "from deployer import cli; from deployer.engine import deploy; startup.over(); "
              "frozen = gc.get_freeze_count(); startup.over(); "
              "print(paused, gc.isenabled(), frozen > 50000, gc.get_freeze_count() == frozen)")
    assert out == "True True True True"


CONNECT = """
import gc, socket, sys
from deployer import startup
startup.pause()
from deployer.connect import Connector, SSHSettings
from deployer.errors import ConnectError
from deployer.sshconfig import Endpoint
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()  # nothing listens
before = gc.isenabled()
try:
    Connector(SSHSettings(known_hosts=sys.argv[1], connect_timeout=2)).open(Endpoint("web1", "127.0.0.1", port, "deploy"))
except ConnectError:
    pass
print(before, gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_the_ssh_connector_ends_the_startup_when_it_contacts_a_host(tmp_path):
    (tmp_path / "known_hosts").write_text("")
    res = subprocess.run([sys.executable, "-c", CONNECT, str(tmp_path / "known_hosts")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False True True"


def test_python_m_deployer_runs_the_program():
    res = subprocess.run([sys.executable, "-m", "deployer", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "0." in res.stdout
