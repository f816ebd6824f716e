"""The channels: Slack-compatible and generic JSON webhooks, email over SMTP (TLS by default)."""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import EmailMessage

from ..redact import Redactor
from ..shell import Secret
from .message import EVENT_COLOURS, Message, NotifyConfigError, NotifyError, _reveal, mask_url


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
