"""deployer.release_id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from deployer.errors import ConfigError
from deployer.release_id import (
    RELEASE_ID_RE,
    new_release_id,
    release_time,
    validate_ref,
    validate_release_id,
)

SHA = "3f8cb52d0e6a1b7c9f00112233445566778899aa"


def test_new_release_id():
    now = datetime(2026, 11, 21, 12, 5, 1, 999, tzinfo=UTC)
    assert new_release_id(now, SHA) == "20261121T120501Z-3f8cb52"
    assert new_release_id(now, "3F8CB52") == "20261121T120501Z-3f8cb52"


def test_new_release_id_converts_to_utc():
    now = datetime(2026, 11, 21, 14, 5, 1, tzinfo=timezone(timedelta(hours=2)))
    assert new_release_id(now, SHA) == "20261121T120501Z-3f8cb52"


@pytest.mark.parametrize("commit", ["3f8cb5", "xyz1234", SHA + "0", ""])
def test_new_release_id_rejects_bad_commit(commit):
    with pytest.raises(ValueError, match="expected 7 to 40 hex digits"):
        new_release_id(datetime(2026, 1, 1, tzinfo=UTC), commit)


def test_new_release_id_rejects_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        new_release_id(datetime(2026, 1, 1), SHA)


def test_validate_release_id():
    assert validate_release_id("20261121T120501Z-3f8cb52") == "20261121T120501Z-3f8cb52"
    assert RELEASE_ID_RE.match("20261121T120501Z-3f8cb52")
    assert release_time("20261121T120501Z-3f8cb52") == datetime(2026, 11, 21, 12, 5, 1,
                                                                 tzinfo=UTC)


@pytest.mark.parametrize(
    "bad", ["x", "20261121T120501Z-3f8cb5", "20261321T120501Z-3f8cb52", "../etc",
            "20261121T120501Z-3F8CB52", "20261121T120501Z-3f8cb52\n"],
)
def test_validate_release_id_rejects(bad):
    with pytest.raises(ConfigError) as exc:
        validate_release_id(bad)
    assert exc.value.message == (
        f"release id {bad!r}: expected YYYYMMDDTHHMMSSZ-<7 hex digits>, "
        "e.g. 20261121T120501Z-3f8cb52"
    )


@pytest.mark.parametrize("ref", ["v1", "release/2026.11", SHA, "main", "feature/x_y-z", "v1.2.3"])
def test_validate_ref_accepts(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    ["$(touch /tmp/pwned)", "--upload-pack=x", "-x", "a..b", "/abs", "a//b", "x.lock", "x/",
     "x.", "a@{1}", "", "a b", "a;b", "x" * 201, ".hidden", "a/.b", "main\n"],
)
def test_validate_ref_rejects(ref):
    with pytest.raises(ConfigError) as exc:
        validate_ref(ref)
    assert exc.value.message == (
        f"--ref {ref!r}: not a valid git ref (allowed: letters, digits, . _ / -)"
    )
    assert exc.value.exit_code == 2
