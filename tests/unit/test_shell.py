"""deployer.shell: quoting, masking, templates."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from deployer.errors import ConfigError
from deployer.shell import (
    Command,
    Secret,
    argv,
    chain,
    check_template,
    fill,
    placeholders,
    quote,
    raw,
    render,
    sh,
)


def test_secret_never_prints():
    s = Secret("hunter2")
    assert str(s) == "***"
    assert repr(s) == "***"
    assert f"{s}" == "***"
    assert f"{s:>10}" == "***"
    assert s.reveal() == "hunter2"
    assert Secret("a") == Secret("a")


def test_quote():
    assert quote("plain") == ("plain", "plain")
    assert quote("a b") == ("'a b'", "'a b'")
    assert quote(5) == ("5", "5")
    assert quote(PurePosixPath("/srv/app")) == ("/srv/app", "/srv/app")
    assert quote(Secret("p w")) == ("'p w'", "***")
    with pytest.raises(TypeError):
        quote(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        quote(True)


def test_argv_quotes_each_word_and_masks_secrets():
    cmd = argv("pg_dump", "-d", "my db", Secret("s3cret"))
    assert cmd.script == "pg_dump -d 'my db' s3cret"
    assert cmd.display == "pg_dump -d 'my db' ***"
    assert str(cmd) == cmd.display
    assert cmd.timeout is None


@pytest.mark.parametrize(
    ("value", "script"),
    [
        ("$(touch /tmp/pwned)", "echo '$(touch /tmp/pwned)'"),
        ("; rm -rf /", "echo '; rm -rf /'"),
        ("`id`", "echo '`id`'"),
        ("it's", "echo 'it'\"'\"'s'"),
        ("a\nb", "echo 'a\nb'"),
        ("", "echo ''"),
    ],
)
def test_render_makes_hostile_values_inert(value, script):
    assert render("echo {v}", {"v": value}).script == script


def test_render_exact_script_and_masking():
    cmd = render(
        "cd {path} && PGPASSWORD={pw} psql -c {sql}",
        {"path": "/srv/app/releases/x", "pw": Secret("p'w"), "sql": "select 1"},
    )
    assert cmd.script == "cd /srv/app/releases/x && PGPASSWORD='p'\"'\"'w' psql -c 'select 1'"
    assert cmd.display == "cd /srv/app/releases/x && PGPASSWORD=*** psql -c 'select 1'"


def test_render_brace_escapes():
    cmd = render("printf '{{\"a\": 1}}' > {f}", {"f": "/tmp/x y"})
    assert cmd.script == "printf '{\"a\": 1}' > '/tmp/x y'"


def test_render_unknown_placeholder():
    with pytest.raises(ConfigError) as exc:
        render("cd {relase_path}", {"release_path": "/x", "host": "web1"},
               where="playbooks/demo.yaml: stages.build[0]")
    assert exc.value.message == (
        "playbooks/demo.yaml: stages.build[0]: unknown placeholder {relase_path}; "
        "known: host, release_path"
    )
    assert exc.value.exit_code == 2


def test_render_without_where():
    with pytest.raises(ConfigError) as exc:
        render("{x}", {})
    assert exc.value.message == "unknown placeholder {x}; known: "


@pytest.mark.parametrize("template", ["echo '{v}'", 'echo "{v}"', "echo \\{v}"])
def test_placeholder_inside_quotes_is_refused(template):
    with pytest.raises(ConfigError) as exc:
        check_template(template, {"v"}, where="w")
    assert exc.value.message == (
        "w: placeholder {v} is inside quotes or after a backslash; values are quoted for you, "
        "remove the quoting"
    )


def test_bad_placeholders():
    with pytest.raises(ConfigError) as exc:
        render("{a.b}", {"a": 1}, where="w")
    assert exc.value.message == (
        "w: bad placeholder {a.b}: use {name}; write {{ and }} for literal braces"
    )
    with pytest.raises(ConfigError) as exc:
        render("echo }", {}, where="w")
    assert exc.value.message == "w: invalid template: Single '}' encountered in format string"


def test_placeholders():
    assert placeholders("cd {a} && {b} {{c}} {a}") == {"a", "b"}


def test_fill_does_not_quote():
    assert fill("http://{address}:8000/h", {"address": "10.0.0.1"}) == "http://10.0.0.1:8000/h"
    with pytest.raises(ConfigError):
        fill("{nope}", {})


def test_raw_and_timeout():
    cmd = raw("true").with_timeout(5)
    assert cmd == Command("true", "true", 5)


def test_chain():
    a, b = raw("a"), argv("b", Secret("x"))
    assert chain(a, b).script == "a && b x"
    assert chain(a, b).display == "a && b ***"
    assert chain(a, b, op="||").script == "a || b x"
    assert chain(a, b, op=";").script == "a; b x"
    assert chain(a) is a
    # compound parts keep their meaning
    assert chain(raw("cd /x"), raw("f || g")).script == "cd /x && { f || g; }"
    assert chain(raw("cd /x"), raw("echo '&&'")).script == "cd /x && echo '&&'"
    with pytest.raises(ValueError):
        chain(a, b, op="|")


def test_sh_wraps_and_masks():
    cmd = sh(render("echo {a} {s}", {"a": "x y", "s": Secret("k")}).with_timeout(3))
    assert cmd.script == "sh -c 'echo '\"'\"'x y'\"'\"' k'"
    assert cmd.display == "sh -c 'echo '\"'\"'x y'\"'\"' ***'"
    assert cmd.timeout == 3


# -- {sudo}: the commands a step runs as root --------------------------------------------------

def test_sudo_is_verbatim_for_a_user_and_empty_for_root():
    from deployer.shell import Privileged

    tpl = "{sudo} {ctl} signal HUP web >/dev/null || {sudo} {ctl} start web"
    as_deploy = render(tpl, {"sudo": Privileged("deploy"), "ctl": "/srv/bin/supervisorctl"})
    assert as_deploy.script == ("sudo -n -- /srv/bin/supervisorctl signal HUP web >/dev/null || "
                                "sudo -n -- /srv/bin/supervisorctl start web")
    as_root = render(tpl, {"sudo": Privileged("root"), "ctl": "/srv/bin/supervisorctl"})
    assert as_root.script == " /srv/bin/supervisorctl signal HUP web >/dev/null ||  /srv/bin/supervisorctl start web"


def test_privileged_commands_end_at_operators_and_redirections():
    from deployer.shell import privileged_commands

    assert privileged_commands("{sudo} {ctl} -c {conf} signal HUP web >/dev/null || {sudo} {ctl} start web") == [
        "{ctl} -c {conf} signal HUP web", "{ctl} start web"]
    assert privileged_commands("x; {sudo} systemctl reload php8.2-fpm 2>/dev/null") == [
        "systemctl reload php8.2-fpm"]
    assert privileged_commands("{sudo} a 'b;c' | grep -q x") == ["a 'b;c'"]
    assert privileged_commands("no sudo here") == []


def test_sudo_without_a_command_is_a_config_error():
    from deployer.shell import privileged_commands

    with pytest.raises(ConfigError, match=r"playbooks/x.yaml: stages.reload\[0\]: \{sudo\} must be followed"):
        privileged_commands("{sudo} ; true", where="playbooks/x.yaml: stages.reload[0]")


def test_a_number_ends_a_privileged_command_only_before_a_redirection():
    from deployer.shell import privileged_commands

    assert privileged_commands("{sudo} kill -HUP 2; {sudo} x 2>/dev/null; {sudo} y 2 >z") == [
        "kill -HUP 2", "x", "y 2"]
