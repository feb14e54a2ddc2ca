"""The certificates entity: server names, PEM material, one certificate per server name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ConfigError, load_config_file, load_config_text
from portcullis.model.secrets import REDACTED, redact
from support.tls import CertificateAuthority

CA = CertificateAuthority()
ISSUED = CA.issue("x.example.com")
CERT, KEY = ISSUED.cert, ISSUED.key


def config(*certificates: dict[str, object]) -> GatewayConfig:
    return GatewayConfig.model_validate({"certificates": list(certificates)})


def entry(name: str, *snis: str, **fields: object) -> dict[str, object]:
    return {"name": name, "cert": CERT, "key": KEY, "snis": list(snis), **fields}


def test_server_names_are_normalised_and_wildcards_take_one_left_label() -> None:
    cert = config(entry("a", "API.Example.com.", "*.example.com", "localhost")).certificates[0]
    assert cert.snis == ["api.example.com", "*.example.com", "localhost"]


@pytest.mark.parametrize(
    "name", ["*.*.example.com", "api.*.com", "*.com", "-a.example.com", "a b.example.com"]
)
def test_a_name_that_is_not_a_server_name_is_refused_at_its_index(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(entry("a", "ok.example.com", name))
    assert info.value.errors()[0]["loc"] == ("certificates", 0, "snis", 1)


def test_a_server_name_belongs_to_one_certificate() -> None:
    with pytest.raises(ValidationError, match=r"certificates\[1\]\.snis\[0\].*certificate 'a'"):
        config(entry("a", "x.example.com"), entry("b", "x.example.com"))


def test_names_are_unique_and_pem_blocks_are_expected() -> None:
    with pytest.raises(ValidationError, match=r"certificates\[1\]\.name: duplicate"):
        config(entry("a"), entry("a"))
    with pytest.raises(ValidationError, match="PEM certificate"):
        config(entry("a", cert="not pem"))
    with pytest.raises(ValidationError, match="PEM private key"):
        config(entry("a", key=CERT))


def test_the_key_is_redacted_and_the_chain_is_not() -> None:
    doc = redact(config(entry("a", "x.example.com")).canonical(), GatewayConfig)
    assert doc["certificates"][0]["key"] == REDACTED
    assert doc["certificates"][0]["cert"] == CERT.strip()


def test_pem_material_is_parsed_and_errors_name_the_field() -> None:
    other = CA.issue("y.example.com")
    with pytest.raises(ValidationError) as info:
        config(entry("a", key=other.key))
    assert info.value.errors()[0]["loc"] == ("certificates", 0, "key")
    assert "does not match the certificate" in str(info.value)
    garbled = CERT.replace("MI", "xx", 1)
    with pytest.raises(ValidationError) as info:
        config(entry("a", cert=garbled))
    assert info.value.errors()[0]["loc"] == ("certificates", 0, "cert")


def test_a_chain_must_list_each_issuer_after_what_it_issued() -> None:
    leaf, ca = CERT.split("-----END CERTIFICATE-----\n")[:2]
    reordered = ca + "-----END CERTIFICATE-----\n" + leaf + "-----END CERTIFICATE-----\n"
    with pytest.raises(ValidationError, match="leaf first, each certificate followed by its"):
        config(entry("a", cert=reordered))


def test_an_expired_certificate_still_loads() -> None:
    """A stored config must stay loadable after its certificate expires (the expiry
    metric and events report it instead)."""
    expired = CA.issue("old.example.com", days=-1)
    assert config(entry("a", cert=expired.cert, key=expired.key)).certificates[0].name == "a"


def test_cert_file_and_key_file_are_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "pem").mkdir()
    (tmp_path / "pem" / "c.pem").write_text(CERT)
    (tmp_path / "pem" / "c.key").write_text(KEY)
    (tmp_path / "gw.yaml").write_text(
        "certificates:\n  - {name: a, cert_file: pem/c.pem, key_file: pem/c.key, "
        "snis: [x.example.com]}\n"
    )
    assert load_config_file(tmp_path / "gw.yaml").certificates[0].cert == CERT.strip()
    (tmp_path / "bad.yaml").write_text(
        f"certificates:\n  - {{name: a, cert_file: missing.pem, key: {json.dumps(KEY)}}}\n"
    )
    with pytest.raises(ConfigError, match=r"certificates\[0\]\.cert_file.*cannot read"):
        load_config_file(tmp_path / "bad.yaml")
    text = '{"certificates": [{"name": "a", "cert_file": "c.pem", "key": "k"}]}'
    with pytest.raises(ConfigError, match="only a config read from a file"):
        load_config_text(text, source="<api>", format="json")
