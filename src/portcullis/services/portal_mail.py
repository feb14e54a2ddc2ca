"""The portal's mail: a `MailSender` protocol, the embedded outbox, and SMTP.

The embedded default (`OutboxMailSender`) keeps each message in a store table, where
the portal's outbox view (`/portal/outbox`, on only when `portal_outbox_view` is set,
as in the demo) shows it: a fresh clone verifies an email without a mail server. With
`portal_smtp_host` set, `SmtpMailSender` sends through that server (the standard
library's `smtplib`, in a thread, so the event loop never waits on the network).
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.context import Clock, utc_now
from portcullis.settings import Settings
from portcullis.store.engine import write_transaction
from portcullis.store.portal_tables import OutboxMessageRow


@dataclass(frozen=True, slots=True)
class MailMessage:
    recipient: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class StoredMail:
    id: int
    recipient: str
    subject: str
    body: str
    created_at: datetime


class MailSender(Protocol):
    """Sends (or keeps) one message; raises on failure."""

    async def send(self, message: MailMessage) -> None: ...


class OutboxMailSender:
    """Keeps messages in the store (`portal_outbox`) instead of sending them."""

    def __init__(self, engine: AsyncEngine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def send(self, message: MailMessage) -> None:
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                insert(OutboxMessageRow).values(
                    recipient=message.recipient,
                    subject=message.subject,
                    body=message.body,
                    created_at=self._clock(),
                )
            )

    async def messages(self, *, recipient: str | None = None, limit: int = 50) -> list[StoredMail]:
        """The newest messages first (of `recipient` only, when given)."""
        query = select(OutboxMessageRow).order_by(OutboxMessageRow.id.desc()).limit(limit)
        if recipient is not None:
            query = query.where(OutboxMessageRow.recipient == recipient.strip().lower())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredMail(r.id, r.recipient, r.subject, r.body, r.created_at) for r in rows]


class SmtpMailSender:
    """Sends through an SMTP server (STARTTLS and login when configured)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._host, self._port, self._sender = host, port, sender
        self._starttls, self._username, self._password = starttls, username, password
        self._timeout = timeout

    async def send(self, message: MailMessage) -> None:
        await asyncio.to_thread(self._send, message)

    def _send(self, message: MailMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail.set_content(message.body)
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as client:
            if self._starttls:
                client.starttls()
            if self._username is not None and self._password is not None:
                client.login(self._username, self._password)
            client.send_message(mail)


def mail_sender(settings: Settings, engine: AsyncEngine) -> MailSender:
    """SMTP when `portal_smtp_host` is set, else the embedded outbox."""
    if settings.portal_smtp_host is None:
        return OutboxMailSender(engine)
    password = settings.portal_smtp_password
    return SmtpMailSender(
        settings.portal_smtp_host,
        settings.portal_smtp_port,
        settings.portal_mail_from,
        starttls=settings.portal_smtp_starttls,
        username=settings.portal_smtp_username,
        password=None if password is None else password.get_secret_value(),
    )
