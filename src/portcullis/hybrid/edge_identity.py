"""Identity on a hybrid data plane, before identity reaches the edge (docs/hybrid.md).

The node has no database, and keys, credentials and OAuth signing keys do not travel
over the cluster channel yet. These stand-ins for the store side of the credential
caches know no credential, so every key-auth, basic-auth, hmac-auth and mtls-auth
request is refused as an unknown credential (401): closed, never open.
"""

from __future__ import annotations

from datetime import datetime

from portcullis.identity.credential_store import CredentialKind, CredentialRecord
from portcullis.identity.key_records import KeyRecord


class NoKeys:
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        return None

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        return None


class NoCredentials:
    async def find(self, kind: CredentialKind, identifier: str) -> tuple[CredentialRecord, ...]:
        return ()


NO_KEYS = NoKeys()
NO_CREDENTIALS = NoCredentials()
