"""Notifications: Slack-compatible incoming webhooks, generic JSON webhooks, email (SMTP).

`notify_all` never raises: every notifier runs in its own thread under one bounded total
timeout; a failing or hanging one is reported as (name, error) and logged, the others still
deliver. Secrets never leave: every message (text, fields, env, release, ref) and every error
is redacted with `deployer.redact` before it is sent or logged: the secret values given (a
`Redactor` of the run, or values) plus the notifiers' own (webhook URLs, SMTP password), and
the generic patterns (``PASSWORD=...``, ``scheme://user:pass@``); notifier names and errors
show a webhook as ``scheme://host/***`` only.

Configuration (`notifiers_from_config`): secrets come from environment variables named in
the config, never inline::

    slack:   {url_env: SLACK_WEBHOOK_URL}
    webhook: {url: https://example/hook | url_env: HOOK_URL, headers: {X-A: b},
              headers_env: {Authorization: HOOK_AUTH}}
    email:   {host: smtp.example, port: 587, from: deploy@example, to: [ops@example],
              username: deploy | username_env: SMTP_USER, password_env: SMTP_PASSWORD,
              starttls: true, implicit_tls: false, tls_ca_file: /etc/ssl/private-ca.pem}

Email is encrypted by default: STARTTLS (required, not opportunistic) with a verifying TLS
context (the system's CAs, or `tls_ca_file` for a private CA), or implicit TLS
(`implicit_tls: true`, the default on port 465, and port 465 the default with it).
`starttls: false` (plain SMTP) is accepted only without a password, and the password is never
sent over an unencrypted connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

from .redact import MASK, Redactor
from .shell import Secret

EVENTS = ("start", "success", "failure", "rollback", "pause")
EVENT_COLOURS = {"start": "#0969da", "success": "#2da44e", "failure": "#cf222e",
                 "rollback": "#bf8700", "pause": "#8250df"}
DEFAULT_TOTAL_TIMEOUT = 15.0


@dataclass
class Message:
    event: str  # start | success | failure | rollback | pause
    env: str
    release: str
    ref: str
    text: str
    fields: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Message.event must be one of {', '.join(EVENTS)}, got {self.event!r}")

    @property
    def subject(self) -> str:
        return f"[deployer] {self.env}: {self.event} {self.release} ({self.ref})"

    def as_dict(self) -> dict:
        return {"event": self.event, "env": self.env, "release": self.release, "ref": self.ref,
                "text": self.text, "fields": dict(self.fields)}


@runtime_checkable
class Notifier(Protocol):
    def send(self, msg: Message) -> None: ...


def _reveal(value: str | Secret | None) -> str:
    if value is None:
        return ""
    return value.reveal() if isinstance(value, Secret) else str(value)


Secrets = Iterable[str | Secret] | Redactor


def _redactor(secrets: Secrets) -> Redactor:
    """A Redactor of its own: a copy of the one given, or one of the values given."""
    if isinstance(secrets, Redactor):
        return secrets.copy()
    return Redactor(secrets or ())


def redact(text: str, secrets: Secrets) -> str:
    """`text` with every secret value (of at least 4 characters) and every secret-looking value
    (deployer.redact's patterns) replaced by ***."""
    return _redactor(secrets).redact(text)


def mask_url(url: str) -> str:
    """scheme://host[:port]/*** : enough to tell webhooks apart, no path, query or userinfo."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return MASK
    return f"{parts.scheme or '?'}://{host}/{MASK}"


def _redact_value(value: Any, r: Redactor) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return r.redact(value)
    if isinstance(value, Mapping):
        return {r.redact(str(k)): _redact_value(v, r) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, r) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return r.redact(str(value))


def redact_message(msg: Message, secrets: Secrets) -> Message:
    r = _redactor(secrets)
    return dataclasses.replace(msg, env=r.redact(msg.env), release=r.redact(msg.release),
                               ref=r.redact(msg.ref), text=r.redact(msg.text),
                               fields=_redact_value(msg.fields, r))


# ------------------------------------------------------------------ notifiers


class NotifyError(Exception):
    """A notifier failed; the message never contains a secret."""


class NotifyConfigError(ValueError):
    """A notifier's configuration is wrong (also raised by the notifiers' constructors)."""


def _post_json(url: str, payload: dict, timeout: float, headers: Mapping[str, str]) -> None:
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "deployer-notify", **headers})
    where = mask_url(url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(65536)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"POST {where}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise NotifyError(f"POST {where}: {type(exc.reason).__name__}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise NotifyError(f"POST {where}: {type(exc).__name__}: {exc}") from None


class SlackWebhook:
    """A Slack-compatible incoming webhook: POST {"text", "attachments"}."""

    def __init__(self, url: str | Secret, timeout: float = 5):
        self._url = _reveal(url)
        self.timeout = timeout
        self.name = f"slack({mask_url(self._url)})"

    def secret_values(self) -> list[str]:
        return [self._url]

    def payload(self, msg: Message) -> dict:
        text = f"*{msg.env}*: {msg.event} `{msg.release}` ({msg.ref})\n{msg.text}"
        fields = [{"title": str(k), "value": str(v), "short": len(str(v)) < 40}
                  for k, v in msg.fields.items()]
        return {"text": text,
                "attachments": [{"color": EVENT_COLOURS.get(msg.event, "#57606a"),
                                 "fallback": text, "fields": fields}]}

    def send(self, msg: Message) -> None:
        _post_json(self._url, self.payload(msg), self.timeout, {})

    def __repr__(self) -> str:
        return self.name


class JsonWebhook:
    """POST the message as JSON (event, env, release, ref, text, fields)."""

    def __init__(self, url: str | Secret, timeout: float = 5,
                 headers: Mapping[str, str | Secret] | None = None):
        self._url = _reveal(url)
        self.timeout = timeout
        self._headers = {str(k): _reveal(v) for k, v in (headers or {}).items()}
        self._secret_headers = [_reveal(v) for v in (headers or {}).values()
                                if isinstance(v, Secret)]
        self.name = f"webhook({mask_url(self._url)})"

    def secret_values(self) -> list[str]:
        return [self._url, *self._secret_headers]

    def send(self, msg: Message) -> None:
        _post_json(self._url, msg.as_dict(), self.timeout, self._headers)

    def __repr__(self) -> str:
        return self.name


class Email:
    """Plain-text email through SMTP: STARTTLS (the default) or implicit TLS, both verified;
    login only inside TLS. Plain SMTP (`starttls=False`) only without a password."""

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str],
                 username: str | None = None, password: Secret | None = None,
                 starttls: bool = True, timeout: float = 5, *, implicit_tls: bool | None = None,
                 tls_ca_file: str | None = None):
        if not recipients:
            raise ValueError("Email: at least one recipient is needed")
        if password is not None and not isinstance(password, Secret):
            password = Secret(str(password))
        self.host, self.port, self.sender = host, int(port), sender
        self.recipients = list(recipients)
        self.username, self._password = username, password
        self.implicit_tls = self.port == 465 if implicit_tls is None else bool(implicit_tls)
        self.starttls = bool(starttls) and not self.implicit_tls
        if password is not None and not (self.starttls or self.implicit_tls):
            raise NotifyConfigError(
                "notify.email.starttls: false would send the SMTP password in clear; keep "
                "STARTTLS on, use implicit_tls (port 465), or configure no password")
        self.tls_ca_file = tls_ca_file
        self._context: ssl.SSLContext | None = None
        if self.starttls or self.implicit_tls:
            try:  # verifies the certificate and the host name
                self._context = ssl.create_default_context(cafile=tls_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise NotifyConfigError(f"notify.email.tls_ca_file: cannot load {tls_ca_file}: "
                                        f"{exc}") from None
        self.timeout = timeout
        self.name = f"email({host}:{self.port})"

    def secret_values(self) -> list[str]:
        return [self._password.reveal()] if self._password else []

    def build(self, msg: Message) -> EmailMessage:
        em = EmailMessage()
        em["Subject"] = msg.subject
        em["From"] = self.sender
        em["To"] = ", ".join(self.recipients)
        lines = [msg.text, ""]
        lines += [f"{k}: {v}" for k, v in {"env": msg.env, "release": msg.release, "ref": msg.ref,
                                            **msg.fields}.items()]
        em.set_content("\n".join(lines) + "\n")
        return em

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self._context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.starttls:
            try:  # required: a server without STARTTLS is an error, never a plain fallback
                smtp.starttls(context=self._context)
            except BaseException:
                smtp.close()
                raise
        return smtp

    def send(self, msg: Message) -> None:
        where = f"smtp {self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.username and self._password:
                    if not isinstance(smtp.sock, ssl.SSLSocket):
                        raise NotifyError(f"{where}: refusing to log in over an unencrypted "
                                          "connection")
                    smtp.login(self.username, self._password.reveal())
                smtp.send_message(self.build(msg), from_addr=self.sender, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            detail = Redactor(self.secret_values()).redact(f"{type(exc).__name__}: {exc}")
            raise NotifyError(f"{where}: {detail}") from None

    def __repr__(self) -> str:
        return self.name


def notifier_name(n: object) -> str:
    return str(getattr(n, "name", None) or type(n).__name__)


def notify_all(notifiers: Iterable[Notifier], msg: Message, *, log=None,
               secrets: Secrets = (),
               timeout: float = DEFAULT_TOTAL_TIMEOUT) -> list[tuple[str, str]]:
    """Send `msg` through every notifier in parallel; never raises.

    `secrets`: the run's Redactor (copied, never changed) or secret values; the message and
    the errors are redacted with them, the notifiers' own secrets and the generic patterns.

    Returns the failures as (notifier name, error); each is also logged through `log` (a
    logging.Logger, or any callable taking one string). Notifiers still running after
    `timeout` seconds in total are reported as timed out (their daemon threads are abandoned).
    """
    notifiers = list(notifiers)
    redactor = _redactor(secrets)
    for n in notifiers:
        try:
            redactor.update(getattr(n, "secret_values", list)())
        except Exception as exc:  # noqa: BLE001 - a broken notifier must not stop the others
            _log(log, f"notification via {notifier_name(n)}: secret_values() failed: "
                      f"{type(exc).__name__}")
    try:
        safe = redact_message(msg, redactor)
    except Exception as exc:  # noqa: BLE001 - e.g. unprintable fields: say so, send the text only
        safe = dataclasses.replace(msg, env=redactor.redact(str(msg.env)),
                                   release=redactor.redact(str(msg.release)),
                                   ref=redactor.redact(str(msg.ref)),
                                   text=redactor.redact(str(msg.text)),
                                   fields={"fields": f"unprintable: {type(exc).__name__}"})

    results: dict[int, str | None] = {}
    lock = threading.Lock()

    def run(i: int, n: Notifier) -> None:
        try:
            n.send(safe)
            err = None
        except Exception as exc:  # noqa: BLE001 - report, never raise
            err = str(exc) if isinstance(exc, NotifyError) else f"{type(exc).__name__}: {exc}"
        with lock:
            results[i] = err

    threads = []
    for i, n in enumerate(notifiers):
        th = threading.Thread(target=run, args=(i, n), name=f"notify-{notifier_name(n)}",
                              daemon=True)
        th.start()
        threads.append(th)
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))

    failures: list[tuple[str, str]] = []
    with lock:
        for i, n in enumerate(notifiers):
            err = results.get(i, f"timed out after {timeout:g}s")
            if err is not None:
                failures.append((notifier_name(n), redactor.redact(err)))
    for name, err in failures:
        _log(log, f"notification via {name} failed: {err}")
    return failures


def _log(log, line: str) -> None:
    if log is None:
        return
    with contextlib.suppress(Exception):  # logging must not break notifying
        if hasattr(log, "warning"):
            log.warning("%s", line)
        else:
            log(line)


# ------------------------------------------------------------------ configuration


def _env(environ: Mapping[str, str], section: str, key: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise NotifyConfigError(f"notify.{section}.{key}: expected an environment variable name")
    value = environ.get(name)
    if not value:
        raise NotifyConfigError(f"notify.{section}.{key}: environment variable {name} is not set")
    return value


def _timeout(section: str, conf: Mapping) -> float:
    value = conf.get("timeout", 5)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise NotifyConfigError(f"notify.{section}.timeout: expected a positive number")
    return float(value)


def notifiers_from_config(data: Mapping | None, environ: Mapping[str, str]) -> list[Notifier]:
    """Notifiers from a `notify:` mapping; secret values are read from `environ` only."""
    if not data:
        return []
    if not isinstance(data, Mapping):
        raise NotifyConfigError("notify: expected a mapping")
    unknown = set(data) - {"slack", "webhook", "email"}
    if unknown:
        raise NotifyConfigError(f"notify: unknown notifier(s): {', '.join(sorted(unknown))} "
                                "(known: slack, webhook, email)")
    out: list[Notifier] = []
    for section, conf in data.items():
        if conf is None:
            continue
        if not isinstance(conf, Mapping):
            raise NotifyConfigError(f"notify.{section}: expected a mapping")
        if section == "slack":
            if "url" in conf:
                raise NotifyConfigError("notify.slack.url: the webhook URL is a secret; "
                                        "name an environment variable with url_env")
            out.append(SlackWebhook(Secret(_env(environ, section, "url_env", conf.get("url_env"))),
                                    timeout=_timeout(section, conf)))
        elif section == "webhook":
            if "url_env" in conf:
                url = _env(environ, section, "url_env", conf["url_env"])
            elif isinstance(conf.get("url"), str) and conf["url"].startswith(("http://",
                                                                              "https://")):
                url = conf["url"]
            else:
                raise NotifyConfigError("notify.webhook: expected url (http/https) or url_env")
            headers: dict[str, str | Secret] = {}
            for k, v in (conf.get("headers") or {}).items():
                headers[str(k)] = str(v)
            for k, v in (conf.get("headers_env") or {}).items():
                headers[str(k)] = Secret(_env(environ, section, f"headers_env.{k}", v))
            out.append(JsonWebhook(url, timeout=_timeout(section, conf), headers=headers))
        elif section == "email":
            for key in ("host", "from", "to"):
                if not conf.get(key):
                    raise NotifyConfigError(f"notify.email.{key}: required")
            if "password" in conf:
                raise NotifyConfigError("notify.email.password: secrets are never inline; "
                                        "name an environment variable with password_env")
            to = conf["to"]
            recipients = [to] if isinstance(to, str) else [str(r) for r in to]
            username = conf.get("username")
            if conf.get("username_env"):
                username = _env(environ, section, "username_env", conf["username_env"])
            password = (Secret(_env(environ, section, "password_env", conf["password_env"]))
                        if conf.get("password_env") else None)
            for key in ("starttls", "implicit_tls"):
                if key in conf and not isinstance(conf[key], bool):
                    raise NotifyConfigError(f"notify.email.{key}: expected true or false")
            implicit_tls = conf.get("implicit_tls")
            port = conf.get("port", 465 if implicit_tls else 25)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise NotifyConfigError("notify.email.port: expected a port number")
            ca_file = conf.get("tls_ca_file")
            if ca_file is not None and not (isinstance(ca_file, str) and os.path.isfile(ca_file)):
                raise NotifyConfigError(f"notify.email.tls_ca_file: {ca_file!r} is not a file")
            out.append(Email(str(conf["host"]), port, str(conf["from"]), recipients,
                             username=username, password=password,
                             starttls=conf.get("starttls", True), implicit_tls=implicit_tls,
                             tls_ca_file=ca_file, timeout=_timeout(section, conf)))
    return out


__all__ = ["Email", "JsonWebhook", "Message", "Notifier", "NotifyConfigError", "NotifyError",
           "SlackWebhook", "mask_url", "notifiers_from_config", "notify_all", "redact"]
