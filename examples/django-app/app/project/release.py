"""Which release this code is: deployer writes the release id to REVISION, the tag to VERSION."""

from django.conf import settings


def _first_line(name, default="unknown"):
    try:
        return (settings.BASE_DIR / name).read_text(encoding="utf-8").splitlines()[0].strip() or default
    except (OSError, IndexError):
        return default


def revision():
    return _first_line("REVISION")


def version():
    return _first_line("VERSION")
