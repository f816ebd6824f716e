"""Release artifacts: a release built once (on the build host), packed with its sha256, and
fetched by the other app hosts straight from the build host (never through the orchestrator).

Each host side is a short Python 3 program run with `python3 -c` (the standard library only:
Python 3 is on the app hosts of every Debian and Ubuntu release; preflight checks it):

- **pack** (build host): the release tree, minus its own secret files, into
  `<artifacts>/<release>.tar` (a temporary name, renamed), with `<release>.manifest` (the sha256
  and mode of every regular file) and `<release>.sha256` (the tar's and the manifest's sha256);
  prints `<sha256> <size>`.
- **serve** (build host): those three files, and nothing else, over HTTP on the host's private
  address under a capability path (a random token handed on stdin, never in argv); a detached
  process bounded by timeout(1), stopped after the other hosts fetched.
- **fetch** (every other app host): the tar (the URL on stdin), verified against the served
  sha256 before anything is unpacked; each regular file whose sha256 and mode the previous
  release's manifest has too is hard-linked from that release instead of written again; prints
  `<sha256> <size> <linked files>`, which the orchestrator compares with the build's.
"""

from __future__ import annotations

import posixpath
import re

from ..layout import Layout
from ..shell import Command, q, raw

#: what each host prints last: the artifact's sha256 and size (fetch: and the files linked)
_LINE_RE = re.compile(r"^([0-9a-f]{64}) (\d+)(?: (\d+))?$")

PACK_PY = r'''
# deployer: artifact pack
import hashlib, json, os, sys, tarfile
src, art, release = sys.argv[1:4]
skip = set(sys.argv[4:])
os.umask(0o077)
class W:
    def __init__(s, f): s.f, s.h, s.n = f, hashlib.sha256(), 0
    def write(s, b): s.h.update(b); s.n += len(b); return s.f.write(b)
man = {}
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
    return h.hexdigest()
def keep(ti):
    if ti.name in skip: return None
    ti.uid = ti.gid = 0; ti.uname = ti.gname = ""
    if ti.isfile(): man[ti.name] = [sha(os.path.join(src, ti.name)), ti.mode]
    return ti
tmp = os.path.join(art, release + ".tar.partial")
os.makedirs(art, exist_ok=True)
with open(tmp, "wb") as f:
    w = W(f)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(src)):
            t.add(os.path.join(src, name), arcname=name, filter=keep)
    f.flush(); os.fsync(f.fileno())
mtext = json.dumps(man, sort_keys=True).encode()
with open(os.path.join(art, release + ".manifest.partial"), "wb") as f: f.write(mtext)
with open(os.path.join(art, release + ".sha256.partial"), "w") as f:
    f.write(w.h.hexdigest() + " " + hashlib.sha256(mtext).hexdigest() + "\n")
for ext in (".manifest", ".sha256", ".tar"):
    os.replace(os.path.join(art, release + ext + ".partial"), os.path.join(art, release + ext))
print(w.h.hexdigest(), w.n)
'''

SERVE_PY = r'''
# deployer: artifact server
import http.server, os, sys
art, release, bind, port, ready = sys.argv[1:6]
token = os.environ.pop("DEPLOYER_ARTIFACT_TOKEN")
files = {"/%s/%s%s" % (token, release, ext): os.path.join(art, release + ext)
         for ext in (".tar", ".manifest", ".sha256")}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(s):
        p = files.get(s.path)
        if p is None:
            s.send_error(404); return
        with open(p, "rb") as f:
            s.send_response(200)
            s.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            s.end_headers()
            while True:
                b = f.read(1 << 20)
                if not b: break
                s.wfile.write(b)
    def log_message(s, *a): pass
http.server.ThreadingHTTPServer.daemon_threads = True
srv = http.server.ThreadingHTTPServer((bind, int(port)), H)
open(ready, "w").close()
srv.serve_forever()
'''

FETCH_PY = r'''
# deployer: artifact fetch
import hashlib, json, os, shutil, stat, sys, tarfile, urllib.request
art, release, dest, prev_dir, prev_man = sys.argv[1:6]
base = sys.stdin.readline().strip()
os.makedirs(art, exist_ok=True)
def get(name):
    return urllib.request.urlopen(base + "/" + release + name, timeout=30)
want_tar, want_man = get(".sha256").read().decode().split()[:2]
mtext = get(".manifest").read()
if hashlib.sha256(mtext).hexdigest() != want_man:
    sys.exit("artifact: the manifest of %s does not match its sha256" % release)
man = json.loads(mtext)
tmp = os.path.join(art, release + ".tar.partial")
h, n = hashlib.sha256(), 0
with get(".tar") as r, open(tmp, "wb") as f:
    while True:
        b = r.read(1 << 20)
        if not b: break
        h.update(b); n += len(b); f.write(b)
if h.hexdigest() != want_tar:
    os.unlink(tmp)
    sys.exit("artifact: %s arrived with sha256 %s, the build host's is %s: nothing unpacked"
             % (release, h.hexdigest(), want_tar))
try:
    with open(prev_man) as f: old = json.load(f)
except (OSError, ValueError):
    old = {}
part = dest + ".partial"
shutil.rmtree(part, ignore_errors=True)
os.makedirs(part)
linked = 0
dirs = []
with tarfile.open(tmp, "r:") as t:
    for m in t:
        name = m.name
        if name.startswith("/") or ".." in name.split("/"):
            sys.exit("artifact: refusing member %r" % name)
        p = os.path.join(part, name)
        if m.isdir():
            os.makedirs(p, exist_ok=True); dirs.append((p, m)); continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if m.issym():
            os.symlink(m.linkname, p); continue
        if not m.isfile():
            continue
        q = os.path.join(prev_dir, name)
        if man.get(name) and old.get(name) == man[name]:
            try:
                if os.lstat(q).st_size == m.size and stat.S_ISREG(os.lstat(q).st_mode):
                    os.link(q, p); linked += 1; continue
            except OSError:
                pass
        with t.extractfile(m) as src, open(p, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(p, m.mode & 0o7777)
        os.utime(p, (m.mtime, m.mtime))
for p, m in reversed(dirs):
    os.chmod(p, m.mode & 0o7777)
with open(os.path.join(art, release + ".manifest"), "wb") as f: f.write(mtext)
shutil.rmtree(dest, ignore_errors=True)
os.rename(part, dest)
os.unlink(tmp)
print(h.hexdigest(), n, linked)
'''


