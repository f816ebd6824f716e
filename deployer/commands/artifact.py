"""Release artifacts: a release built once (on the build host), packed with its sha256, and
fetched by the other app hosts straight from the build host or from the state's bucket (never
through the orchestrator).

The build host's side is a short Python 3 program run with `python3 -c` (the standard library
only; preflight checks python3 there); the other hosts' side is POSIX sh and C tools (curl,
sha256sum, awk, GNU xargs, cp and tar), as it runs on every host at once:

- **pack** (build host): the release tree, minus its own secret files, into
  `<artifacts>/<release>.tar` (a temporary name, renamed), with `<release>.manifest` (the sha256
  and mode of every regular file) and `<release>.sha256` (the tar's and the manifest's sha256);
  prints `<sha256> <size>`.
- **serve** (build host): those three files, and nothing else, over HTTP on the host's private
  address under a capability path (a random token handed on stdin, never in argv); a detached
  process bounded by timeout(1), stopped after the other hosts fetched.
- **upload** (build host, `artifact.store: bucket`): the three files sent to the bucket with one
  curl, to presigned PUT URLs read on stdin, the sha256 last.
- **fetch** (every other app host): the manifest and the tar (their URLs on stdin: the build
  host's server's, or the bucket's presigned ones), verified
  against the served sha256 before anything is unpacked; each regular file whose sha256 and mode
  the previous release's manifest has too is hard-linked from that release instead of written
  again (the manifest: `<sha256> <octal mode> <path>` lines, sorted); prints
  `<sha256> <size> <linked files>`, which the orchestrator compares with the build's.
"""

from __future__ import annotations

import posixpath
import re

from ..layout import ARTIFACT_FILES, Layout
from ..shell import Command, q, raw

#: the order `upload` reads its URLs in: the tar, the manifest, and last the sha256 that says
#: the artifact is whole
UPLOAD_ORDER = (".tar", ".manifest", ".sha256")
#: the order `fetch` reads its URLs in (the sha256 first: it says what to expect)
FETCH_ORDER = (".sha256", ".manifest", ".tar")

#: what each host prints last: the artifact's sha256 and size (fetch: and the files linked)
_LINE_RE = re.compile(r"^([0-9a-f]{64}) (\d+)(?: (\d+))?$")

PACK_PY = r'''
# deployer: artifact pack
import hashlib, os, sys, tarfile
src, art, release = sys.argv[1:4]
skip = set(sys.argv[4:])
os.umask(0o077)
class W:
    def __init__(s, f): s.f, s.h, s.n = f, hashlib.sha256(), 0
    def write(s, b): s.h.update(b); s.n += len(b); return s.f.write(b)
# the owners are zeroed below: no user or group database lookup per file
tarfile.pwd = tarfile.grp = None
man = {}
class R:
    # a regular file read once: hashed for the manifest as it is copied into the tar
    def __init__(s, f): s.f, s.h = f, hashlib.sha256()
    def read(s, n=-1):
        b = s.f.read(n); s.h.update(b); return b
def put(t, path, name):
    ti = t.gettarinfo(path, name)
    if ti is None or name in skip: return
    if "\n" in name: sys.exit("artifact: a file name with a newline: %r" % name)
    # whole seconds: a float mtime would cost every member a pax header of its own
    ti.uid = ti.gid = 0; ti.uname = ti.gname = ""; ti.mtime = int(ti.mtime)
    if ti.isreg():
        with open(path, "rb") as f:
            r = R(f)
            t.addfile(ti, r)
        man[name] = "%s %o %s" % (r.h.hexdigest(), ti.mode & 0o7777, name)
        return
    t.addfile(ti)
    if ti.isdir():
        for n in sorted(os.listdir(path)): put(t, os.path.join(path, n), name + "/" + n)
tmp = os.path.join(art, release + ".tar.partial")
os.makedirs(art, exist_ok=True)
with open(tmp, "wb") as f:
    w = W(f)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(src)):
            put(t, os.path.join(src, name), name)
    f.flush(); os.fsync(f.fileno())
mtext = "".join(line + "\n" for line in sorted(man.values())).encode("utf-8", "surrogateescape")
with open(os.path.join(art, release + ".manifest.partial"), "wb") as f: f.write(mtext)
with open(os.path.join(art, release + ".sha256.partial"), "w") as f:
    f.write(w.h.hexdigest() + " " + hashlib.sha256(mtext).hexdigest() + "\n")
for ext in (".manifest", ".sha256", ".tar"):
    os.replace(os.path.join(art, release + ext + ".partial"), os.path.join(art, release + ext))
print(w.h.hexdigest(), w.n)
'''

