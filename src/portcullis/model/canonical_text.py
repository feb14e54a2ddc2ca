"""The canonical text of a config document, and how to get it without re-serialising it all.

A version's stored form is its canonical document as JSON with sorted keys and no
whitespace (`canonical_text`); its checksum is the sha256 of that text, so equal
configs have equal checksums and a rollback gets its old checksum back.

That text is a concatenation: `{"apis":[e1,e2,…],"boosts":[…],…}` where each `eN`
is the canonical text of one entity. `DocumentText` keeps those parts, so the text
of an edited document re-serialises only the entities that are not the very same
objects as in the document it was derived from (canonical documents share their
unchanged entries, see model/delta.py). Reuse is decided by identity, never by
`==`: `{"n": 1} == {"n": True}` in Python, but their texts differ. The result is
byte-for-byte `canonical_text(new)` (tests/unit/model/test_canonical_text.py), so the
checksum's definition, and every checksum already stored, are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from portcullis.model.bulk import gc_paused
from portcullis.model.delta import changed_slice

Document = dict[str, Any]

# One encoder for every call: `json.dumps` with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_encode = _ENCODER.encode


def canonical_text(document: Any) -> str:
    """The stored form of a canonical document: equal documents give equal strings."""
    return _encode(document)


def checksum_of(text: str) -> str:
    """A version's checksum: the sha256 (hex) of its canonical text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class DocumentText:
    """`document`'s canonical text, kept per member and, for lists, per entry.

    `document` is shared and must not be mutated (nor the lists in it), like every
    canonical document.
    """

    document: Document
    # Per list member: the canonical text of each entry, in order.
    entries: dict[str, list[str]]
    # Per member: its canonical text (a list's: "[" + ",".join(entries) + "]").
    members: dict[str, str]

    @classmethod
    def of(cls, document: Document) -> DocumentText:
        """Serialise `document` whole."""
        with gc_paused():
            return cls._of(document)

    @classmethod
    def _of(cls, document: Document) -> DocumentText:
        entries: dict[str, list[str]] = {}
        members: dict[str, str] = {}
        for key, value in document.items():
            if isinstance(value, list):
                parts = [_encode(e) for e in value]
                entries[key] = parts
                members[key] = "[" + ",".join(parts) + "]"
            else:
                members[key] = _encode(value)
        return cls(document, entries, members)

    def then(self, new: Document) -> DocumentText:
        """The text of `new`, re-serialising only the members and entries that are not the
        same objects as in `self.document` (any document works; a related one is cheap)."""
        if new is self.document:
            return self
        if new.keys() != self.document.keys():
            return DocumentText.of(new)
        entries = dict(self.entries)
        members = dict(self.members)
        for key, value in new.items():
            old = self.document[key]
            if value is old:
                continue
            parts = self.entries.get(key)
            if isinstance(value, list) and isinstance(old, list) and parts is not None:
                start, old_end, new_end = changed_slice(old, value)
                if start == len(old) == len(value):
                    continue
                fresh = [_encode(e) for e in value[start:new_end]]
                parts = [*parts[:start], *fresh, *parts[old_end:]]
                entries[key] = parts
                members[key] = "[" + ",".join(parts) + "]"
            elif isinstance(value, list):
                entries[key] = [_encode(e) for e in value]
                members[key] = "[" + ",".join(entries[key]) + "]"
            else:
                entries.pop(key, None)
                members[key] = _encode(value)
        return DocumentText(new, entries, members)

    @property
    def text(self) -> str:
        """`canonical_text(self.document)`, joined from the parts (not kept: it is big)."""
        return (
            "{"
            + ",".join(f"{_encode(key)}:{self.members[key]}" for key in sorted(self.members))
            + "}"
        )
