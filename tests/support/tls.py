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


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


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
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        if self.key_usage is not None:
            builder = builder.add_extension(self.key_usage, critical=True)
        self.cert = builder.sign(self.key, hashes.SHA256())

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
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, now + timedelta(days=days)) - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        leaf = builder.sign(self.key, hashes.SHA256())
        return Issued(_pem(leaf) + self.pem, _pem_key(key), leaf)
