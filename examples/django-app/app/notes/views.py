import json
import os
import socket
import sys

from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from project.release import revision, version

from .models import Note
from .tasks import process_note


def health(request):
    """The deploy gate's check: the release served, the virtualenv it runs, the notes migrations."""
    body = {"status": "ok", "release": revision(), "version": version(), "host": socket.gethostname(),
            "python": os.path.realpath(sys.prefix), "cwd": os.getcwd()}
    try:
        applied = MigrationRecorder(connection).applied_migrations()
        body["migrations"] = sorted(name for app, name in applied if app == "notes")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        body["status"] = "fail"
        body["error"] = type(exc).__name__
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


def note_json(note):
    return {"id": note.pk, "text": note.text, "processed": note.processed_at is not None}


@csrf_exempt
def notes(request):
    """POST text=...: a note, processed by the Celery worker; GET: the notes."""
    if request.method == "POST":
        data = json.loads(request.body or b"{}")
        note = Note.objects.create(text=str(data.get("text", ""))[:200])
        process_note.delay(note.pk)
        return JsonResponse(note_json(note), status=201)
    return JsonResponse({"notes": [note_json(n) for n in Note.objects.order_by("pk")]})


def note(request, pk):
    try:
        return JsonResponse(note_json(Note.objects.get(pk=pk)))
    except Note.DoesNotExist:
        return JsonResponse({"error": "not found"}, status=404)
