"""E-mail through Django's mail framework, with errors sorted into transient and permanent."""

import hashlib
import smtplib
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from tasks_admin.errors import PermanentProviderError, TransientProviderError


def message_id_for(idempotency_key: str) -> str:
    """A Message-ID derived from the business key: a repeat of the same message is recognisable."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


def send_email(*, to: str, subject: str, body: str, html_body: str, idempotency_key: str) -> str:
    """Send one message; return its Message-ID."""
    message_id = message_id_for(idempotency_key)
    message = EmailMultiAlternatives(subject, body, to=[to], headers={"Message-ID": message_id})
    if html_body:
        message.attach_alternative(html_body, "text/html")
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(code >= 500 for code in codes):
            raise PermanentProviderError(f"Mail server refused {to}: {exc.recipients}") from exc
        raise TransientProviderError(f"Mail server deferred {to}: {exc.recipients}") from exc
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise PermanentProviderError(f"Mail server error {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise TransientProviderError(f"Mail server error {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientProviderError(f"Mail server unavailable: {exc}") from exc
    return message_id
