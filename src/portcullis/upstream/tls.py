"""TLS to origins: one `ssl.SSLContext` per distinct service TLS setting, built per snapshot.

A service's origin-TLS settings (`tls_verify`, `ca_certificates`, `client_certificate`,
`tls_server_name`, see `model.config.Service`) become an `OriginTls`: the context the
transports hand to the TLS handshake and the name sent as SNI and verified against the
origin's certificate. `OriginTls` rides on the transport `Origin`, so the connection
pools key connections by it: a connection opened with one client certificate or trust
store is never reused for a service with another.

Contexts are built when a snapshot compiles, never per request, and `TlsCache` hands the
very same `OriginTls` to the next snapshot while the settings are unchanged (keyed by a
digest of the material, so the cache holds no copy of a key): idle pooled connections
stay reusable across config swaps.

Python's `ssl` loads a client certificate and key only from files. On Linux the PEM is
written to an anonymous memory file (`memfd_create`: no name on any filesystem, gone when
closed) and loaded through `/proc/self/fd/N`; elsewhere to a private temporary file
(created 0600 by `mkstemp`) that is removed right after loading. See
docs/decisions/031-upstream-tls.md.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

import structlog

from portcullis.key_files import key_file

__all__ = [
    "OriginTls",
    "TlsCache",
    "TlsSettings",
    "TlsSetupError",
    "build_context",
    "describe_tls_error",
]


log = structlog.get_logger(__name__)


class TlsSetupError(ValueError):
    """TLS material that does not load (a bad CA bundle, a key that is not the cert's)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a service's origin TLS is built from (PEM text; the key is secret)."""

    verify: bool = True
    ca_certificates: tuple[str, ...] = ()
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None

    def digest(self) -> str:
        """Identity of the material for the context cache (holds no copy of the key)."""
        h = hashlib.sha256()
        for part in (
            "1" if self.verify else "0",
            *self.ca_certificates,
            self.client_cert or "",
            self.client_key or "",
        ):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part.encode())
        return h.hexdigest()

    @property
    def is_default(self) -> bool:
        """Verify against the system store, no client certificate, SNI = the target host."""
        return self == _DEFAULT


_DEFAULT = TlsSettings()


@dataclass(frozen=True, slots=True, eq=False)
class OriginTls:
    """The TLS side of an origin: the context, and the name sent as SNI and verified.

    Compared by identity (it is shared, not rebuilt, while settings are unchanged), so
    using it in a pool key costs one pointer comparison. `server_name` None: the
    target's host.
    """

    context: ssl.SSLContext
    server_name: str | None = None
    # Material that did not load when the snapshot compiled: connecting fails with it
    # (a 502 naming it) rather than the whole config failing to apply on the data plane.
    error: str | None = None

    def name_for(self, host: str) -> str:
        return self.server_name or host


def default_context() -> ssl.SSLContext:
    """The system trust store, hostname checks, TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    """An `SSLContext` for `settings`; `TlsSetupError` names the material that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if settings.ca_certificates:
            for i, pem in enumerate(settings.ca_certificates):
                try:
                    context.load_verify_locations(cadata=pem)
                except (ssl.SSLError, ValueError) as exc:
                    raise TlsSetupError(
                        f"ca_certificates[{i}]: not a PEM certificate bundle ({_reason(exc)})"
                    ) from None
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert is not None and settings.client_key is not None:
        load_client_certificate(context, settings.client_cert, settings.client_key)
    return context


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise TlsSetupError("client_certificate: encrypted private keys are not supported")


def load_client_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    """`context.load_cert_chain` from in-memory PEM, without the key ever in a named file
    on Linux (see the module doc)."""
    material = (cert.rstrip("\n") + "\n" + key.rstrip("\n") + "\n").encode()
    try:
        with key_file(material) as path:
            context.load_cert_chain(path, password=_no_password)
    except TlsSetupError:
        raise
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise TlsSetupError(
            f"client_certificate: the certificate and key do not load ({_reason(exc)})"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return type(exc).__name__


def describe_tls_error(exc: BaseException) -> str:
    """What failed in a handshake, for a 502's detail: no key material, no config."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or "certificate verify failed"
        return f"the origin's certificate was refused: {message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_reason(exc)}"
    return f"TLS handshake failed: {type(exc).__name__}"


class TlsCache:
    """`OriginTls` per settings, carried from one snapshot's cache to the next.

    `get` reuses an entry of the previous cache when the material and server name are
    the same, so the object (and the pooled connections keyed by it) survive swaps;
    `seal()` drops the previous cache's leftovers once the snapshot is compiled.
    """

    def __init__(self, previous: TlsCache | None = None) -> None:
        self._old_entries = previous._entries if previous is not None else {}
        self._old_contexts = previous._contexts if previous is not None else {}
        self._entries: dict[tuple[str, str | None], OriginTls] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}

    def get(self, settings: TlsSettings) -> OriginTls:
        digest = settings.digest()
        key = (digest, settings.server_name)
        entry = self._entries.get(key) or self._old_entries.get(key)
        if entry is None:
            context = self._contexts.get(digest) or self._old_contexts.get(digest)
            if context is not None:
                entry = OriginTls(context, settings.server_name)
            else:
                try:
                    entry = OriginTls(build_context(settings), settings.server_name)
                except TlsSetupError as exc:
                    log.error("upstream.tls_setup_failed", error=str(exc))
                    # Never handshakes (the transports fail on `error` first).
                    unused = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    entry = OriginTls(unused, settings.server_name, error=str(exc))
        self._entries[key] = entry
        if entry.error is None:
            self._contexts[digest] = entry.context
        return entry

    def seal(self) -> None:
        self._old_entries = {}
        self._old_contexts = {}

    def __len__(self) -> int:
        return len(self._entries)
