import base64
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from portcullis.errors import UserError
from portcullis.identity.secrets import ServerSecret, load_server_secret


def test_file_is_created_once_and_reused(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "secret"
    a = load_server_secret(None, f)
    b = load_server_secret(None, f)
    assert a == b
    assert os.stat(f).st_mode & 0o777 == 0o600


def test_explicit_value_wins_and_is_base64(tmp_path: Path) -> None:
    raw = os.urandom(32)
    s = load_server_secret(base64.b64encode(raw).decode(), tmp_path / "unused")
    assert s == ServerSecret.from_secret(raw)
    assert not (tmp_path / "unused").exists()


def test_short_secret_is_refused_naming_the_setting() -> None:
    with pytest.raises(UserError, match="secret_key"):
        ServerSecret.from_secret(b"short")


def test_hash_depends_on_the_secret() -> None:
    a = ServerSecret.from_secret(b"a" * 32)
    b = ServerSecret.from_secret(b"b" * 32)
    assert a.hash_credential("k") != b.hash_credential("k")
    assert len(a.hash_credential("k")) == 64


def test_encryption_round_trips_and_binds_the_context() -> None:
    s = ServerSecret.from_secret(b"x" * 32)
    blob = s.encrypt(b"private", context=b"kid-1")
    assert b"private" not in blob
    assert s.decrypt(blob, context=b"kid-1") == b"private"
    with pytest.raises(InvalidTag):
        s.decrypt(blob, context=b"kid-2")


def test_hash_is_hmac_sha256_with_the_pepper_and_repeatable() -> None:
    import hmac
    from hashlib import sha256

    s = ServerSecret.from_secret(b"p" * 32)
    expected = hmac.new(s.key_pepper, b"pc_live_x", sha256).hexdigest()
    assert s.hash_credential("pc_live_x") == expected
    assert s.hash_credential("pc_live_x") == expected
