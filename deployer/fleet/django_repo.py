"""Build the git repository of the Django example app (examples/django-app) the tests deploy.

Like the demo repo (demo_repo.py): ``app/`` is the full v1 tree, ``versions/<tag>/`` files
copied over the parent tag's tree (the new migrations), and :data:`VERSIONS` the exact text
edits of each tag's code; every tag's ``VERSION`` file holds its name.

* ``v1``: the ``notes`` app, migration 0001;
* ``v2``: migration 0002 (online-safe: ``notes.processed_by``, with a database default); the
  Celery task records which release processed a note;
* ``v3-bad``: migration 0003 (online-safe, a nullable column) and /health answers 500.

``python -m deployer.fleet.django_repo DEST`` prints ``tag sha``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .demo_repo import Version, build_repo, version_trees_of

DJANGO_APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "django-app"
EXECUTABLES = {"manage.py"}

_MODEL_V1 = """    processed_at = models.DateTimeField(null=True, blank=True)
"""
_MODEL_V2 = _MODEL_V1 + """    processed_by = models.CharField(max_length=64, blank=True, default="", db_default="")
"""
_TASK_V1 = """    Note.objects.filter(pk=note_id).update(processed_at=timezone.now())
"""
_TASK_V2 = """    from project.release import revision

    Note.objects.filter(pk=note_id).update(processed_at=timezone.now(), processed_by=revision())
"""
_JSON_V1 = """    return {"id": note.pk, "text": note.text, "processed": note.processed_at is not None}
"""
_JSON_V2 = """    return {"id": note.pk, "text": note.text, "processed": note.processed_at is not None,
            "processed_by": note.processed_by}
"""
_HEALTH_RETURN = """    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)
"""

VERSIONS: tuple[Version, ...] = (
    Version("v1", None, "django app v1: notes app, migration 0001_initial, Celery task"),
    Version(
        "v2",
        "v1",
        "v2: online-safe migration 0002_note_processed_by; the task records the worker's release",
        edits=(
            ("notes/models.py", _MODEL_V1, _MODEL_V2),
            ("notes/tasks.py", _TASK_V1, _TASK_V2),
            ("notes/views.py", _JSON_V1, _JSON_V2),
        ),
    ),
    Version(
        "v3-bad",
        "v2",
        "v3-bad: migration 0003_note_priority, and /health answers 500",
        edits=(
            ("notes/models.py", _MODEL_V2,
             _MODEL_V2 + "    priority = models.IntegerField(null=True, blank=True)\n"),
            ("notes/views.py", _HEALTH_RETURN,
             '    body["status"] = "fail"  # v3-bad: a regression\n'
             "    return JsonResponse(body, status=500)\n"),
        ),
    ),
)


def version_trees() -> dict[str, dict[str, bytes]]:
    return version_trees_of(VERSIONS, DJANGO_APP_DIR / "app", DJANGO_APP_DIR / "versions", "django repo")


def build_django_repo(dest: Path) -> dict[str, str]:
    """(Re)create the Django app's git repository at ``dest``; return tag -> commit sha."""
    return build_repo(Path(dest), VERSIONS, version_trees(), EXECUTABLES, main="v2")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m deployer.fleet.django_repo DEST", file=sys.stderr)
        return 2
    for tag, sha in build_django_repo(Path(argv[0])).items():
        print(f"{tag} {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
