"""TLS certificates the gateway serves (chosen by SNI) or presents to origins.

A `certificates` entry holds a PEM certificate chain (leaf first) and its private key,
and the server names (`snis`) it is served for: exact names (`api.example.com`) and
left-most wildcards (`*.example.com`, one label, as TLS clients match them, RFC 6125
§6.4.3). A server name belongs to at most one certificate of the gateway: the TLS
listener is shared, so two certificates claiming one name would make the choice
arbitrary. A service can present a certificate to its origin (`Service.client_certificate`).

The key is a secret (`writeOnly`): redacted in audit, exports and diffs. The PEM
material is parsed (the chain in order, the key the leaf's) by `certificate_pem`,
imported only when a config holds a certificate (the model stays free of crypto
libraries otherwise: the `model-is-pure` import contract lists that one module).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from portcullis.model.secrets import Secret
from portcullis.model.types import Name, StrictModel, Tag

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
# One label or more (`localhost`, `api.example.com`); a wildcard covers one label over
# two or more (`*.example.com`, never `*.com`).
_SERVER_NAME = re.compile(rf"^(\*\.{_LABEL}(\.{_LABEL})+|{_LABEL}(\.{_LABEL})*)$")
_CERT_BLOCK = "-----BEGIN CERTIFICATE-----"
_KEY_BLOCK = re.compile(r"-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----")
MAX_PEM = 64 * 1024
# A key as stored: encrypted with the deployment secret (store/sealing.py). Accepted
# back as it is (an export re-applied to the same deployment); checked when sealed.
SEALED_KEY_PREFIX = "enc:v1:"


def _check_server_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if len(name) > 253 or not _SERVER_NAME.match(name):
        raise ValueError(
            f"{value!r} is not a server name: a DNS name ('localhost', 'api.example.com'), "
            "or one wildcard label over two or more ('*.example.com')"
        )
    return name


ServerName = Annotated[str, AfterValidator(_check_server_name)]


def _check_cert(value: str) -> str:
    if _CERT_BLOCK not in value:
        raise ValueError("expected a PEM certificate chain ('-----BEGIN CERTIFICATE-----')")
    return value


def _check_key(value: str) -> str:
    if value.startswith(SEALED_KEY_PREFIX):
        return value
    if not _KEY_BLOCK.search(value):
        raise ValueError("expected a PEM private key ('-----BEGIN PRIVATE KEY-----')")
    return value


class Certificate(StrictModel):
    """A certificate chain and key, served for `snis` and/or presented to origins."""

    name: Name
    cert: Annotated[str, Field(min_length=1, max_length=MAX_PEM), AfterValidator(_check_cert)]
    key: Secret[Annotated[str, Field(min_length=1, max_length=MAX_PEM), AfterValidator(_check_key)]]
    snis: list[ServerName] = Field(default_factory=list, max_length=100)
    tags: list[Tag] = Field(default_factory=list)
    organization: Name | None = None

    @field_validator("cert")
    @classmethod
    def _parse_chain(cls, v: str) -> str:
        from portcullis.model.certificate_pem import PemError, load_chain

        try:
            load_chain(v)
        except PemError as exc:
            raise ValueError(str(exc).removeprefix("cert: ")) from None
        return v

    @field_validator("key")
    @classmethod
    def _key_of_leaf(cls, v: str, info: ValidationInfo) -> str:
        cert = info.data.get("cert")
        if cert is None or v.startswith(SEALED_KEY_PREFIX):  # refused already / checked
            return v
        from portcullis.model.certificate_pem import PemError, check_material

        try:
            check_material(cert, v)
        except PemError as exc:
            raise ValueError(str(exc).removeprefix("key: ")) from None
        return v

    @field_validator("snis")
    @classmethod
    def _unique_snis(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, name in enumerate(v):
            if name in seen:
                raise ValueError(f"snis[{i}]: {name!r} is listed twice")
            seen.add(name)
        return v


def sni_errors(certificates: Sequence[Certificate]) -> list[str]:
    """A server name claimed by two certificates (the listener could serve either)."""
    errors: list[str] = []
    owner: dict[str, str] = {}
    for i, cert in enumerate(certificates):
        for j, name in enumerate(cert.snis):
            if name in owner:
                errors.append(
                    f"certificates[{i}].snis[{j}]: {name!r} is already served by "
                    f"certificate {owner[name]!r}"
                )
            else:
                owner[name] = cert.name
    return errors
