"""A version's OpenAPI description: parsing, bundling of external `$ref`s, validation.

An `ApiVersion.openapi` is **self-contained**: every `$ref` in it is internal (`#/...`),
so the data plane compiles validators and mocks from the snapshot alone and the
catalogue publishes it without fetching anything. Importing a description (a config
file's `openapi_file`, the admin API, a URL) therefore *bundles* it first:

- a reference to `#/components/<kind>/<name>` of another document is hoisted into
  this document's own `components/<kind>` (renamed `<name>_2`... on a clash) and the
  `$ref` is rewritten to point there, so recursive schemas stay recursive;
- any other external reference (`pet.yaml`, `common.yaml#/Pet`) is inlined (a cycle
  through such references is an error: move the target under `components`);
- internal references of the importing document are kept as they are.

Where the referenced documents come from is the caller's `load(uri)`: the config
loader reads files relative to the referring file; the control plane fetches http(s)
URLs through the webhook SSRF guard and never reads its own files for an API caller.

Validation (`description_errors`) is one rule for every way a description arrives:
the config's cross-entry check runs it, so `config apply`, the admin API's entity
CRUD and the import endpoint report the same errors, located by JSON pointer inside
the document. openapi-spec-validator is imported (~0.5 s) only when a config holds a
description, and results are cached by the document's digest: a config is validated
again on every edit and by every data-plane worker, the descriptions rarely change.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

import yaml

from portcullis.model.tenancy import location_key

Path = tuple[str | int, ...]
# Documents are read whole into memory: refuse anything bigger (config files and fetches).
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
# Errors reported per description (a broken document can have thousands).
MAX_ERRORS = 20
_COMPONENT_REF = re.compile(r"^/components/([A-Za-z]+)/([^/]+)$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VERSION = re.compile(r"^3\.(0|1)\.\d+(-.+)?$")
INLINE_BASE = "urn:portcullis:inline"


class DescriptionError(ValueError):
    """A description could not be imported; `path` locates the problem in the document
    that refers (JSON pointer parts), `message` says what is wrong."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{pointer(path)}: {message}")
        self.path = path
        self.message = message


def pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 fragment of `path` (`#/paths/~1items/get`)."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return "#/" + "/".join(parts) if path else "#"


def parse_document(raw: bytes | str, name: str) -> Any:
    """JSON or YAML text as data; `DescriptionError` when it is neither (or too big)."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_DOCUMENT_BYTES:
        raise DescriptionError((), f"{name} is {size} bytes, more than {MAX_DOCUMENT_BYTES}")
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise DescriptionError((), f"{name} is not UTF-8 text") from None
    try:
        # JSON is YAML 1.2; the YAML parser reads both (and duplicate keys are rare here).
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DescriptionError((), f"{name} is not JSON or YAML{where}") from None


def _resolve_pointer(document: Any, fragment: str, uri: str) -> Any:
    node = document
    if not fragment:
        return node
    if not fragment.startswith("/"):
        raise DescriptionError((), f"{uri}#{fragment}: only JSON pointer fragments are supported")
    for raw in fragment[1:].split("/"):
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise DescriptionError((), f"{uri}#{fragment} does not exist")
    return node


class _Bundler:
    def __init__(self, base: str, load: Callable[[str], Any]) -> None:
        self.base = base
        self._load = load
        self._documents: dict[str, Any] = {}
        self._hoisted: dict[tuple[str, str], str] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self._taken: dict[str, set[str]] = {}
        self._inlining: list[tuple[str, str]] = []

    def document(self, uri: str) -> Any:
        if uri not in self._documents:
            self._documents[uri] = self._load(uri)
        return self._documents[uri]

    def walk(self, node: Any, base: str, path: Path) -> Any:
        if isinstance(node, list):
            return [self.walk(v, base, (*path, i)) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return {k: self.walk(v, base, (*path, k)) for k, v in node.items()}
        siblings = {k: self.walk(v, base, (*path, k)) for k, v in node.items() if k != "$ref"}
        if base == self.base and ref.startswith("#"):
            return {"$ref": ref, **siblings}
        uri, fragment = urldefrag(urljoin(base, ref))
        fragment = unquote(fragment)
        if uri == self.base:
            return {"$ref": "#" + fragment, **siblings}
        try:
            target_document = self.document(uri)
        except DescriptionError as exc:
            raise DescriptionError((*path, "$ref"), exc.message) from None
        except OSError as exc:
            raise DescriptionError((*path, "$ref"), f"cannot read {ref!r}: {exc}") from None
        try:
            target = _resolve_pointer(target_document, fragment, uri)
        except DescriptionError as exc:
            raise DescriptionError((*path, "$ref"), exc.message) from None
        component = _COMPONENT_REF.match(fragment)
        key = (uri, fragment)
        if component is not None:
            if key not in self._hoisted:
                kind, name = component.group(1), component.group(2)
                name = self._free_name(kind, name.replace("~1", "/").replace("~0", "~"))
                self._hoisted[key] = pointer(("components", kind, name))
                self.components.setdefault(kind, {})[name] = None
                self.components[kind][name] = self.walk(target, uri, (*path, "$ref"))
            return {"$ref": self._hoisted[key], **siblings}
        if key in self._inlining:
            raise DescriptionError(
                (*path, "$ref"),
                f"{ref!r} refers to itself through other documents; move its target under "
                "components/ so it can be referenced internally",
            )
        self._inlining.append(key)
        inlined = self.walk(target, uri, (*path, "$ref"))
        self._inlining.pop()
        if isinstance(inlined, dict):
            return {**inlined, **siblings}
        return inlined

    def reserve(self, root: dict[str, Any]) -> None:
        for kind, entries in (root.get("components") or {}).items():
            if isinstance(entries, dict):
                self._taken[kind] = set(entries)

    def _free_name(self, kind: str, name: str) -> str:
        taken = self._taken.setdefault(kind, set())
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        return candidate


def bundle(document: Any, base: str, load: Callable[[str], Any]) -> Any:
    """`document` (found at `base`) with every external `$ref` resolved through
    `load(absolute_uri) -> parsed document` (see the module docstring)."""
    if not isinstance(document, dict):
        return document
    bundler = _Bundler(base, load)
    bundler.reserve(document)
    walked = bundler.walk(copy.deepcopy(document), base, ())
    if bundler.components:
        components = dict(walked.get("components") or {})
        for kind, entries in bundler.components.items():
            components[kind] = {**(components.get(kind) or {}), **entries}
        walked["components"] = components
    return walked


def file_loader(max_bytes: int = MAX_DOCUMENT_BYTES) -> Callable[[str], Any]:
    """`load` for `bundle` reading `file:` URIs (the config loader's references)."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    def load(uri: str) -> Any:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise DescriptionError(
                (),
                f"{uri}: a description read from a file may refer to other files only; "
                "import it from a URL (openapi_source, `portcullis apis import --url`) to "
                "resolve URL references",
            )
        with open(url2pathname(parts.path), "rb") as f:
            raw = f.read(max_bytes + 1)
        return parse_document(raw, uri)

    return load


