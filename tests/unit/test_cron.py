"""deployer.cron: crontab lines for scheduled jobs and idempotent install of an env's block."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

import pytest
from croniter import croniter

from deployer.cron import (
    Schedule,
    cron_lines,
    install_block,
    remove_block,
    render_block,
    validate_expression,
)

PATHS = {"project_dir": Path("/srv/deployer"), "deployer_path": Path("/srv/deployer/.venv/bin/deployer"),
         "log_dir": Path("/var/log/deployer"), "lock_dir": Path("/var/lock")}
SCHEDULES = [Schedule("maintenance", "0 3 * * 0", "maintenance.run"),
             Schedule("nightly-backup", "0 2 * * *", "backup.run")]


# ------------------------------------------------------------------ expressions


@pytest.mark.parametrize("expr", ["0 2 * * 0", "*/15 * * * *", "0 2 * * sun", "0 0 1 jan *",
                                  "0 9-17/2 * * 1-5", "@daily", "@hourly", "5,35 1 1,15 * *",
                                  "0 0 1 JAN-mar mon-fri"])
def test_valid_expressions(expr: str):
    assert validate_expression(expr) == expr
    croniter(expr, datetime(2026, 1, 1)).get_next(datetime)


def test_expression_whitespace_is_normalised():
    assert validate_expression("  0  2 * *\t0 ") == "0 2 * * 0"


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "0 2 * * 0 0", "0 2 * * 0 2027",
                                  "0 2 L * *", "0 2 * * 5#3", "0 sun * * *", "H 2 * * *",
                                  "@reboot", "@never", "",
                                  "0 2 * * 0; rm -rf /", "0 2 * * 0 %"])
def test_invalid_expressions(expr: str):
    with pytest.raises(ValueError, match="invalid cron expression"):
        validate_expression(expr)


def test_expression_that_never_fires():
    with pytest.raises(ValueError, match="cron expression '0 0 30 2 \\*' never fires"):
        validate_expression("0 0 30 2 *")


def test_schedule_validation():
    with pytest.raises(ValueError, match="invalid task name 'backup.run; rm' \\(expected a deployer verb"):
        Schedule("b", "0 2 * * *", "backup.run; rm")
    with pytest.raises(ValueError, match="invalid schedule name 'Nightly Backup'"):
        Schedule("Nightly Backup", "0 2 * * *", "backup.run")


# ------------------------------------------------------------------ lines


def test_cron_lines():
    lines = cron_lines("prod", SCHEDULES, **PATHS)
    assert lines == [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "SHELL=/bin/sh",
        ("0 3 * * 0 cd /srv/deployer && /usr/bin/flock -n /var/lock/deployer-prod-maintenance.lock "
        "/srv/deployer/.venv/bin/deployer maintenance run --env prod "
        ">> /var/log/deployer/deployer-prod-maintenance.log 2>&1"),
        ("0 2 * * * cd /srv/deployer && /usr/bin/flock -n "
        "/var/lock/deployer-prod-nightly-backup.lock /srv/deployer/.venv/bin/deployer backup run "
        "--env prod >> /var/log/deployer/deployer-prod-nightly-backup.log 2>&1"),
    ]
    for line in lines[2:]:
        schedule = " ".join(line.split()[:5])
        assert croniter.is_valid(schedule)
        croniter(schedule, datetime(2026, 1, 1)).get_next(datetime)


def test_nickname_schedule_line():
    (line,) = cron_lines("local", [Schedule("hourly", "@hourly", "maintenance.run")],
                         **PATHS)[2:]
    assert line.startswith("@hourly cd /srv/deployer && ")


def test_paths_with_spaces_and_percent_are_quoted():
    lines = cron_lines("staging", SCHEDULES[:1], project_dir="/home/ops/my app",
                       deployer_path="/home/ops/my app/.venv/bin/deployer", log_dir="/var/log/deploy 100%",
                       lock_dir="/run/lock")
    line = lines[2]
    assert line == (
        "0 3 * * 0 cd '/home/ops/my app' && /usr/bin/flock -n "
        "/run/lock/deployer-staging-maintenance.lock '/home/ops/my app/.venv/bin/deployer' "
        "maintenance run --env staging "
        ">> '/var/log/deploy 100\\%/deployer-staging-maintenance.log' 2>&1"
    )
    # what the shell sees once cron has turned \% back into %
    command = line.split(" ", 5)[5].replace("\\%", "%")
    words = shlex.split(command)
    assert words[:2] == ["cd", "/home/ops/my app"]
    assert words[6:10] == ["/home/ops/my app/.venv/bin/deployer", "maintenance", "run", "--env"]
    assert words[-2] == "/var/log/deploy 100%/deployer-staging-maintenance.log"


def test_paths_must_be_absolute_and_single_line():
    with pytest.raises(ValueError, match="project_dir: expected an absolute path"):
        cron_lines("prod", SCHEDULES, **{**PATHS, "project_dir": "srv/deployer"})
    with pytest.raises(ValueError, match="deployer_path: expected an absolute path, got 'deployer'"):
        cron_lines("prod", SCHEDULES, **{**PATHS, "deployer_path": "deployer"})
    with pytest.raises(ValueError, match="log_dir: a path cannot contain a newline"):
        cron_lines("prod", SCHEDULES, **{**PATHS, "log_dir": "/var/log\n* * * * * evil"})
    with pytest.raises(ValueError, match="invalid env name"):
        cron_lines("Prod; rm", SCHEDULES, **PATHS)
    with pytest.raises(ValueError, match="duplicate schedule name"):
        cron_lines("prod", SCHEDULES + SCHEDULES[:1], **PATHS)


def test_no_schedules_no_lines():
    assert cron_lines("prod", [], **PATHS) == []


# ------------------------------------------------------------------ install


USER_CRONTAB = (
    "# m h dom mon dow command\n"
    "MAILTO=ops@example.com\n"
    "*/5 * * * * /usr/local/bin/check-disk   >/dev/null 2>&1\n"
    "\n"
    "# BEGIN deployer staging\n"
    "0 1 * * * staging job\n"
    "# END deployer staging\n"
    "30 4 * * * /usr/bin/true\n"
)


def test_install_appends_a_marked_block():
    lines = cron_lines("prod", SCHEDULES, **PATHS)
    result = install_block(USER_CRONTAB, "prod", lines)
    assert result == USER_CRONTAB + "# BEGIN deployer prod\n" + "".join(
        f"{line}\n" for line in lines) + "# END deployer prod\n"
    assert render_block("prod", lines) == result[len(USER_CRONTAB):]


def test_install_twice_is_install_once():
    lines = cron_lines("prod", SCHEDULES, **PATHS)
    once = install_block(USER_CRONTAB, "prod", lines)
    assert install_block(once, "prod", lines) == once
    assert install_block(install_block(once, "prod", lines), "prod", lines) == once


def test_replacing_keeps_everything_else_byte_for_byte():
    old = install_block(USER_CRONTAB, "prod", cron_lines("prod", SCHEDULES, **PATHS))
    old += "15 5 * * * after-prod\n"
    new_lines = cron_lines("prod", SCHEDULES[1:], **PATHS)
    new = install_block(old, "prod", new_lines)
    assert new == USER_CRONTAB + render_block("prod", new_lines) + "15 5 * * * after-prod\n"
    # the other env's block is untouched, and removing prod gives back the rest
    assert "# BEGIN deployer staging\n0 1 * * * staging job\n# END deployer staging\n" in new
    assert remove_block(new, "prod") == USER_CRONTAB + "15 5 * * * after-prod\n"


def test_install_into_empty_and_unterminated_crontabs():
    lines = cron_lines("local", SCHEDULES, **PATHS)
    assert install_block("", "local", lines) == render_block("local", lines)
    assert install_block("0 1 * * * x", "local", lines) == \
        "0 1 * * * x\n" + render_block("local", lines)
    assert remove_block("0 1 * * * x", "local") == "0 1 * * * x"


def test_crlf_and_similar_env_names():
    text = "# BEGIN deployer prod2\r\nx\r\n# END deployer prod2\r\n"
    lines = cron_lines("prod", SCHEDULES, **PATHS)
    assert install_block(text, "prod", lines) == text + render_block("prod", lines)
    assert remove_block(text, "prod2") == ""


def test_installing_no_lines_removes_the_block():
    with_block = install_block(USER_CRONTAB, "prod", cron_lines("prod", SCHEDULES, **PATHS))
    assert install_block(with_block, "prod", []) == USER_CRONTAB
    assert remove_block(USER_CRONTAB, "prod") == USER_CRONTAB
    assert remove_block(USER_CRONTAB, "staging") == USER_CRONTAB.replace(
        "# BEGIN deployer staging\n0 1 * * * staging job\n# END deployer staging\n", "")


def test_duplicate_blocks_collapse_into_one():
    lines = cron_lines("prod", SCHEDULES, **PATHS)
    twice = "a\n" + render_block("prod", ["old"]) + "b\n" + render_block("prod", ["older"])
    assert install_block(twice, "prod", lines) == "a\n" + render_block("prod", lines) + "b\n"


def test_damaged_blocks_are_refused():
    with pytest.raises(ValueError, match="without '# END deployer prod'"):
        install_block("# BEGIN deployer prod\nx\n", "prod", ["y"])
    with pytest.raises(ValueError, match="line 1: '# END deployer prod' without"):
        remove_block("# END deployer prod\n", "prod")
    with pytest.raises(ValueError, match="cannot contain a newline"):
        install_block("", "prod", ["a\nb"])
