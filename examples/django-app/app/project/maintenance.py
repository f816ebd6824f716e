"""Maintenance mode: 503 + Retry-After while var/maintenance.json exists and has not expired.

deployer writes {"message": str, "retry": int, "expires_at": epoch seconds or null} there; the
deploy gate's own health checks (header X-Deployer-Gate: 1) are let through.
"""

import json
import time

from django.conf import settings
from django.http import JsonResponse


def maintenance_state():
    try:
        raw = settings.MAINTENANCE_FILE.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    expires = data.get("expires_at")
    if isinstance(expires, (int, float)) and expires < time.time():
        return None
    return {"message": str(data.get("message", "maintenance")), "retry": int(data.get("retry") or 30)}


class MaintenanceMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        state = maintenance_state()
        gate = request.path == "/health" and request.headers.get("X-Deployer-Gate") == "1"
        if state is not None and not gate:
            from .release import revision

            response = JsonResponse({"status": "maintenance", "message": state["message"],
                                     "release": revision()}, status=503)
            response["Retry-After"] = str(state["retry"])
            return response
        return self.get_response(request)