SERVE_PY = r'''
# deployer: artifact server
import http.server, os, sys, tarfile, threading
art, release, bind, port, ready = sys.argv[1:6]
token = os.environ.pop("DEPLOYER_ARTIFACT_TOKEN")
files = {"/%s/%s%s" % (token, release, ext): os.path.join(art, release + ext)
         for ext in (".tar", ".manifest", ".sha256")}
tar = os.path.join(art, release + ".tar")
members, mu = [], threading.Lock()
def index():
    # each member's bytes in the tar: (start, end, name, regular file); headers read once
    with mu:
        if not members:
            with tarfile.open(tar) as t:
                for m in t:
                    members.append((m.offset, m.offset_data + (m.size + 511) // 512 * 512, m.name, m.isreg()))
        return members
class H(http.server.BaseHTTPRequestHandler):
    def send(s, f, ranges, extra=b""):
        s.send_response(200)
        s.send_header("Content-Length", str(sum(b - a for a, b in ranges) + len(extra)))
        s.end_headers()
        for a, b in ranges:
            f.seek(a)
            while a < b:
                chunk = f.read(min(1 << 20, b - a))
                if not chunk: raise OSError("short read")
                s.wfile.write(chunk); a += len(chunk)
        s.wfile.write(extra)
    def do_GET(s):
        p = files.get(s.path)
        if p is None:
            s.send_error(404); return
        with open(p, "rb") as f:
            s.send(f, [(0, os.fstat(f.fileno()).st_size)])
    def do_POST(s):
        # a tar of the regular files named in the body (one path a line) and of every folder
        # and link: the members' bytes as packed, then the end of the archive
        n = int(s.headers.get("Content-Length") or 0)
        if files.get(s.path) != tar or n > (64 << 20):
            s.send_error(404 if n <= (64 << 20) else 413); return
        want = set(s.rfile.read(n).decode("utf-8", "surrogateescape").split("\n"))
        with open(tar, "rb") as f:
            s.send(f, [(a, b) for a, b, name, reg in index() if not reg or name in want], b"\0" * 1024)
    def log_message(s, *a): pass
http.server.ThreadingHTTPServer.daemon_threads = True
srv = http.server.ThreadingHTTPServer((bind, int(port)), H)
# the members are indexed while the hosts compare their manifests, before they ask
threading.Thread(target=index, daemon=True).start()
open(ready, "w").close()
srv.serve_forever()
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


def urls(address: str, port: int, token: str, release: str) -> str:
    """Where the other hosts fetch `release`'s artifact from the build host's server: the URLs of
    its `.sha256`, `.manifest` and `.tar`, one per line (what `fetch` reads on stdin)."""
    host = f"[{address}]" if ":" in address else address
    return "".join(f"http://{host}:{port}/{token}/{release}{ext}\n" for ext in FETCH_ORDER)


def upload(deploy_to: str, release: str) -> Command:
    """On the build host: `release`'s artifact sent to the bucket with one `curl`, to the three
    presigned PUT URLs read on stdin (the tar's, the manifest's, then the sha256's: the last one
    says the artifact is whole)."""
    lay = Layout(deploy_to)
    t, m, h = (q(lay.artifact(release, ext)) for ext in ARTIFACT_FILES)
    script = (
        ": deployer artifact upload; IFS= read -r ut && IFS= read -r um && IFS= read -r uh || exit 1; "
        f"curl -fsS --connect-timeout 10 --max-time 1800 -T {t} \"$ut\" -o /dev/null -T {m} \"$um\" -o /dev/null "
        f"-T {h} \"$uh\" -o /dev/null "
        "|| { echo 'artifact: cannot upload it to the bucket' >&2; exit 1; }"
    )
    return Command(script, f"artifact upload {release} to the bucket")


def fetch(deploy_to: str, release: str, previous: str | None, source: str = "the build host",
          delta: bool = True) -> Command:
    """On an app host: fetch, verify and unpack `release` (the URLs of its `.sha256`, `.manifest`
    and `.tar` on stdin, one per line: `urls`, or the bucket's presigned ones), hard-linking the
    files unchanged since `previous` (the release it serves); prints `<sha256> <bytes fetched>
    <files linked>`. POSIX sh and C tools (curl, sha256sum, awk, GNU xargs, cp and tar), about a
    dozen processes: on a hundred hosts, this runs a hundred times at once.

    The manifest is checked against the sha256 file first. Then, with `delta` (the build host's
    server) and files to link, only the other files come (a POST of their paths: the server
    sends their members as packed, with every folder and link), each checked against the
    manifest's sha256 before anything moves into place; else the whole tar comes, checked
    against its sha256 before anything is unpacked."""
    lay = Layout(deploy_to)
    art, dest = lay.artifacts, lay.release(release)
    t, m, h = (q(lay.artifact(release, ext + ".partial")) for ext in ARTIFACT_FILES)
    part, same = q(dest + ".partial"), q(lay.artifact(release, ".same"))
    want, sums, out = (q(lay.artifact(release, ext)) for ext in (".want", ".sums", ".out"))
    prev, pm = q(lay.release(previous or "none")), q(lay.artifact(previous or "none", ".manifest"))
    scratch = " ".join((t, h, same, want, sums, out))  # removed on success and on failure (with the manifest)
    # curl prints the bytes it received (into `out`, read back by the shell): no `wc` process
    curl = "curl -fsS --connect-timeout 10 --max-time 600"
    cannot = q("cannot fetch it from " + source)
    whole = (f"{curl} -w '%{{size_download}}\\n' -o {t} \"$ut\" > {out} || fail {cannot}; read -r size < {out}; "
             f"sha256sum < {t} > {out} && read -r got _ < {out} && [ \"$got\" = \"$want_tar\" ] || "
             f"fail \"{release} arrived with sha256 $got, {source} says $want_tar: nothing unpacked\"; "
             f"tar -x -p --no-same-owner -f {t} -C {part} --anchored --no-wildcards -X {same} || fail 'cannot unpack'; ")
    only = (f"{curl} -H 'Expect:' --data-binary @{want} -w '%{{size_download}}\\n' -o {t} \"$ut\" > {out} || "
            f"fail {cannot}; read -r size < {out}; got=$want_tar; "
            f"tar -x -p --no-same-owner -f {t} -C {part} || fail 'cannot unpack'; "
            f"[ ! -s {sums} ] || (cd {part} && sha256sum --quiet --strict -c -) < {sums} >/dev/null 2>&1 || "
            f"fail \"{release}: a file arrived with another sha256 than its manifest says: nothing moved into place\"; ")
    # One awk pass over both manifests (`<sha256> <octal mode> <path>` lines): the lines the
    # served release's manifest has too (same bytes, same mode: their paths, to hard-link), the
    # others (their paths, to ask for; their sha256 and path, to check what arrives), how many
    # are linked. No order assumed.
    # (its four file names from the environment: awk's -v would read backslashes as escapes)
    split = ("NR == FNR { old[$0]; next } { p = $0; sub(/^[^ ]* [^ ]* /, \"\", p) } "
             "$0 in old { print p > ENVIRON[\"S\"]; k++; next } "
             "{ print p > ENVIRON[\"W\"]; print $1 \"  \" p > ENVIRON[\"C\"] } END { print k + 0 > ENVIRON[\"O\"] }")
    script = (
        ": deployer artifact fetch; IFS= read -r uh && IFS= read -r um && IFS= read -r ut || exit 1; "
        f"[ -d {q(art)} ] || mkdir -p {q(art)} || exit 1; "
        f"fail() {{ rm -f {m} {scratch}; rm -rf {part}; echo \"artifact: $*\" >&2; exit 1; }}; "
        f"{curl} -o {h} \"$uh\" -o {m} \"$um\" || fail {cannot}; "
        f"read -r want_tar want_man < {h} || fail 'an empty checksum file'; "
        f"sha256sum < {m} > {out} && read -r got _ < {out} && [ \"$got\" = \"$want_man\" ] || "
        f"fail 'the manifest of {release} does not match its sha256'; "
        f"{{ [ ! -e {part} ] || rm -rf {part}; }} && mkdir -p {part} || fail 'cannot make {dest}.partial'; "
        # the files the release it serves has with the same sha256 and mode: hard links
        f"linked=0; : > {same}; : > {want}; : > {sums}; if [ -f {pm} ] && [ -d {prev} ]; then "
        f"S={same} W={want} C={sums} O={out} LC_ALL=C awk {q(split)} {pm} {m} || "
        f"fail 'cannot compare the manifests'; "
        f"if [ -s {same} ] && (cd {prev} && xargs -d '\\n' cp -l --parents -t {part} -- < {same}); "
        f"then read -r linked < {out}; else : > {same}; rm -rf {part}; mkdir -p {part}; fi; fi; "
        + (f"if [ -s {same} ]; then {only}else {whole}fi; " if delta else whole)
        + f"mv -f {m} {q(lay.artifact(release, '.manifest'))} && rm -f {scratch} && "
        f"{{ [ ! -e {q(dest)} ] || rm -rf {q(dest)}; }} && mv -T {part} {q(dest)} || fail 'cannot move {dest} into place'; "
        f"echo \"$got $size $linked\""
    )
    return Command(script, f"artifact fetch {release} into {dest} (linking from {previous or 'nothing'})")


def prune(deploy_to: str, releases: list[str]) -> Command:
    """The build host's artifacts of `releases` removed (beyond `artifact.keep`, or a bad
    release's)."""
    lay = Layout(deploy_to)
    paths = [lay.artifact(r, ext) for r in releases for ext in ARTIFACT_FILES]
    return raw("rm -f -- " + " ".join(q(p) for p in paths)) if paths else raw("true")


def parse(line: str) -> tuple[str, int, int]:
    """(sha256, size, files linked) from the last line a pack or a fetch printed."""
    m = _LINE_RE.match(line.strip())
    if not m:
        raise ValueError(f"artifact: unexpected output {line[:120]!r}")
    return m.group(1), int(m.group(2)), int(m.group(3) or 0)
