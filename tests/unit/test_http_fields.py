"""http_fields: header names and values as config validation and the transports see them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from portcullis.http_fields import (
    HeaderText,
    check_field_value,
    check_header_name,
    field_value_bytes,
    is_field_value,
    is_token,
    token_bytes,
)


@pytest.mark.parametrize("name", ["x-api-key", "X_Custom.1", "!#$%&'*+.^_`|~"])
def test_tokens(name: str) -> None:
    assert is_token(name)
    assert token_bytes(name.encode())
    assert check_header_name(name) == name


@pytest.mark.parametrize("name", ["", "x a", "x:", "x\n", "x-a\r\n", "é", "(x)", "a/b"])
def test_not_tokens(name: str) -> None:
    assert not is_token(name)
    assert not token_bytes(name.encode())
    with pytest.raises(ValueError, match="invalid header name"):
        check_header_name(name)


@pytest.mark.parametrize("value", ["", "v", "a b\tc", "caf\xe9", '"quoted" (x)'])
def test_field_values(value: str) -> None:
    assert is_field_value(value)
    assert field_value_bytes(value.encode("latin-1"))
    assert check_field_value(value) == value


# A trailing "\n" is what a `$`-anchored pattern let through.
@pytest.mark.parametrize("value", ["v\n", "a\r\nb: c", "\x00", "a\rb", "\x7f", "\u0100"])
def test_not_field_values(value: str) -> None:
    assert not is_field_value(value)
    with pytest.raises(ValueError, match="control characters"):
        check_field_value(value)


class _Model(BaseModel):
    text: HeaderText


@pytest.mark.parametrize("text", ["crm-42", "Ünïcode ok", "with space"])
def test_header_text_accepts_printable_unicode(text: str) -> None:
    assert _Model(text=text).text == text


@pytest.mark.parametrize("text", ["a\r\nx-b: 1", "a\n", "\x00", "a\x85b", "\x1b[31m"])
def test_header_text_refuses_control_characters(text: str) -> None:
    with pytest.raises(ValidationError, match="control character"):
        _Model(text=text)
