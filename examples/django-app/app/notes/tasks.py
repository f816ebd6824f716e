from celery import shared_task
from django.utils import timezone

from .models import Note


@shared_task
def process_note(note_id):
    """Mark the note processed (v2: by this worker's release)."""
    Note.objects.filter(pk=note_id).update(processed_at=timezone.now())
