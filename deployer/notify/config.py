"""Notifiers from a `notify:` mapping; secrets come from environment variables only."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..shell import Secret
from .channels import Email, JsonWebhook, SlackWebhook
from .message import Message, Notifier, NotifyConfigError, NotifyError, mask_url, notify_all, redact


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
