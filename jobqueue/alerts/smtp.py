"""The email channel: one mail per notification through SMTP (stdlib smtplib).

Plain, STARTTLS or implicit TLS, with an optional login; the password comes from the
environment variable or file the channel names (``password_env`` / ``password_file``).
"""

from __future__ import annotations

import email.utils
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any

from jobqueue.alerts.channels import (
    ChannelConfigError,
    DeliveryFailed,
    DeliveryRefused,
    Notification,
    config_bool,
    config_field,
    config_string,
    config_timeout,
    read_secret,
)


def send_email(n: Notification) -> dict[str, Any]:
    """SMTP: plain (``starttls`` false), STARTTLS (``starttls`` true) or implicit TLS
    (``ssl`` true, usually port 465); login when ``username`` is given, with the password
    from ``password_env`` / ``password_file``. The server's certificate is checked against the system's CAs
    (``SSL_CERT_FILE`` in the worker's environment adds a private one), or ``ca_file``'s."""
    host = config_string(n, "host")
    assert host is not None
    port = n.config.get("port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ChannelConfigError(config_field(n, "port"), f"must be a port number 1-65535, not {port!r}")
    sender = config_string(n, "from")
    recipients = n.config.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and r for r in recipients):
        raise ChannelConfigError(config_field(n, "to"), "must be a non-empty list of addresses")
    starttls, implicit = config_bool(n, "starttls"), config_bool(n, "ssl")
    if starttls and implicit:
        raise ChannelConfigError(config_field(n, "ssl"), "give ssl (implicit TLS) or starttls, not both")
    username = config_string(n, "username", required=False)
    password = read_secret(n, "password", required=username is not None)
    if password is not None and username is None:
        raise ChannelConfigError(config_field(n, "username"), "is required when a password is given")
    timeout = config_timeout(n)
    context: ssl.SSLContext | None = None
    if starttls or implicit:
        ca_file = config_string(n, "ca_file", required=False)
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except OSError as exc:
            raise ChannelConfigError(config_field(n, "ca_file"), f"cannot load {ca_file!r}: {exc}") from exc

    message = EmailMessage()
    message["Subject"] = n.title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.formatdate(localtime=False)
    # The same id on every retry of this notification: mail clients show a duplicate once.
    message["Message-ID"] = f"<jobqueue.{n.delivery_id}.{n.event}@{_domain(sender)}>"
    message["X-Jobqueue-Incident"] = str(n.incident.get("id", ""))
    message["X-Jobqueue-Event"] = n.event
    message.set_content(n.text())

    where = f"email channel {n.channel!r} ({host}:{port})"
    try:
        smtp: smtplib.SMTP
        if implicit:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if starttls:
                smtp.starttls(context=context)
            if username is not None and password is not None:
                smtp.login(username, password)
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryRefused(f"{where}: certificate not trusted: {exc.verify_message or exc}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryRefused(f"{where}: {exc}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryRefused(f"{where}: login refused: {exc.smtp_code} {_smtp_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _) in exc.recipients.items()}
        if all(400 <= code < 500 for code in codes.values()):
            raise DeliveryFailed(f"{where}: recipients deferred: {codes}") from None
        raise DeliveryRefused(f"{where}: recipients refused: {codes}") from None
    except smtplib.SMTPResponseException as exc:
        text = f"{where}: {exc.smtp_code} {_smtp_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            raise DeliveryFailed(text) from None
        raise DeliveryRefused(text) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"{where}: {type(exc).__name__}: {exc}") from None
    return {"recipients": len(recipients), "refused": sorted(refused)}


def _domain(address: str | None) -> str:
    _, addr = email.utils.parseaddr(address or "")
    return addr.rpartition("@")[2] or socket.getfqdn() or "localhost"


def _smtp_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
