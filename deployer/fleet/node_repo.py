"""Build the git repository of the Node.js example app (examples/node-app) the tests deploy.

Like the demo and Django repos (demo_repo.py): ``app/`` is the full v1 tree, ``versions/<tag>/``
files copied over the parent tag's tree (the new migrations), and :data:`VERSIONS` the exact
text edits of each tag's code; every tag's ``VERSION`` file holds its name.

* ``v1``: Express app, worker, knex migration 001;
* ``v2``: migration 002 (online-safe: ``notes.processed_by``, with a constant default); the
  worker records which release processed a note;
* ``v3-bad``: migration 003 (online-safe, a nullable column) and /health answers 500.

``python -m deployer.fleet.node_repo DEST`` prints ``tag sha``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .demo_repo import Version, build_repo, version_trees_of

NODE_APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "node-app"
EXECUTABLES: set[str] = set()

_WORKER_UPDATE_V1 = """update({ processed_at: db.fn.now() })"""
_WORKER_UPDATE_V2 = """update({ processed_at: db.fn.now(), processed_by: REVISION })"""
_JSON_V1 = """  return { id: note.id, text: note.text, processed: note.processed_at !== null };
"""
_JSON_V2 = """  return { id: note.id, text: note.text, processed: note.processed_at !== null,
           processed_by: note.processed_by };
"""
_HEALTH_RETURN = """  res.status(body.status === "ok" ? 200 : 503).json(body);
"""

VERSIONS: tuple[Version, ...] = (
    Version("v1", None, "node app v1: Express web, worker, knex migration 001_create_notes"),
    Version(
        "v2",
        "v1",
        "v2: online-safe migration 002_notes_processed_by; the worker records its release",
        edits=(
            ("worker.js", _WORKER_UPDATE_V1, _WORKER_UPDATE_V2),
            ("server.js", _JSON_V1, _JSON_V2),
        ),
    ),
    Version(
        "v3-bad",
        "v2",
        "v3-bad: migration 003_notes_priority, and /health answers 500",
        edits=(
            ("server.js", _HEALTH_RETURN,
             '  body.status = "fail"; // v3-bad: a regression\n'
             "  res.status(500).json(body);\n"),
        ),
    ),
)


def version_trees() -> dict[str, dict[str, bytes]]:
    return version_trees_of(VERSIONS, NODE_APP_DIR / "app", NODE_APP_DIR / "versions", "node repo")


def build_node_repo(dest: Path) -> dict[str, str]:
    """(Re)create the Node.js app's git repository at ``dest``; return tag -> commit sha."""
    return build_repo(Path(dest), VERSIONS, version_trees(), EXECUTABLES, main="v2")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m deployer.fleet.node_repo DEST", file=sys.stderr)
        return 2
    for tag, sha in build_node_repo(Path(argv[0])).items():
        print(f"{tag} {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
