"""How a captured body is shown: UTF-8 text (a character cut at 1 KiB dropped), else
base64; the size seen and whether it was truncated."""

from __future__ import annotations

import base64

from portcullis.services.inspector import CapturedBody, _body


def test_text_cut_inside_a_character_drops_the_partial_character() -> None:
    kept = ("a" + "é" * 512).encode()[:1024]  # ends with the first byte of an "é"
    shown = _body(kept, 1025)
    assert shown == CapturedBody(encoding="utf-8", data="a" + "é" * 511, size=1025, truncated=True)


def test_binary_is_base64_and_a_whole_small_body_is_not_truncated() -> None:
    data = bytes([0xFF, 0x00, 0x80])
    shown = _body(data, 3)
    assert shown == CapturedBody(
        encoding="base64", data=base64.b64encode(data).decode(), size=3, truncated=False
    )
    assert _body(b"", 0) == CapturedBody(encoding="utf-8", data="", size=0, truncated=False)
    assert _body(None, None) is None
