"""Build the git repository of the Laravel example app (examples/laravel-app) the tests deploy.

Like the demo, Django and Node.js repos (demo_repo.py): ``app/`` is the full v1 tree,
``versions/<tag>/`` files copied over the parent tag's tree (the new migrations), and
:data:`VERSIONS` the exact text edits of each tag's code; every tag's ``VERSION`` file holds
its name.

* ``v1``: Laravel 8 app on Debian's framework packages, migrations ``create_jobs_table`` (the
  database queue's) and ``create_notes_table``;
* ``v2``: migration ``add_processed_by_to_notes_table``; the queue job records which release
  processed a note;
* ``v3-bad``: migration ``add_priority_to_notes_table`` and /health answers 500.

``python -m deployer.fleet.laravel_repo DEST`` prints ``tag sha``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .demo_repo import Version, build_repo, version_trees_of

LARAVEL_APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "laravel-app"
EXECUTABLES = {"artisan"}

_JOB_V1 = """update(['processed_at' => now()])"""
_JOB_V2 = """update(['processed_at' => now(), 'processed_by' => \\App\\Support\\Release::id()])"""
_JSON_V1 = """        return ['id' => $note->id, 'text' => $note->text, 'processed' => $note->processed_at !== null];
"""
_JSON_V2 = """        return ['id' => $note->id, 'text' => $note->text, 'processed' => $note->processed_at !== null,
                'processed_by' => $note->processed_by];
"""
_HEALTH_RETURN = """        return response()->json($body, $body['status'] === 'ok' ? 200 : 503);
"""

VERSIONS: tuple[Version, ...] = (
    Version("v1", None, "laravel app v1: health, notes, a queued job; migrations create_jobs_table, "
                        "create_notes_table"),
    Version(
        "v2",
        "v1",
        "v2: migration add_processed_by_to_notes_table; the queued job records its release",
        edits=(
            ("app/Jobs/ProcessNote.php", _JOB_V1, _JOB_V2),
            ("app/Http/Controllers/NotesController.php", _JSON_V1, _JSON_V2),
        ),
    ),
    Version(
        "v3-bad",
        "v2",
        "v3-bad: migration add_priority_to_notes_table, and /health answers 500",
        edits=(
            ("app/Http/Controllers/HealthController.php", _HEALTH_RETURN,
             "        $body['status'] = 'fail'; // v3-bad: a regression\n\n"
             "        return response()->json($body, 500);\n"),
        ),
    ),
)


def version_trees() -> dict[str, dict[str, bytes]]:
    return version_trees_of(VERSIONS, LARAVEL_APP_DIR / "app", LARAVEL_APP_DIR / "versions",
                            "laravel repo")


def build_laravel_repo(dest: Path) -> dict[str, str]:
    """(Re)create the Laravel app's git repository at ``dest``; return tag -> commit sha."""
    return build_repo(Path(dest), VERSIONS, version_trees(), EXECUTABLES, main="v2")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m deployer.fleet.laravel_repo DEST", file=sys.stderr)
        return 2
    for tag, sha in build_laravel_repo(Path(argv[0])).items():
        print(f"{tag} {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
