"""The cluster protocol between a control plane and its data-plane nodes.

One WebSocket per node on the control plane's `/cluster/v1/connect`, opened with
`Authorization: Bearer <PORTCULLIS_CLUSTER_TOKEN>`. Then:

1. node → `hello` (text): `{"type": "hello", "protocol": 1, "node": name, "version": N,
   "checksum": sha256}` — the config it serves (0 and "" when it has none).
2. control plane → whatever brings the node to its current version:
   - `current` (text) `{"type": "current", "version": N}`: the node is up to date;
   - `delta` (text) `{"type": "delta", "from": a, "to": b, "checksum": c, "deltas": [...]}`:
     the stored per-version deltas a+1..b (model/delta.py), each against the version
     before it; the node applies them to its document and checks that the result's
     canonical text hashes to `checksum`;
   - `snapshot` (binary): a header line `{"type": "snapshot", "version": N,
     "checksum": c, "length": L}`, a newline, then the canonical JSON text of the
     config (L bytes, sha256 = c).
3. From then on the control plane sends a `delta` or `snapshot` as each version commits.
   Beside the config it sends `identity` (text) `{"type": "identity", "seq": n, "full":
   bool, "keys": {...}, "credentials": {...}}`: the whole identity set when the node
   connects, then the keys and credentials each committed change named
   (hybrid/edge_identity.py; hashes and stored forms only, never a secret).
   A node whose delta does not hash to the checksum sends `{"type": "resync"}` and gets
   a `snapshot`.

Close codes: 4401 the token is missing or wrong; 4403 this control plane accepts no
data planes (no cluster token configured); 4400 the node broke the protocol; 1013 the
control plane is not ready yet (try again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

PROTOCOL = 1
PATH = "/cluster/v1/connect"
CLOSE_BAD_TOKEN = 4401
CLOSE_DISABLED = 4403
CLOSE_PROTOCOL = 4400
CLOSE_TRY_AGAIN = 1013
CLOSE_REASONS = {
    CLOSE_BAD_TOKEN: "invalid cluster token",
    CLOSE_DISABLED: "this control plane accepts no data planes (PORTCULLIS_CLUSTER_TOKEN unset)",
    CLOSE_PROTOCOL: "protocol violation",
    CLOSE_TRY_AGAIN: "control plane starting, try again",
}


class ProtocolError(ValueError):
    """A message that does not follow the protocol."""


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str | None, expected: str | None) -> bool:
    """Whether `presented` is the cluster token, in time independent of where they differ.

    No expected token (clustering off) matches nothing."""
    if not expected or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Hello:
    node: str
    version: int
    checksum: str

    def encode(self) -> str:
        return _dump(
            {
                "type": "hello",
                "protocol": PROTOCOL,
                "node": self.node,
                "version": self.version,
                "checksum": self.checksum,
            }
        )


@dataclass(frozen=True, slots=True)
class Current:
    version: int

    def encode(self) -> str:
        return _dump({"type": "current", "version": self.version})


@dataclass(frozen=True, slots=True)
class Delta:
    start: int
    end: int
    checksum: str
    deltas: list[dict[str, Any]]

    def encode(self) -> str:
        return _dump(
            {
                "type": "delta",
                "from": self.start,
                "to": self.end,
                "checksum": self.checksum,
                "deltas": self.deltas,
            }
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    checksum: str
    body: bytes

    def encode(self) -> bytes:
        header = {
            "type": "snapshot",
            "version": self.version,
            "checksum": self.checksum,
            "length": len(self.body),
        }
        return _dump(header).encode() + b"\n" + self.body

    def verified(self) -> bool:
        return hashlib.sha256(self.body).hexdigest() == self.checksum


@dataclass(frozen=True, slots=True)
class Identity:
    """Identity for the node (hybrid/edge_identity.py): the whole set (`full`) or the
    changes committed up to the control plane's invalidation-feed position `seq`."""

    seq: int
    full: bool
    changes: dict[str, Any]

    def encode(self) -> str:
        return _dump({"type": "identity", "seq": self.seq, "full": self.full, **self.changes})


RESYNC = '{"type":"resync"}'


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _int(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key!r} must be a non-negative integer")
    return value


def _str(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} must be a string")
    return value


def _object(text: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def parse_hello(text: str) -> Hello:
    message = _object(text)
    if message.get("type") != "hello":
        raise ProtocolError("the first message must be a hello")
    if message.get("protocol") != PROTOCOL:
        raise ProtocolError(f"unsupported protocol {message.get('protocol')!r}")
    return Hello(_str(message, "node")[:200], _int(message, "version"), _str(message, "checksum"))


def is_resync(text: str) -> bool:
    try:
        return _object(text).get("type") == "resync"
    except ProtocolError:
        return False


def parse_text(text: str) -> Current | Delta | Identity:
    """A control-plane text message."""
    message = _object(text)
    kind = message.get("type")
    if kind == "identity":
        keys, credentials = message.get("keys", {}), message.get("credentials", {})
        if not isinstance(keys, dict) or not isinstance(credentials, dict):
            raise ProtocolError("'keys' and 'credentials' must be objects")
        changes: dict[str, Any] = {"keys": keys, "credentials": credentials}
        issuer = message.get("issuer")
        if issuer is not None:
            if not isinstance(issuer, dict):
                raise ProtocolError("'issuer' must be an object")
            changes["issuer"] = issuer
        check = message.get("pepper_check")
        if isinstance(check, str):
            changes["pepper_check"] = check
        return Identity(_int(message, "seq"), message.get("full") is True, changes)
    if kind == "current":
        return Current(_int(message, "version"))
    if kind == "delta":
        deltas = message.get("deltas")
        if not isinstance(deltas, list) or not all(isinstance(d, dict) for d in deltas):
            raise ProtocolError("'deltas' must be a list of objects")
        start, end = _int(message, "from"), _int(message, "to")
        if end - start != len(deltas):
            raise ProtocolError(f"{len(deltas)} deltas do not lead from {start} to {end}")
        return Delta(start, end, _str(message, "checksum"), deltas)
    raise ProtocolError(f"unknown message type {kind!r}")


def parse_binary(data: bytes) -> Snapshot:
    """A control-plane binary message (a snapshot)."""
    end = data.find(b"\n", 0, 4096)
    if end < 0:
        raise ProtocolError("a snapshot needs a header line")
    header = _object(data[:end])
    if header.get("type") != "snapshot":
        raise ProtocolError("a binary message must be a snapshot")
    body = data[end + 1 :]
    if _int(header, "length") != len(body):
        raise ProtocolError("the snapshot's length does not match its body")
    return Snapshot(_int(header, "version"), _str(header, "checksum"), body)
