"""Notifications against real local receivers: an HTTP server and a tiny SMTP server."""

import base64
import datetime
import email
import email.policy
import ipaddress
import json
import smtplib
import socket
import socketserver
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deployer.fleet.receivers import dead_port, start_http, start_smtp, stop
from deployer.notify import (
    Email,
    JsonWebhook,
    Message,
    NotifyConfigError,
    NotifyError,
    SlackWebhook,
    mask_url,
    notifiers_from_config,
    notify_all,
    redact,
)
from deployer.redact import Redactor
from deployer.shell import Secret

TOKEN = "T0KEN-b7f3c1d9e2a4"


# ------------------------------------------------------------------ receivers


@pytest.fixture
def http_receiver():
    server, url = start_http()
    yield server, url
    stop(server)


@pytest.fixture
def smtp_receiver():
    server, port = start_smtp()
    yield server, port
    stop(server)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert file, key file)."""
    where = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deployer test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


class TlsSmtpHandler(socketserver.BaseRequestHandler):
    """SMTP with STARTTLS (or implicit TLS): records whether each AUTH and mail came over TLS.
    It offers AUTH PLAIN before TLS too, like a careless server: the client must not use it."""

    def handle(self):
        srv = self.server
        sock = self.request
        sock.settimeout(10)  # every read bounded; a stuck client ends the handler
        mail = {"from": None, "to": [], "data": None, "auth": None, "tls": srv.implicit}
        try:
            if srv.implicit:
                sock = srv.context.wrap_socket(sock, server_side=True)
            reader = sock.makefile("rb")
            send = sock.sendall
            send(b"220 localhost test SMTP\r\n")
            for _ in range(100):
                line = reader.readline().decode().rstrip("\r\n")
                if not line:
                    return
                verb = line.split(" ", 1)[0].upper()
                srv.commands.append((verb, mail["tls"]))
                if verb == "EHLO":
                    offer = b"250-STARTTLS\r\n" if srv.starttls and not mail["tls"] else b""
                    send(b"250-localhost\r\n" + offer + b"250 AUTH PLAIN\r\n")
                elif verb == "STARTTLS" and srv.starttls and not mail["tls"]:
                    send(b"220 ready to start TLS\r\n")
                    sock = srv.context.wrap_socket(sock, server_side=True)
                    reader, send, mail["tls"] = sock.makefile("rb"), sock.sendall, True
                elif verb == "AUTH":
                    mail["auth"] = base64.b64decode(line.split()[2]).decode()
                    srv.auths.append((mail["auth"], mail["tls"]))
                    send(b"235 2.7.0 Authentication successful\r\n")
                elif verb == "MAIL":
                    mail["from"] = line[10:].split()[0].strip("<>")
                    send(b"250 OK\r\n")
                elif verb == "RCPT":
                    mail["to"].append(line[8:].strip().strip("<>"))
                    send(b"250 OK\r\n")
                elif verb == "DATA":
                    send(b"354 go ahead\r\n")
                    lines = []
                    for _ in range(10_000):
                        data_line = reader.readline()
                        if data_line in (b".\r\n", b""):
                            break
                        lines.append(data_line[1:] if data_line.startswith(b"..") else data_line)
                    mail["data"] = b"".join(lines)
                    srv.received.append(dict(mail))
                    send(b"250 OK queued\r\n")
                elif verb == "QUIT":
                    send(b"221 Bye\r\n")
                    return
                else:
                    send(b"502 not implemented\r\n")
        except (OSError, ssl.SSLError) as exc:
            srv.errors.append(f"{type(exc).__name__}: {exc}")


class TlsSmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_tls_smtp(cert, *, implicit=False, starttls=True):
    server = TlsSmtpServer(("127.0.0.1", 0), TlsSmtpHandler)
    server.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.context.load_cert_chain(*cert)
    server.implicit, server.starttls = implicit, starttls
    server.received, server.auths, server.commands, server.errors = [], [], [], []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def starttls_receiver(cert):
    server, port = start_tls_smtp(cert)
    yield server, port
    stop(server)


@pytest.fixture
def implicit_tls_receiver(cert):
    server, port = start_tls_smtp(cert, implicit=True)
    yield server, port
    stop(server)


def message(**kw) -> Message:
    base = {"event": "failure", "env": "prod", "release": "20261121T120501Z-3f8cb52",
            "ref": "v1.4.0",
            "text": "deploy failed: gate: canary p95 412 ms vs baseline 131 ms; rolled back",
            "fields": {"hosts": "web1, web2", "took": "31.3s"}}
    base.update(kw)
    return Message(**base)


# ------------------------------------------------------------------ tests


def test_redact_and_mask_url():
    assert redact("a hunter2 b hunter2", ["hunter2", ""]) == "a *** b ***"
    assert redact("pw=abcdef", [Secret("abcdef"), "abc"]) == "pw=***"  # longest first
    assert mask_url(f"https://user:pw@hooks.example.com:8443/services/{TOKEN}?x=1") == \
        "https://hooks.example.com:8443/***"
    with pytest.raises(ValueError):
        Message(event="nope", env="e", release="r", ref="x", text="t")


def test_slack_and_json_webhooks_deliver(http_receiver):
    server, base = http_receiver
    slack = SlackWebhook(f"{base}/services/{TOKEN}")
    hook = JsonWebhook(f"{base}/hook", headers={"X-Team": "ops",
                                                "Authorization": Secret("Bearer s3cr3t")})
    failures = notify_all([slack, hook], message(), secrets=["unused"])
    assert failures == []
    by_path = {r["path"]: r for r in server.received}
    got = json.loads(by_path[f"/services/{TOKEN}"]["body"])
    assert "prod" in got["text"] and "20261121T120501Z-3f8cb52" in got["text"]
    assert "canary p95 412 ms" in got["text"]
    fields = {f["title"]: f["value"] for f in got["attachments"][0]["fields"]}
    assert fields == {"hosts": "web1, web2", "took": "31.3s"}
    got = json.loads(by_path["/hook"]["body"])
    assert got == {"event": "failure", "env": "prod", "release": "20261121T120501Z-3f8cb52",
                   "ref": "v1.4.0", "text": message().text,
                   "fields": {"hosts": "web1, web2", "took": "31.3s"}}
    headers = by_path["/hook"]["headers"]
    assert headers["X-Team"] == "ops" and headers["Authorization"] == "Bearer s3cr3t"
    assert headers["Content-Type"] == "application/json"


def test_secrets_are_redacted_in_what_receivers_get(http_receiver, smtp_receiver):
    server, base = http_receiver
    smtp, port = smtp_receiver
    url = f"{base}/services/{TOKEN}"
    msg = message(text=f"migrate failed: password=hunter2-xyz url={url}",
                  fields={"dsn": "postgres://app:hunter2-xyz@db/app", "n": 3})
    failures = notify_all([SlackWebhook(url), JsonWebhook(f"{base}/hook"),
                           Email("127.0.0.1", port, "deploy@example.test", ["ops@example.test"],
                                 starttls=False)],
                          msg, secrets=["hunter2-xyz"])
    assert failures == []
    bodies = [r["body"].decode() for r in server.received] + [m["data"].decode()
                                                               for m in smtp.received]
    assert len(bodies) == 3
    for body in bodies:
        assert "hunter2" not in body and TOKEN not in body
        assert "***" in body
    hook = json.loads(next(r["body"] for r in server.received if r["path"] == "/hook"))
    assert hook["fields"] == {"dsn": "postgres://app:***@db/app", "n": 3}
    assert msg.text.count("hunter2") == 1  # the caller's message is not mutated


def test_secret_looking_values_are_redacted_even_when_not_given(http_receiver):
    server, base = http_receiver
    run_secrets = Redactor(["known-to-the-run-1234"])  # what the engine knows, e.g. .env values
    msg = message(text="migrate failed:\nDB_PASSWORD=unlisted-pa55 in .env\n"
                       "stderr: auth known-to-the-run-1234 rejected",
                  fields={"dsn": "postgres://app:unlisted-dsn-pw@db/app", "n": 3})
    assert notify_all([JsonWebhook(f"{base}/hook")], msg, secrets=run_secrets) == []
    body = server.received[0]["body"].decode()
    for leaked in ("unlisted-pa55", "unlisted-dsn-pw", "known-to-the-run-1234"):
        assert leaked not in body
    got = json.loads(body)
    assert got["text"] == "migrate failed:\nDB_PASSWORD=*** in .env\nstderr: auth *** rejected"
    assert got["fields"] == {"dsn": "postgres://app:***@db/app", "n": 3}
    assert run_secrets.redact("known-to-the-run-1234") == "***"
    assert redact("TOKEN=abc hunter2", ["hunter2"]) == "TOKEN=*** ***"  # notify.redact: same rules


def test_email_delivers_subject_and_body_over_verified_starttls(starttls_receiver, cert):
    smtp, port = starttls_receiver
    notifier = notifiers_from_config(
        {"email": {"host": "127.0.0.1", "port": port, "from": "deploy@example.test",
                   "to": ["ops@example.test", "dev@example.test"], "username": "deployer",
                   "password_env": "SMTP_PASSWORD", "timeout": 5, "tls_ca_file": cert[0]}},
        {"SMTP_PASSWORD": "smtp-pa55word"})
    assert notifier[0].starttls  # on by default
    assert notify_all(notifier, message(event="rollback", text="rolled back to OLD")) == []
    (mail,) = smtp.received
    assert mail["tls"] is True
    assert smtp.auths == [("\0deployer\0smtp-pa55word", True)]  # AUTH PLAIN, inside TLS only
    assert ("STARTTLS", False) in smtp.commands
    assert mail["from"] == "deploy@example.test"
    assert mail["to"] == ["ops@example.test", "dev@example.test"]
    parsed = email.message_from_bytes(mail["data"], policy=email.policy.default)
    assert parsed["Subject"] == "[deployer] prod: rollback 20261121T120501Z-3f8cb52 (v1.4.0)"
    body = parsed.get_content()
    assert "rolled back to OLD" in body and "hosts: web1, web2" in body
    assert "smtp-pa55word" not in mail["data"].decode()


def test_email_plain_without_password_when_starttls_is_off(smtp_receiver):
    smtp, port = smtp_receiver
    (notifier,) = notifiers_from_config(
        {"email": {"host": "127.0.0.1", "port": port, "from": "deploy@example.test",
                   "to": "ops@example.test", "starttls": False}}, {})
    assert notify_all([notifier], message()) == []
    (mail,) = smtp.received
    assert mail["auth"] is None and mail["to"] == ["ops@example.test"]


def test_starttls_verifies_the_certificate(starttls_receiver):
    smtp, port = starttls_receiver
    notifier = Email("127.0.0.1", port, "deploy@example.test", ["ops@example.test"],
                     username="deployer", password=Secret("smtp-pa55word"), starttls=True,
                     timeout=5)
    failures = notify_all([notifier], message())
    assert len(failures) == 1 and "CERTIFICATE_VERIFY_FAILED" in failures[0][1]
    assert smtp.auths == [] and smtp.received == []  # self-signed, not in the system's CAs
    assert "smtp-pa55word" not in failures[0][1]


def test_no_login_without_tls_on_a_server_without_starttls(smtp_receiver):
    smtp, port = smtp_receiver
    notifier = notifiers_from_config(
        {"email": {"host": "127.0.0.1", "port": port, "from": "deploy@example.test",
                   "to": ["ops@example.test"], "username": "deployer",
                   "password_env": "SMTP_PASSWORD"}}, {"SMTP_PASSWORD": "smtp-pa55word"})
    failures = notify_all(notifier, message())
    assert len(failures) == 1 and "STARTTLS" in failures[0][1]
    assert smtp.received == []  # no AUTH in clear, no mail


def test_login_is_never_called_on_an_unencrypted_connection(smtp_receiver, monkeypatch):
    # even if STARTTLS "succeeded" without encrypting (a bug, a MITM stripping it): no login
    smtp, port = smtp_receiver
    monkeypatch.setattr(smtplib.SMTP, "starttls", lambda self, *a, **kw: (220, b"ok"))
    notifier = Email("127.0.0.1", port, "deploy@example.test", ["ops@example.test"],
                     username="deployer", password=Secret("smtp-pa55word"), timeout=5)
    with pytest.raises(NotifyError, match="unencrypted"):
        notifier.send(message())
    assert smtp.received == []


def test_email_over_implicit_tls(implicit_tls_receiver, cert):
    smtp, port = implicit_tls_receiver
    notifier = notifiers_from_config(
        {"email": {"host": "localhost", "port": port, "implicit_tls": True,
                   "from": "deploy@example.test", "to": ["ops@example.test"],
                   "username": "deployer", "password_env": "SMTP_PASSWORD",
                   "tls_ca_file": cert[0]}}, {"SMTP_PASSWORD": "smtp-pa55word"})
    assert notify_all(notifier, message()) == []
    assert smtp.auths == [("\0deployer\0smtp-pa55word", True)]
    assert len(smtp.received) == 1 and ("STARTTLS", True) not in smtp.commands


@pytest.mark.parametrize("conf, problem", [
    ({"starttls": False}, "starttls: false would send the SMTP password in clear"),
    ({"starttls": "no"}, "notify.email.starttls: expected true or false"),
    ({"implicit_tls": 1}, "notify.email.implicit_tls: expected true or false"),
    ({"tls_ca_file": "/nonexistent/ca.pem"}, "notify.email.tls_ca_file: "),
])
def test_email_tls_config_errors(conf, problem):
    base = {"host": "smtp.example.test", "from": "d@example.test", "to": "ops@example.test",
            "username": "deployer", "password_env": "SMTP_PASSWORD"}
    with pytest.raises(NotifyConfigError, match=problem):
        notifiers_from_config({"email": {**base, **conf}}, {"SMTP_PASSWORD": "pw-1234"})


def test_email_tls_defaults():
    def one(**conf):
        base = {"host": "smtp.example.test", "from": "d@example.test", "to": "ops@example.test"}
        return notifiers_from_config({"email": {**base, **conf}}, {})[0]

    assert one().starttls and not one().implicit_tls and one().port == 25
    assert one(port=465).implicit_tls  # port 465 is implicit TLS
    assert one(implicit_tls=True).port == 465
    assert not one(starttls=False).starttls  # allowed: no password
    with pytest.raises(ValueError, match="in clear"):
        Email("h", 25, "a@example.test", ["b@example.test"], password=Secret("pw-1234"),
              starttls=False)


def test_dead_receivers_fail_without_raising(http_receiver):
    server, base = http_receiver
    port = dead_port()
    lines: list[str] = []
    notifiers = [SlackWebhook(f"http://127.0.0.1:{port}/services/{TOKEN}", timeout=2),
                 Email("127.0.0.1", dead_port(), "a@example.test", ["b@example.test"], timeout=2),
                 JsonWebhook(f"{base}/hook")]
    t0 = time.monotonic()
    failures = notify_all(notifiers, message(), log=lines.append, timeout=5)
    assert time.monotonic() - t0 < 5
    names = [name for name, _ in failures]
    assert names == [f"slack(http://127.0.0.1:{port}/***)", notifiers[1].name]
    assert "Connection" in failures[0][1] or "refused" in failures[0][1].lower()
    assert [r["path"] for r in server.received] == ["/hook"]  # the healthy one still delivered
    assert len(lines) == 2
    for text in [*lines, *(e for _, e in failures)]:
        assert TOKEN not in text


def test_http_error_reports_masked_url(http_receiver):
    _, base = http_receiver
    logged = []

    class Log:
        def warning(self, fmt, *args):
            logged.append(fmt % args)

    failures = notify_all([JsonWebhook(f"{base}/fail/{TOKEN}")], message(), log=Log())
    assert failures == [(f"webhook({base}/***)", f"POST {base}/***: HTTP 500")]
    assert logged and TOKEN not in logged[0]


def test_hanging_receiver_is_bounded_by_the_total_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections at the kernel level, never answers
    port = listener.getsockname()[1]
    try:
        t0 = time.monotonic()
        failures = notify_all([JsonWebhook(f"http://127.0.0.1:{port}/x", timeout=10),
                               Email("127.0.0.1", port, "a@example.test", ["b@example.test"],
                                     timeout=10)], message(), timeout=0.5)
        took = time.monotonic() - t0
    finally:
        listener.close()
    assert took < 2
    assert [e for _, e in failures] == ["timed out after 0.5s"] * 2


def test_a_buggy_notifier_does_not_stop_the_others(http_receiver):
    server, base = http_receiver

    class Broken:
        name = "broken"

        def send(self, msg):
            raise RuntimeError(f"boom with {TOKEN}")

    failures = notify_all([Broken(), JsonWebhook(f"{base}/hook")], message(), secrets=[TOKEN])
    assert failures == [("broken", "RuntimeError: boom with ***")]
    assert len(server.received) == 1


def test_notifiers_from_config():
    environ = {"SLACK_WEBHOOK_URL": f"https://hooks.example.test/services/{TOKEN}",
               "HOOK_AUTH": "Bearer abc", "SMTP_PASSWORD": "pw"}
    got = notifiers_from_config({
        "slack": {"url_env": "SLACK_WEBHOOK_URL"},
        "webhook": {"url": "https://example.test/hook", "headers": {"X-A": "b"},
                    "headers_env": {"Authorization": "HOOK_AUTH"}},
        "email": {"host": "smtp.example.test", "port": 587, "from": "d@example.test",
                  "to": "ops@example.test", "password_env": "SMTP_PASSWORD", "starttls": True},
    }, environ)
    assert [type(n).__name__ for n in got] == ["SlackWebhook", "JsonWebhook", "Email"]
    assert got[0].name == "slack(https://hooks.example.test/***)"
    assert TOKEN not in repr(got) and "pw" not in repr(got[2].__dict__.get("_password"))
    assert got[2].recipients == ["ops@example.test"] and got[2].starttls
    assert notifiers_from_config({}, {}) == [] and notifiers_from_config(None, {}) == []


@pytest.mark.parametrize("data, problem", [
    ({"slack": {"url": "https://hooks.example.test/x"}}, "url_env"),
    ({"slack": {"url_env": "MISSING"}}, "MISSING is not set"),
    ({"email": {"host": "h", "from": "a", "to": ["b"], "password": "inline"}}, "password_env"),
    ({"email": {"host": "h", "to": ["b"]}}, "notify.email.from"),
    ({"webhook": {"url": "ftp://x"}}, "url"),
    ({"pager": {}}, "unknown notifier"),
])
def test_notifiers_from_config_errors(data, problem):
    with pytest.raises(NotifyConfigError, match=problem):
        notifiers_from_config(data, {})
