"""A test certificate authority: real certificates for real TLS clients (EC P-256: fast)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# What a CA made for the job carries (`openssl req -x509` leaves it out: `key_usage=None`).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def common_name(name: str, *more: x509.NameAttribute[str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name), *more])


def subject_alt_name(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    not_before: datetime,
    not_after: datetime,
    key_usage: x509.KeyUsage | None = CA_KEY_USAGE,
) -> x509.Certificate:
    """A root CA; without `key_usage` also without a subject key identifier, as
    `openssl req -x509` makes them by default."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def leaf_certificate(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
    *,
    client: bool = False,
) -> x509.Certificate:
    """A server (or `client`) certificate `ca` signs; it names its authority's key only
    when the CA has a subject key identifier (as OpenSSL's defaults do)."""
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    try:
        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        pass  # no identifier to name
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass
class Issued:
    cert: str  # the chain: leaf then the CA
    key: str
    leaf: x509.Certificate

    @property
    def serial(self) -> int:
        return self.leaf.serial_number


@dataclass
class CertificateAuthority:
    """A self-signed root that issues server (and client) certificates."""

    name: str = "Portcullis Test CA"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    # None: no key usage extension, as `openssl req -x509` makes CAs.
    key_usage: x509.KeyUsage | None = None
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.cert = self_signed_ca(
            self.key,
            common_name(self.name),
            now - timedelta(days=1),
            now + timedelta(days=3650),
            self.key_usage,
        )

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    def issue(
        self,
        *names: str,
        days: float = 90,
        client: bool = False,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        """A leaf for `names` (DNS names or IPs), valid `days` from now."""
        key = key or new_key()
        now = datetime.now(UTC)
        leaf = leaf_certificate(
            self.cert,
            self.key,
            key,
            common_name(names[0]),
            [subject_alt_name(n) for n in names],
            min(now, now + timedelta(days=days)) - timedelta(hours=1),
            now + timedelta(days=days),
            client=client,
        )
        return Issued(_pem(leaf) + self.pem, pem_key(key), leaf)
