"""Load a `GatewayConfig` from YAML or JSON and report every problem with a precise path.

A config file is written by a person, so a failed load must say *all* that is wrong
at once, each problem with where it is: a location such as `routes[3].paths[0]`
(built from pydantic's `loc`), a message, and the file's line and column when the
source is YAML or JSON text. Cross-reference errors found by
`GatewayConfig._references` arrive as one pydantic error carrying a list of
already-located messages; they are split so each becomes its own issue.

Pydantic stops before the cross-reference check when any field is invalid. So that
a user still sees, say, an unknown service next to a mistyped field, the check is
run a second time over the entities that did validate (invalid ones stand in as
placeholders that keep their names, and issues at their positions are dropped:
their own errors have been reported already).

The inverse, `dump_config`, writes a deterministic YAML or JSON document so that
export → apply → export is byte-identical.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from portcullis.model.apis import Api
from portcullis.model.bulk import gc_paused
from portcullis.model.certificates import MAX_PEM, Certificate
from portcullis.model.config import (
    Consumer,
    GatewayConfig,
    PluginInstance,
    ReferenceErrors,
    Route,
    Service,
    Upstream,
)
from portcullis.model.openapi import DescriptionError, bundle, file_loader
from portcullis.model.traffic import Boost, Override, Plan

try:  # libyaml is several times faster; the pure-Python loader behaves the same.
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

Loc = tuple[str | int, ...]
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]+$")
_LOCATION_TOKEN = re.compile(r'\.([^.\[\]]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_VALUE_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")
# Top-level entity lists and the model of one entry, used by the second reference pass.
ENTITY_LISTS: dict[str, type[BaseModel]] = {
    "services": Service,
    "upstreams": Upstream,
    "routes": Route,
    "consumers": Consumer,
    "plugins": PluginInstance,
    "plans": Plan,
    "boosts": Boost,
    "overrides": Override,
    "apis": Api,
    "certificates": Certificate,
}


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config document.

    `location` is human-readable (`routes[3].paths[0]`, empty for the document
    itself); `loc` holds the same path as a tuple; `line` and `column` are 1-based
    and known when the config came from text.
    """

    location: str
    message: str
    line: int | None = None
    column: int | None = None
    loc: Loc = ()

    @property
    def pointer(self) -> str:
        """The location as an RFC 6901 JSON pointer fragment (`#/routes/3/paths/0`)."""
        parts = (str(p).replace("~", "~0").replace("/", "~1") for p in self.loc)
        return "#/" + "/".join(parts) if self.loc else "#"

    def __str__(self) -> str:
        where = self.location or "(document)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config document is invalid; `errors` lists every problem found, in document order."""

    def __init__(self, errors: list[ConfigIssue], *, source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        head = f"{source}: " if source else ""
        count = len(errors)
        super().__init__(
            f"{head}{count} config error{'s' if count != 1 else ''}\n"
            + "\n".join(f"  {e}" for e in errors)
        )


def format_location(loc: Sequence[str | int]) -> str:
    """`("routes", 3, "paths", 0)` → `routes[3].paths[0]`; odd keys are quoted: `["a.b"]`."""
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def parse_location(location: str) -> Loc:
    """Inverse of `format_location`, tolerant of anything it cannot parse (stops there)."""
    loc: list[str | int] = []
    text = "." + location if location and location[0] not in ".[" else location
    pos = 0
    for match in _LOCATION_TOKEN.finditer(text):
        if match.start() != pos:
            break
        key, index, quoted = match.groups()
        if index is not None:
            loc.append(int(index))
        elif quoted is not None:
            loc.append(json.loads(quoted))
        else:
            loc.append(key)
        pos = match.end()
    return tuple(loc)


# --------------------------------------------------------------------------- loading

_EMPTY = ConfigIssue("", "the document is empty; write '{}' for an empty configuration")


def load_config_file(path: str | PathLike[str]) -> GatewayConfig:
    """Load a config file: JSON when the name ends in `.json`, YAML otherwise.

    Raises `OSError` when the file cannot be read and `ConfigError` when it is not a
    valid config (including undecodable text).
    """
    p = Path(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        issue = ConfigIssue("", f"the file is not UTF-8 text (byte {exc.start})")
        raise ConfigError([issue], source=str(p)) from None
    fmt: Literal["json", "yaml"] = "json" if p.suffix.lower() == ".json" else "yaml"
    return load_config_text(text, source=str(p), format=fmt, base_dir=p.resolve().parent)


def load_config_text(
    text: str,
    *,
    source: str,
    format: Literal["yaml", "json"] = "yaml",
    base_dir: Path | None = None,
) -> GatewayConfig:
    """Parse and validate a config document; `source` names it in errors (a path, `<stdin>`).

    YAML is the default; JSON documents are accepted by the YAML parser too, but
    `format="json"` parses strictly as JSON. `base_dir`: where the document's
    `openapi_file` options are relative to (see `_read_openapi_files`); without it they
    are refused.
    """
    with gc_paused():
        return _load_text(text, source=source, format=format, base_dir=base_dir)


def _load_text(
    text: str, *, source: str, format: Literal["yaml", "json"], base_dir: Path | None
) -> GatewayConfig:
    if format == "json":
        deep = _too_deep(text)
        if deep is not None:
            raise ConfigError([deep], source=source)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            issue = ConfigIssue("", f"invalid JSON: {exc.msg}", exc.lineno, exc.colno)
            raise ConfigError([issue], source=source) from None
        issues: list[ConfigIssue] = []
        if data is None:
            issues.append(_EMPTY)
            raise ConfigError(issues, source=source)
        issues.extend(_read_openapi_files(data, base_dir))
        issues.extend(_read_certificate_files(data, base_dir))
        if issues:
            raise ConfigError(issues, source=source)
        try:
            return _validate(data, None, source)
        except ConfigError as exc:
            # Line numbers come from a YAML node tree of the text: composing one costs
            # far more than parsing the JSON, so only a document with errors pays for it.
            node = _compose_quietly(text)
            positioned = [_with_position(i, node) for i in exc.errors]
            raise ConfigError(_in_document_order(positioned), source=source) from None
    data, node, issues = _parse_yaml(text, source)
    if data is None:
        issues.append(_EMPTY)
    else:
        issues.extend(_with_position(i, node) for i in _read_openapi_files(data, base_dir))
        issues.extend(_with_position(i, node) for i in _read_certificate_files(data, base_dir))
    if issues:
        raise ConfigError(issues, source=source)
    return _validate(data, node, source)


def load_config_data(data: Any, *, source: str = "<data>") -> GatewayConfig:
    """Validate already-parsed data (e.g. an admin API body) with the same error reporting."""
    with gc_paused():
        return _validate(data, None, source)


def _read_openapi_files(data: Any, base_dir: Path | None) -> list[ConfigIssue]:
    """Replace each API version's `openapi_file` (a path relative to the config file)
    with the description it names, its external `$ref`s bundled (model/openapi.py), in
    place. Only a config read from a file has this option: the admin API never reads
    the control plane's files for a caller (its body carries the document itself)."""
    issues: list[ConfigIssue] = []
    apis = data.get("apis") if isinstance(data, dict) else None
    for i, api in enumerate(apis if isinstance(apis, list) else ()):
        versions = api.get("versions") if isinstance(api, dict) else None
        for k, version in enumerate(versions if isinstance(versions, list) else ()):
            if not isinstance(version, dict) or "openapi_file" not in version:
                continue
            loc: Loc = ("apis", i, "versions", k, "openapi_file")
            name = version.pop("openapi_file")
            problem = None
            if not isinstance(name, str) or not name:
                problem = "must be a file path (relative to the config file)"
            elif base_dir is None:
                problem = "only a config read from a file may name one; send `openapi` inline"
            elif "openapi" in version:
                problem = "set openapi or openapi_file, not both"
            else:
                try:
                    version["openapi"] = read_description_file(base_dir / name)
                except DescriptionError as exc:
                    problem = str(exc) if exc.path else exc.message
                except OSError as exc:
                    problem = f"cannot read {name!r}: {exc.strerror or exc}"
            if problem is not None:
                issues.append(ConfigIssue(format_location(loc), problem, loc=loc))
    return issues


def _read_certificate_files(data: Any, base_dir: Path | None) -> list[ConfigIssue]:
    """Replace each certificate's `cert_file` / `key_file` (PEM files, relative to the
    config file) with their text, in place; like `openapi_file`, only a config read
    from a file has them."""
    issues: list[ConfigIssue] = []
    certificates = data.get("certificates") if isinstance(data, dict) else None
    for i, cert in enumerate(certificates if isinstance(certificates, list) else ()):
        for field in ("cert", "key"):
            option = f"{field}_file"
            if not isinstance(cert, dict) or option not in cert:
                continue
            loc: Loc = ("certificates", i, option)
            name = cert.pop(option)
            problem = None
            if not isinstance(name, str) or not name:
                problem = "must be a file path (relative to the config file)"
            elif base_dir is None:
                problem = f"only a config read from a file may name one; send `{field}` inline"
            elif field in cert:
                problem = f"set {field} or {option}, not both"
            else:
                try:
                    path = base_dir / name
                    if path.stat().st_size > MAX_PEM:
                        problem = f"{name!r} is larger than {MAX_PEM} bytes"
                    else:
                        cert[field] = path.read_text(encoding="ascii")
                except (OSError, UnicodeDecodeError) as exc:
                    problem = f"cannot read {name!r}: {getattr(exc, 'strerror', None) or exc}"
            if problem is not None:
                issues.append(ConfigIssue(format_location(loc), problem, loc=loc))
    return issues


def read_description_file(path: Path) -> Any:
    """An OpenAPI description file with its external `$ref`s (other files, relative to
    it) bundled; `DescriptionError` locates a bad reference, `OSError` when unreadable."""
    load = file_loader()
    uri = path.resolve().as_uri()
    return bundle(load(uri), uri, load)


# libyaml recurses on the C stack once per nested flow collection and crashes the process
# (a segfault, not an exception) somewhere past 20,000 levels; no config nests near this.
MAX_FLOW_DEPTH = 1000
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> ConfigIssue | None:
    """A document whose `[`/`{` nesting exceeds MAX_FLOW_DEPTH, refused before any
    parser sees it (brackets inside strings count too: the bound is far above any
    real config, so that over-count never matters)."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return None  # can't nest deeper than it opens
    depth = deepest = 0
    for char in _NOT_BRACKETS.sub("", text):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_FLOW_DEPTH:
                    return ConfigIssue(
                        "", f"the document nests more than {MAX_FLOW_DEPTH} levels deep"
                    )
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None, list[ConfigIssue]]:
    deep = _too_deep(text)
    if deep is not None:
        raise ConfigError([deep], source=source)
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        plain = _construct_plain(loader, node) if node is not None else None
        if plain is None:
            issues = list(_duplicate_keys(node)) if node is not None else []
            data = loader.construct_document(node) if node is not None else None
        else:
            data, duplicates = plain
            issues = list(_duplicate_keys(node)) if duplicates and node is not None else []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ConfigError(
            [ConfigIssue("", f"invalid YAML: {problem}", line, column)], source=source
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}")], source=source) from None
    finally:
        loader.dispose()
    return data, node, issues


_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
# Scalar tags whose safe constructors return the value directly (not generators).
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)


class _NotPlain(Exception):
    """The node tree uses something `_construct_plain` leaves to PyYAML's constructor."""


def _construct_plain(loader: Any, root: yaml.Node) -> tuple[Any, bool] | None:
    """The data of a node tree of plain mappings, sequences and core scalars, and whether
    a mapping repeats a key; None when the tree has anything else (merge keys, other
    tags, collections as keys), for PyYAML's constructor to build as usual.

    The same values as `construct_document`, in a fraction of the time: PyYAML's
    constructor is pure Python even over libyaml and spends most of it on bookkeeping
    (recursion state, generators for every collection). As there, an alias gives the
    very object its anchor made, and a repeated key keeps its last value (the caller
    reports it: `_duplicate_keys`).
    """
    built: dict[int, Any] = {}
    constructors = loader.yaml_constructors
    duplicates = False

    def build(node: yaml.Node) -> Any:
        nonlocal duplicates
        found = built.get(id(node), built)
        if found is not built:
            return found
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                value: Any = node.value
            elif tag in _SCALAR_TAGS:
                value = constructors[tag](loader, node)
            else:
                raise _NotPlain
            built[id(node)] = value
            return value
        if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
            items: list[Any] = []
            built[id(node)] = items
            items.extend(build(item) for item in node.value)
            return items
        if isinstance(node, yaml.MappingNode) and tag == _MAP:
            out: dict[Any, Any] = {}
            built[id(node)] = out
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                    raise _NotPlain  # merge keys, collections as keys
                out[build(key_node)] = build(value_node)
            if len(out) < len(node.value):
                duplicates = True
            return out
        raise _NotPlain

    try:
        return build(root), duplicates
    except (_NotPlain, RecursionError):
        return None


def _compose_quietly(text: str) -> yaml.Node | None:
    """Node tree of a JSON text for line numbers; JSON that YAML 1.1 rejects gets none."""
    loader = _YamlLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _duplicate_keys(root: yaml.Node) -> Iterator[ConfigIssue]:
    """YAML silently keeps the last of two equal keys; a config file should not."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:  # aliases may share (or even cycle through) nodes
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in keys:
                    first = keys[key].start_mark.line + 1
                    yield ConfigIssue(
                        format_location((*loc, key)),
                        f"duplicate key {key!r} (first defined on line {first})",
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                        (*loc, key),
                    )
                elif key is not None:
                    keys[key] = key_node
                stack.append((value_node, (*loc, key) if key is not None else loc))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))


# --------------------------------------------------------------------------- validation


def _validate(data: Any, node: yaml.Node | None, source: str) -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    issues: list[ConfigIssue] = []
    references_checked = False
    for err in errors:
        refs = _reference_errors(err)
        if refs is not None:
            references_checked = True
            issues.extend(_reference_issue(r) for r in refs)
        else:
            issues.append(ConfigIssue(format_location(err["loc"]), _message(err), loc=err["loc"]))
    if not references_checked and isinstance(data, dict):
        issues.extend(_references_of_valid_entities(data, errors))
    issues = _dedupe([_with_position(i, node) for i in issues])
    raise ConfigError(_in_document_order(issues), source=source)


def _in_document_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))


def _reference_errors(err: ErrorDetails) -> ReferenceErrors | None:
    """The located cross-reference messages carried by `GatewayConfig._references`, if any."""
    if err["loc"] or err["type"] != "value_error":
        return None
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, ValueError) and cause.args and isinstance(cause.args[0], ReferenceErrors):
        return cause.args[0]
    return None


def _reference_issue(text: str) -> ConfigIssue:
    location, sep, message = text.partition(": ")
    if not sep:
        return ConfigIssue("", text)
    return ConfigIssue(location, message, loc=parse_location(location))


def _message(err: ErrorDetails) -> str:
    msg = err["msg"]
    for prefix in _VALUE_ERROR_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if err["type"] == "extra_forbidden" and err["loc"]:
        return _unknown_field_message(err["loc"])
    return msg


def _unknown_field_message(loc: Loc) -> str:
    field = str(loc[-1])
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown field {field!r}"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown field {field!r} ({hint})"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the value at `loc`, walking field annotations."""
    current: Any = GatewayConfig
    for part in loc:
        current = _unwrap_optional(current)
        if isinstance(part, int):
            if get_origin(current) is not list:
                return None
            current = get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part)
            if info is None:
                return None
            current = info.annotation
        else:
            return None
    current = _unwrap_optional(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _references_of_valid_entities(
    data: dict[Any, Any], errors: list[ErrorDetails]
) -> list[ConfigIssue]:
    """Run the cross-reference check although some entries failed field validation.

    Entries that validated take part as they are. An invalid entry becomes a
    placeholder that keeps those of its names and references that are strings (so a
    reference to it does not read as unknown, and its own dangling references are
    still found); where a value is unusable it stands in as `_Unusable`, and issues
    about such values, or at a location pydantic already reported, are dropped.
    """
    failed_locs = {err["loc"] for err in errors}
    invalid: set[Loc] = set()
    for loc in failed_locs:
        if len(loc) >= 2 and loc[0] in ENTITY_LISTS and isinstance(loc[1], int):
            invalid.add(loc[:2])
        elif loc and loc[0] in ENTITY_LISTS:
            invalid.add(loc[:1])  # the list itself is malformed: skip the whole kind
    lists: dict[str, list[Any]] = {}
    placeholders: dict[Loc, BaseModel] = {}
    for kind, model in ENTITY_LISTS.items():
        raw = data.get(kind, [])
        entries: list[Any] = []
        if (kind,) not in invalid and isinstance(raw, list):
            for i, item in enumerate(raw):
                if (kind, i) in invalid:
                    placeholders[(kind, i)] = _placeholder(model, item)
                    entries.append(placeholders[(kind, i)])
                else:
                    entries.append(model.model_validate(item))
        lists[kind] = entries
    probe = GatewayConfig.model_construct(
        services=lists["services"],
        upstreams=lists["upstreams"],
        routes=lists["routes"],
        consumers=lists["consumers"],
        plugins=lists["plugins"],
        plans=lists["plans"],
        boosts=lists["boosts"],
        overrides=lists["overrides"],
        apis=lists["apis"],
        certificates=lists["certificates"],
    )
    try:
        # The pydantic mypy plugin types a model validator as its decorator proxy;
        # at run time it is the plain method.
        probe._references()  # type: ignore[operator]
    except ValueError as exc:
        refs = exc.args[0] if exc.args and isinstance(exc.args[0], ReferenceErrors) else []
        issues = [_reference_issue(r) for r in refs]
        return [i for i in issues if _is_real(i, placeholders, failed_locs)]
    return []


def _is_real(issue: ConfigIssue, placeholders: dict[Loc, BaseModel], failed: set[Loc]) -> bool:
    if issue.loc in failed:
        return False
    placeholder = placeholders.get(issue.loc[:2])
    if placeholder is None or len(issue.loc) < 3:
        return True
    return not isinstance(getattr(placeholder, str(issue.loc[2]), None), _Unusable)


class _Unusable:
    """Stands in for a name or reference of an invalid entry that is missing or not usable."""

    def __repr__(self) -> str:
        return "<unusable>"


def _placeholder(model: type[BaseModel], item: Any) -> BaseModel:
    raw = item if isinstance(item, dict) else {}

    def text(key: str) -> Any:
        value = raw.get(key)
        return value if isinstance(value, str) else _Unusable()

    def optional_text(key: str) -> Any:
        return None if raw.get(key) is None else text(key)

    values: dict[str, Any]
    if model is Consumer:
        values = {"username": text("username")}
    elif model is Route:
        values = {"name": text("name"), "service": text("service")}
    elif model is Service:
        values = {"name": text("name"), "upstream": optional_text("upstream")}
    elif model is PluginInstance:
        config = raw.get("config", {})
        values = {
            # A plugin whose config is not a mapping cannot be checked against its schema.
            "name": text("name") if isinstance(config, dict) else _Unusable(),
            "service": optional_text("service"),
            "route": optional_text("route"),
            "config": config if isinstance(config, dict) else {},
        }
    else:
        values = {"name": text("name")}
    return model.model_construct(**values)


def _with_position(issue: ConfigIssue, root: yaml.Node | None) -> ConfigIssue:
    if root is None or issue.line is not None:
        return issue
    mark = _mark_for(root, issue.loc)
    if mark is None:
        return issue
    return ConfigIssue(issue.location, issue.message, mark.line + 1, mark.column + 1, issue.loc)


def _mark_for(root: yaml.Node, loc: Loc) -> yaml.Mark | None:
    """Start of the deepest node along `loc`; for a mapping key, the key itself."""
    node = root
    mark: yaml.Mark | None = root.start_mark
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            mark = node.start_mark
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in reversed(node.value):  # the last duplicate wins
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    node, mark = value_node, key_node.start_mark
                    break
            else:
                break
        else:
            break
    return mark


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.location, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


# --------------------------------------------------------------------------- dumping


def config_document(config: GatewayConfig, *, include_defaults: bool = False) -> dict[str, Any]:
    """The JSON-compatible document for export: defaults left out unless asked for.

    `format_version` is always written so a file says which schema it follows.
    """
    if include_defaults:
        return config.canonical()
    body = config.model_dump(mode="json", exclude_defaults=True)
    body.pop("format_version", None)
    return {"format_version": config.format_version, **body}


class _ExportDumper(yaml.SafeDumper):
    """Block-style YAML with list items indented under their key, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dump_config(
    config: GatewayConfig,
    *,
    format: Literal["yaml", "json"] = "yaml",
    include_defaults: bool = False,
) -> str:
    """A deterministic text form of `config`: the same config always gives the same bytes."""
    doc = config_document(config, include_defaults=include_defaults)
    if format == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(
        doc,
        Dumper=_ExportDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