def _py(program: str, shown: str, *args: str) -> tuple[str, str]:
    """`python3 -c PROGRAM ARGS...` (each word quoted), and how it is shown (`<shown>` for the
    program text)."""
    words = " ".join(q(a) for a in args)
    return f"python3 -c {q(program)} {words}", f"python3 -c <{shown}> {words}"


def directory(deploy_to: str) -> str:
    """Where a host keeps artifacts and their manifests."""
    return Layout(deploy_to).artifacts


def pack(deploy_to: str, release: str, exclude: list[str]) -> Command:
    """On the build host, after the build: the release tree (minus `exclude`, its own secret
    files, relative paths) packed; prints `<sha256> <size>`."""
    lay = Layout(deploy_to)
    script, shown = _py(PACK_PY, "artifact pack", lay.release(release), directory(deploy_to), release, *exclude)
    return Command(script, shown)


def _pidfile(deploy_to: str) -> str:
    return posixpath.join(directory(deploy_to), "serve.pid")


def serve(deploy_to: str, release: str, bind: str, port: int, ttl: int) -> Command:
    """Start serving `release`'s artifact on `bind`:`port` for at most `ttl` seconds, detached
    (its own session: the SSH session's end does not stop it); the token comes on stdin. Ready
    when it listens; a server that could not start (the port taken) fails with its error."""
    art = directory(deploy_to)
    ready, log, pid = posixpath.join(art, "serve.ready"), posixpath.join(art, "serve.log"), _pidfile(deploy_to)
    prog, shown = _py(SERVE_PY, "artifact server", art, release, bind, str(port), ready)
    start = (f"IFS= read -r DEPLOYER_ARTIFACT_TOKEN || exit 1; export DEPLOYER_ARTIFACT_TOKEN; "
             f"mkdir -p {q(art)} && rm -f {q(ready)} || exit 1; "
             f"[ ! -s {q(pid)} ] || kill \"$(cat {q(pid)})\" 2>/dev/null; "
             f"setsid timeout {int(ttl)} {{prog}} </dev/null >{q(log)} 2>&1 & echo $! > {q(pid)}; "
             f"unset DEPLOYER_ARTIFACT_TOKEN; i=0; while [ ! -e {q(ready)} ]; do "
             f"kill -0 \"$(cat {q(pid)})\" 2>/dev/null || {{ echo \"artifact server on {bind}:{port} did not start: "
             f"$(tail -n 3 {q(log)})\" >&2; exit 1; }}; i=$((i+1)); [ $i -lt 500 ] || "
             f"{{ echo 'artifact server: not listening after 10s' >&2; exit 1; }}; sleep 0.02; done")
    return Command(start.replace("{prog}", prog), start.replace("{prog}", shown))


def stop(deploy_to: str) -> Command:
    """Stop the artifact server (nothing when none runs)."""
    pid = q(_pidfile(deploy_to))
    return raw(f"if [ -s {pid} ]; then kill \"$(cat {pid})\" 2>/dev/null; rm -f {pid}; fi; true")


def url(address: str, port: int, token: str) -> str:
    """Where the other hosts fetch the artifact (followed by `/<release>.tar`)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/{token}"


def fetch(deploy_to: str, release: str, previous: str | None) -> Command:
    """On an app host: fetch, verify and unpack `release` (the URL on stdin), hard-linking the
    files unchanged since `previous` (the release it serves); prints `<sha256> <size> <linked>`."""
    lay = Layout(deploy_to)
    prev = previous or "none"
    script, shown = _py(FETCH_PY, "artifact fetch", lay.artifacts, release, lay.release(release), lay.release(prev),
                        lay.artifact(prev, ".manifest"))
    return Command(script, shown)


def prune(deploy_to: str, releases: list[str]) -> Command:
    """The build host's artifacts of `releases` removed (beyond `artifact.keep`, or a bad
    release's)."""
    lay = Layout(deploy_to)
    paths = [lay.artifact(r, ext) for r in releases for ext in (".tar", ".manifest", ".sha256")]
    return raw("rm -f -- " + " ".join(q(p) for p in paths)) if paths else raw("true")


def parse(line: str) -> tuple[str, int, int]:
    """(sha256, size, files linked) from the last line a pack or a fetch printed."""
    m = _LINE_RE.match(line.strip())
    if not m:
        raise ValueError(f"artifact: unexpected output {line[:120]!r}")
    return m.group(1), int(m.group(2)), int(m.group(3) or 0)
