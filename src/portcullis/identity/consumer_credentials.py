"""A consumer that leaves the config takes its credentials with it.

Consumers live in the declarative config; their API keys and OAuth clients live in
the store, keyed by username. When a config version drops a consumer (an admin
DELETE, a config import or `portcullis config apply` without it, a rollback to a
version before it), `ConfigRepository` calls `retire_credentials` inside the
transaction that stores that version, so the removal and the retirement commit
together:

- its API keys are revoked (final; the records stay for the audit trail), each with
  the KEY event that makes every worker drop its cached record;
- its OAuth clients are deleted and every token they were issued is revoked (one
  client-wide revocation each, with its TOKEN event);
- its basic-auth, hmac-auth and mtls-auth credentials are deleted, each with the
  CREDENTIAL event that makes every worker drop what it cached.

A consumer created later under the same username therefore starts with none of its
predecessor's credentials, and none of them ever works again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.identity.credential_store import delete_credentials_of
from portcullis.identity.key_repository import revoke_keys_of
from portcullis.identity.oauth_clients import delete_clients_of


async def retire_credentials(
    conn: AsyncConnection, usernames: Sequence[str], *, version: int
) -> None:
    """Revoke the keys and delete the OAuth clients and other credentials of consumers
    removed in `version`."""
    if not usernames:
        return
    reason = f"its consumer was deleted (config version {version})"
    await revoke_keys_of(conn, usernames, reason, datetime.now(UTC))
    await delete_clients_of(conn, usernames)
    await delete_credentials_of(conn, usernames)
