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

from .channels import Email, JsonWebhook, SlackWebhook
from .config import notifiers_from_config
from .message import (
    DEFAULT_TOTAL_TIMEOUT,
    EVENT_COLOURS,
    EVENTS,
    Message,
    Notifier,
    NotifyConfigError,
    NotifyError,
    mask_url,
    notifier_name,
    notify_all,
    redact,
    redact_message,
)

__all__ = ["DEFAULT_TOTAL_TIMEOUT", "EVENTS", "EVENT_COLOURS", "Email", "JsonWebhook", "Message", "Notifier",
           "NotifyConfigError", "NotifyError", "SlackWebhook", "mask_url", "notifier_name", "notifiers_from_config",
           "notify_all", "redact", "redact_message"]