def _external_refs(node: Any, path: Path) -> Iterator[Path]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield (*path, "$ref")
        for k, v in node.items():
            yield from _external_refs(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _external_refs(v, (*path, i))


_checked: OrderedDict[str, tuple[tuple[Path, str], ...]] = OrderedDict()
_CHECKED_MAX = 256


def digest(document: Any) -> str:
    """SHA-256 of the document's canonical JSON (key order and spacing ignored)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def description_errors(document: Any) -> list[tuple[Path, str]]:
    """What is wrong with `document` as a version's description, each with its location
    inside it (at most MAX_ERRORS); empty when it is a valid, self-contained OpenAPI
    3.0 or 3.1 document."""
    key = digest(document)
    found = _checked.get(key)
    if found is None:
        found = tuple(_errors(document))
        _checked[key] = found
        if len(_checked) > _CHECKED_MAX:
            _checked.popitem(last=False)
    else:
        _checked.move_to_end(key)
    return list(found)


def _errors(document: Any) -> list[tuple[Path, str]]:
    if not isinstance(document, dict):
        return [((), "an OpenAPI description is an object")]
    version = document.get("openapi")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        return [(("openapi",), "must be an OpenAPI version 3.0.x or 3.1.x")]
    external = [
        (p, "external $ref: import the description to resolve it (only #/ references stay)")
        for p in _external_refs(document, ())
    ]
    if external:
        return external[:MAX_ERRORS]
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    validator = OpenAPIV31SpecValidator if version.startswith("3.1") else OpenAPIV30SpecValidator
    errors: list[tuple[Path, str]] = []
    try:
        for error in validator(document).iter_errors():
            where = _path_in(document, getattr(error, "absolute_path", ()) or ())
            message = str(getattr(error, "message", error)).splitlines()[0][:500]
            errors.append((where, message))
            if len(errors) >= MAX_ERRORS:
                break
    except Exception as exc:  # an unresolvable internal $ref, a recursion the validator hits
        errors.append(((), f"invalid description: {str(exc).splitlines()[0][:500]}"))
    return errors


def _path_in(document: Any, parts: Iterable[Any]) -> Path:
    """The validator's path as keys of `document`: an object's keys are strings (the
    validator reports response codes as numbers), only list positions are ints."""
    out: list[str | int] = []
    node = document
    for part in parts:
        if isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            out.append(str(part))
            node = node.get(str(part)) if isinstance(node, dict) else None
    return tuple(out)


def format_path(path: Path) -> str:
    """`("paths", "/items", "get")` as a config location suffix (`.paths["/items"].get`)."""
    return "".join(f"[{p}]" if isinstance(p, int) else location_key(p) for p in path)


def api_description_errors(apis: Sequence[object]) -> list[str]:
    """Every version description's errors, located in the config (`apis[0].versions[1]
    .openapi.paths["/items"]...: message`), for `GatewayConfig`'s cross-entry check."""
    out: list[str] = []
    for i, api in enumerate(apis):
        for k, version in enumerate(getattr(api, "versions", None) or ()):
            document = getattr(version, "openapi", None)
            if document is None:
                continue
            where = f"apis[{i}].versions[{k}].openapi"
            out.extend(f"{where}{format_path(p)}: {m}" for p, m in description_errors(document))
    return out
