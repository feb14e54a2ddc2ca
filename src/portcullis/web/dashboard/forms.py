"""HTML forms generated from JSON Schemas, and the reverse: a submitted form as JSON.

The dashboard edits every gateway entity (and each plugin's config) with forms made
from the same JSON Schemas the admin API publishes (`schema_of(kind.model)`, the
plugin schemas of `model/plugins/registry.py`), so a new plugin or a new field gets a
form without any page code. The form only *shapes* input: it turns text into the
JSON types the schema names and leaves everything else (ranges, patterns,
cross-references) to the service the REST API calls, whose problem errors (JSON
pointers) are mapped back onto the fields they name (`attach_errors`), so the page
shows the API's own messages (decision 036).

A field's form name is its JSON pointer without the leading `#/` (`config/limits/0/
period`), so an error's pointer names its input directly. How each schema shape
becomes a widget:

- string (also with a `format`): a text input; empty is left out;
- integer, number: a number input; text that is no number goes as it is;
- a union of scalars (`anyOf` number/string): a text input, as the first type it parses as;
- boolean: a checkbox (a hidden `false` before it, so unticked is sent);
- enum: a select of the options' JSON values;
- secret (`writeOnly`, `format: password`): a password input, never filled in; blank
  keeps the stored value;
- array of scalars (or scalar-or-array): a textarea, one item a line;
- map of scalars (`additionalProperties`): a textarea of `name = value` lines (secret
  values are not shown; `name =` keeps the stored one);
- object with properties: a fieldset (nullable: a "set" checkbox says whether it is given);
- array of objects: one fieldset per item with a remove box, and a blank one to add;
- anything else (`{}`, free objects, other unions): a textarea of JSON; text that is not
  JSON goes as it is.

Constraints are shown as hints, not enforced in the browser (forms carry
`novalidate`): the service's answer is the one truth.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Final

from pydantic import BaseModel

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.model.secrets import SCHEMA_OF, schema_of
from portcullis.model.tenancy import NAMES_KEYWORD
from portcullis.services.entity_kinds import KIND_BY_COLLECTION

JsonPath = tuple[str | int, ...]
# Submitted form data: every value of each name, in order (Starlette's FormData.multi_items).
FormData = Mapping[str, Sequence[str]]


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Final = _Absent()

# Names of the form's control inputs (they can't collide with a data field: a pointer
# token never holds a bare `:`-prefixed word of these, and data names have no prefix).
SET_PREFIX = "set:"  # checkbox: a nullable object is given
REMOVE_PREFIX = "remove:"  # checkbox: drop this list item
BLANK_PREFIX = "blank:"  # hidden: this list item is the blank one for adding

TEXT_WIDGETS = frozenset({"text", "number", "scalar", "password", "lines", "pairs", "json"})
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True, slots=True)
class Node:
    """One schema position compiled into a widget (independent of any value).

    `types`: the JSON types a scalar (or a list's items, a map's values) may take;
    `options`: an enum's values; `children`: an object's properties; `item`: the
    shape of an array-of-objects' items.
    """

    key: str | int | None
    widget: str
    label: str
    help: str = ""
    required: bool = False
    nullable: bool = False
    secret: bool = False
    default: Any = ABSENT
    types: tuple[str, ...] = ()
    options: tuple[Any, ...] = ()
    children: tuple[Node, ...] = ()
    item: Node | None = None
    scalar_or_list: bool = False
    hint: str = ""
    multiline: bool = False
    # The entity collection whose names the value is (`x-names`: consumers, plans...).
    names: str | None = None


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str
    selected: bool


@dataclass(slots=True)
class FormField:
    """One input (or fieldset) of a rendered form, with its current value and errors."""

    path: JsonPath
    widget: str
    label: str
    help: str = ""
    hint: str = ""
    required: bool = False
    value: str = ""
    checked: bool = False
    options: tuple[Option, ...] = ()
    children: list[FormField] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stored_secret: bool = False
    readonly: bool = False
    # items: this group is the blank one for adding an item
    blank: bool = False
    # group of a nullable object: whether it is given now
    nullable: bool = False
    # text or secret shown as a textarea (PEM, long text)
    multiline: bool = False
    # the entity collection the value names, and names to suggest (a datalist)
    names: str | None = None
    suggestions: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return field_name(self.path)

    @property
    def pointer(self) -> str:
        return pointer_of(self.path)

    @property
    def id(self) -> str:
        """An HTML id for the input (the name, made safe)."""
        return "f-" + (re.sub(r"[^A-Za-z0-9_-]", "_", self.name) or "root")

    def walk(self) -> Iterable[FormField]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(slots=True)
class Form:
    """A whole form: its fields and the errors that name no field of it."""

    fields: list[FormField]
    errors: list[str] = field(default_factory=list)

    def walk(self) -> Iterable[FormField]:
        for f in self.fields:
            yield from f.walk()

    def collections(self) -> set[str]:
        """The entity collections whose names fields of this form hold."""
        return {f.names for f in self.walk() if f.names is not None}

    def suggest(self, names: Mapping[str, Sequence[str]]) -> None:
        """Offer `names` (by collection) on the fields that name such entities."""
        for f in self.walk():
            if f.names is not None and f.names in names:
                f.suggestions = tuple(names[f.names])

    def named(self, name: str) -> FormField:
        """The field (or fieldset) whose form name is `name`."""
        for f in self.walk():
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(f.errors for f in self.walk())


def _token(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def field_name(path: JsonPath) -> str:
    """The form name of a JSON path: its RFC 6901 pointer without `#/`."""
    return "/".join(_token(p) for p in path)


def pointer_of(path: JsonPath) -> str:
    return "#/" + field_name(path) if path else "#"


def path_of_pointer(pointer: str) -> tuple[str, ...]:
    """A problem's JSON pointer (`#/config/limits/0`) as tokens."""
    text = pointer.removeprefix("#")
    if not text.startswith("/"):
        return ()
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/"))


# --- compiling a schema ---------------------------------------------------------------


def _resolve(schema: Any, defs: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with `$ref`s followed (keywords beside a `$ref` still apply)."""
    if not isinstance(schema, dict):
        return {}
    for _ in range(32):
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            break
        target = defs.get(ref.rsplit("/", 1)[-1], {})
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    resolved: dict[str, Any] = schema
    return resolved


def _names(outer: Mapping[str, Any], resolved: Mapping[str, Any]) -> str | None:
    names = outer.get(NAMES_KEYWORD, resolved.get(NAMES_KEYWORD))
    return names if isinstance(names, str) else None


def _is_secret(schema: Mapping[str, Any]) -> bool:
    return schema.get("writeOnly") is True or schema.get("format") == "password"


def _humanize(key: str | int | None) -> str:
    if key is None:
        return ""
    text = str(key).replace("_", " ").replace("-", " ")
    return text[:1].upper() + text[1:]


def _scalar_type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if kind in ("string", "integer", "number", "boolean") and "enum" not in schema:
        return str(kind)
    return None


def _constraints(schema: Mapping[str, Any]) -> str:
    parts = []
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None or high is not None:
        lo = "" if low is None else (">" if "exclusiveMinimum" in schema else "≥") + f" {low}"
        hi = "" if high is None else (("<" if "exclusiveMaximum" in schema else "≤") + f" {high}")
        parts.append(", ".join(p for p in (lo, hi) if p))
    if "format" in schema and schema["format"] != "password":
        parts.append(f"format {schema['format']}")
    if "minItems" in schema:
        parts.append(f"at least {schema['minItems']} item(s)")
    if "maxItems" in schema:
        parts.append(f"at most {schema['maxItems']} item(s)")
    return "; ".join(parts)


def compile_schema(
    schema: Mapping[str, Any],
    defs: Mapping[str, Any] | None = None,
    *,
    key: str | int | None = None,
    required: bool = False,
    schema_of_plugin: Mapping[str, Any] | None = None,
) -> Node:
    """The widget tree of a JSON Schema (`defs`: where its `$ref`s point; by default its own).

    `schema_of_plugin`: the schema of a property marked `x-schema-of: plugin` (a plugin
    instance's `config`), with its own `$defs`.
    """
    defs = schema.get("$defs", {}) if defs is None else defs
    outer = dict(schema)
    if schema_of_plugin is not None and outer.get(SCHEMA_OF) == "plugin":
        inner = dict(schema_of_plugin)
        node = compile_schema(inner, inner.get("$defs", {}), key=key, required=required)
        return replace(node, label=str(outer.get("title") or node.label))
    resolved = _resolve(outer, defs)
    label = str(outer.get("title") or resolved.get("title") or _humanize(key))
    if isinstance(key, str) and resolved.get("title") and "title" not in outer:
        # A $ref'd model's title (`HeaderOps`) names the type, not the field.
        label = _humanize(key)
    help_text = str(outer.get("description") or resolved.get("description") or "")
    default = outer.get("default", resolved.get("default", ABSENT))
    nullable = False
    branches = [_resolve(b, defs) for b in resolved.get("anyOf", [])]
    if branches:
        kept = [b for b in branches if b.get("type") != "null"]
        nullable = len(kept) < len(branches)
        if len(kept) == 1:
            keep = {k: v for k, v in resolved.items() if k != "anyOf"}
            resolved = {**kept[0], **keep}
            branches = []
        else:
            branches = kept
    base = Node(
        key,
        "json",
        label,
        help=help_text,
        required=required,
        nullable=nullable,
        secret=_is_secret(resolved) or any(_is_secret(b) for b in branches),
        default=default,
        hint=_constraints(resolved),
        names=_names(outer, resolved),
    )
    if branches:
        return _union(base, branches, defs)
    if "enum" in resolved:
        return replace(base, widget="select", options=tuple(resolved["enum"]))
    if "const" in resolved:
        return replace(base, widget="select", options=(resolved["const"],))
    scalar = _scalar_type(resolved)
    if scalar is not None:
        if scalar == "string" and _long_text(resolved, help_text):
            base = replace(base, multiline=True)
        if base.secret and scalar == "string":
            return replace(base, widget="password", types=("string",))
        widget = {"boolean": "checkbox", "integer": "number", "number": "number"}.get(
            scalar, "text"
        )
        return replace(base, widget=widget, types=(scalar,))
    kind = resolved.get("type")
    if kind == "array":
        items = _resolve(resolved.get("items", {}), defs)
        item_types = _scalar_types(items, defs)
        if item_types is not None:
            return _of_scalars(base, "lines", item_types, items)
        if items.get("type") == "object" and "properties" in items:
            item = compile_schema(items, defs, key=None, required=True)
            return replace(base, widget="items", item=replace(item, label=base.label))
        return base
    if kind == "object" or "properties" in resolved:
        properties = resolved.get("properties")
        if properties:
            required_names = set(resolved.get("required", ()))
            children = tuple(
                compile_schema(
                    sub,
                    defs,
                    key=name,
                    required=name in required_names,
                    schema_of_plugin=schema_of_plugin,
                )
                for name, sub in properties.items()
            )
            return replace(base, widget="group", children=children)
        values = resolved.get("additionalProperties")
        if not isinstance(values, dict):
            patterns = list(resolved.get("patternProperties", {}).values())
            values = patterns[0] if len(patterns) == 1 else None
        if isinstance(values, dict):
            value_schema = _resolve(values, defs)
            value_types = _scalar_types(value_schema, defs)
            if value_types is not None:
                return _of_scalars(base, "pairs", value_types, value_schema)
            if value_schema == {} or (_is_secret(value_schema) and len(value_schema) == 1):
                # Any JSON value per name (a JSON body edit): `name = <JSON or text>`.
                return replace(
                    base, widget="pairs", types=("json",), secret=_is_secret(value_schema)
                )
    return base


def _of_scalars(
    base: Node,
    widget: str,
    types: tuple[tuple[str, ...], tuple[Any, ...]],
    element: Mapping[str, Any],
) -> Node:
    """A list (`lines`) or map (`pairs`) of scalars: typed, secret when its elements are."""
    return replace(
        base,
        widget=widget,
        types=types[0],
        options=types[1],
        secret=base.secret or _is_secret(element),
    )


def _long_text(schema: Mapping[str, Any], help_text: str) -> bool:
    """Text that may span lines (PEM, bodies, descriptions): a textarea, not an input."""
    return int(schema.get("maxLength", 0)) >= 8192 or "PEM" in help_text


def _scalar_types(
    schema: Mapping[str, Any], defs: Mapping[str, Any]
) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
    """(types, enum options) when `schema` is a scalar, an enum or a union of those."""
    if "enum" in schema:
        return tuple(sorted({_json_type(v) for v in schema["enum"]})), tuple(schema["enum"])
    scalar = _scalar_type(schema)
    if scalar is not None:
        return (scalar,), ()
    branches = [_resolve(b, defs) for b in schema.get("anyOf", [])]
    if branches:
        types: list[str] = []
        for b in branches:
            t = _scalar_type(b)
            if t is None and b.get("type") != "null":
                return None
            if t is not None:
                types.append(t)
        return tuple(types), ()
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _union(base: Node, branches: list[dict[str, Any]], defs: Mapping[str, Any]) -> Node:
    """A field with several non-null branches: scalars, scalar-or-list, else JSON."""
    scalars = [_scalar_type(b) for b in branches]
    if all(s is not None for s in scalars):
        return replace(base, widget="scalar", types=tuple(s for s in scalars if s))
    lists = [b for b in branches if b.get("type") == "array"]
    singles = [s for s in scalars if s is not None]
    if len(lists) == 1 and len(singles) == len(branches) - 1:
        item_types = _scalar_types(_resolve(lists[0].get("items", {}), defs), defs)
        if item_types is not None and set(singles) <= set(item_types[0]):
            return replace(base, widget="lines", types=item_types[0], scalar_or_list=True)
    return base


def plugin_schema(plugin: str) -> dict[str, Any]:
    """One plugin's config schema, as `GET /admin/v1/schemas/plugins/{name}` publishes it
    (KeyError: unknown plugin)."""
    return schema_of(SCHEMAS[plugin])


@cache
def kind_schema(collection: str) -> dict[str, Any]:
    return schema_of(KIND_BY_COLLECTION[collection].model)


@cache
def entity_node(collection: str, plugin: str | None = None) -> Node:
    """The compiled form of one entity kind (for plugin instances: of one plugin's)."""
    schema = kind_schema(collection)
    inner = plugin_schema(plugin) if plugin is not None else None
    if collection == "plugins" and inner is None:
        inner = {"type": "object", "additionalProperties": True, "title": "Config"}
    return compile_schema(schema, schema.get("$defs", {}), schema_of_plugin=inner)


@cache
def model_node(model: type[BaseModel]) -> Node:
    """The compiled form of any request model (a key's settings, a webhook endpoint)."""
    schema = schema_of(model)
    return compile_schema(schema, schema.get("$defs", {}))


@cache
def plugin_node(plugin: str) -> Node:
    """The compiled form of one plugin's config alone (KeyError: unknown plugin)."""
    schema = plugin_schema(plugin)
    return compile_schema(schema, schema.get("$defs", {}))


# --- values into fields ---------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or value is ABSENT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def build_form(
    node: Node,
    value: Any = ABSENT,
    *,
    readonly: Iterable[str] = (),
    prefix: JsonPath = (),
    references: Mapping[str, str] | None = None,
) -> Form:
    """The form of `node` (a group) holding `value` (ABSENT: a new entity, defaults shown).

    `readonly`: top-level fields shown but not editable (an entity's id fields on edit);
    `references`: top-level fields that name an entity, with its collection (`Kind.
    references`), for `Form.suggest`.
    """
    frozen = set(readonly)
    fields = []
    current = value if isinstance(value, dict) else {}
    for child in node.children:
        assert child.key is not None
        f = _field(child, current.get(str(child.key), ABSENT), (*prefix, child.key))
        if child.key in frozen:
            for sub in f.walk():
                sub.readonly = True
        if references and str(child.key) in references:
            f.names = references[str(child.key)]
        fields.append(f)
    return Form(fields)


def _shown(node: Node, value: Any, defaults: bool) -> Any:
    """What a field shows: its value, else its default (never a secret's). The blank item
    for adding to a list shows defaults in its text inputs only as hints, so that an
    item left blank is told apart from one typed in."""
    if node.secret:
        return ABSENT
    if value is ABSENT and (defaults or node.widget in ("select", "checkbox")):
        return node.default
    return value


def _field(node: Node, value: Any, path: JsonPath, defaults: bool = True) -> FormField:
    f = FormField(
        path,
        node.widget,
        node.label,
        help=node.help,
        hint=node.hint,
        required=node.required,
        nullable=node.nullable,
        multiline=node.multiline,
        names=node.names,
    )
    shown = _shown(node, value, defaults)
    if node.widget == "group":
        f.checked = value not in (ABSENT, None) or not node.nullable
        inner = value if isinstance(value, dict) else {}
        for child in node.children:
            assert child.key is not None
            f.children.append(
                _field(child, inner.get(str(child.key), ABSENT), (*path, child.key), defaults)
            )
    elif node.widget == "items":
        assert node.item is not None
        items = value if isinstance(value, list) else []
        if value is ABSENT and isinstance(node.default, list):
            items = node.default
        for i, item in enumerate(items):
            f.children.append(_item(node.item, item, (*path, i), f"{node.label} {i + 1}", True))
        label = f"Add to {node.label.lower()}"
        adding = _item(node.item, ABSENT, (*path, len(items)), label, False)
        adding.blank = True
        f.children.append(adding)
    elif node.widget == "checkbox":
        f.checked = shown is True
    elif node.widget == "select":
        chosen = _text(shown) if shown is not ABSENT else None
        blank = node.nullable or (not node.required and node.default is ABSENT)
        options = [Option("", "—", chosen in (None, ""))] if blank else []
        options += [Option(_text(o), _text(o), _text(o) == chosen) for o in node.options]
        f.options = tuple(options)
        f.value = chosen or ""
    elif node.widget == "password":
        f.stored_secret = isinstance(value, str) and value != ""
    elif node.widget == "lines":
        items = shown if isinstance(shown, list) else ([] if shown in (ABSENT, None) else [shown])
        f.value = "\n".join(_text(v) for v in items)
        if node.options:
            f.hint = "; ".join(
                p for p in (f.hint, "one of " + ", ".join(map(_text, node.options))) if p
            )
    elif node.widget == "pairs":
        pairs = shown if isinstance(shown, dict) else {}
        if node.secret:
            stored = value if isinstance(value, dict) else {}
            f.value = "\n".join(f"{k} =" for k in stored)
            f.stored_secret = bool(stored)
        else:
            f.value = "\n".join(f"{k} = {_pair_text(v)}" for k, v in pairs.items())
    elif node.widget == "json":
        f.value = "" if shown in (ABSENT, None) else json.dumps(shown, indent=2)
    else:
        f.value = _text(shown)
    if (
        node.default not in (ABSENT, None)
        and node.widget not in ("group", "items")
        and not (node.secret)
    ):
        note = f"default {_default_text(node.default)}"
        f.hint = "; ".join(p for p in (f.hint, note) if p)
    return f


def _pair_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _default_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value) if value else "none"
    return _text(value)


def _item(node: Node, value: Any, path: JsonPath, label: str, defaults: bool) -> FormField:
    f = _field(replace(node, label=label, nullable=False), value, path, defaults)
    f.widget = "item"
    return f


# --- errors onto fields ---------------------------------------------------------------


def attach_errors(form: Form, errors: Iterable[tuple[str, str]], *, prefix: JsonPath = ()) -> None:
    """Put each problem error (`pointer`, `detail`) on the field its pointer names, or on
    the nearest field holding it; the rest become the form's own errors.

    `prefix`: the pointers are relative to this path of the form (an entity's pointers
    into its own body are the form's when the form is the entity).
    """
    by_name = {f.name: f for f in form.walk()}
    base = tuple(str(p) for p in prefix)
    for pointer, detail in errors:
        tokens = (*base, *path_of_pointer(pointer))
        target = None
        for end in range(len(tokens), 0, -1):
            target = by_name.get(field_name(tokens[:end]))
            if target is not None:
                break
        if target is None:
            form.errors.append(detail if pointer in ("", "#") else f"{pointer}: {detail}")
            continue
        rest = tokens[len(target.path) :]
        target.errors.append(f"{'/'.join(rest)}: {detail}" if rest else detail)


# --- a submitted form into JSON -------------------------------------------------------


def _last(data: FormData, name: str) -> str | None:
    values = data.get(name)
    if not values:
        return None
    return values[-1]


def _at(document: Any, path: JsonPath) -> Any:
    for part in path:
        if isinstance(document, dict) and isinstance(part, str):
            document = document.get(part, ABSENT)
        elif isinstance(document, list) and isinstance(part, int) and part < len(document):
            document = document[part]
        else:
            return ABSENT
    return document


def parse_form(
    node: Node, data: FormData, *, current: Any = ABSENT, prefix: JsonPath = ()
) -> dict[str, Any]:
    """The JSON document a submitted form of `node` (a group) describes.

    `current`: the stored document (what a blank secret keeps). Values are typed by the
    schema where the text allows; text that is no valid value of its type is passed on
    as it is, for the service to refuse with its own message.
    """
    out: dict[str, Any] = {}
    for child in node.children:
        assert child.key is not None
        value = _parse(child, data, (*prefix, child.key), current, prefix)
        if value is not ABSENT:
            out[str(child.key)] = value
    return out


def _parse(node: Node, data: FormData, path: JsonPath, current: Any, root: JsonPath) -> Any:
    name = field_name(path)
    stored = _at(current, path[len(root) :])
    if node.widget == "group":
        if node.nullable and _last(data, SET_PREFIX + name) is None:
            return ABSENT
        out = {}
        for child in node.children:
            assert child.key is not None
            value = _parse(child, data, (*path, child.key), current, root)
            if value is not ABSENT:
                out[str(child.key)] = value
        if not out and not node.required and not node.nullable:
            return ABSENT
        return out
    if node.widget == "items":
        assert node.item is not None
        return _parse_items(node, node.item, data, path, current, root)
    if node.widget == "checkbox":
        raw = _last(data, name)
        if raw is None:
            return ABSENT
        return raw == "true"
    raw = _last(data, name)
    if raw is None:
        return ABSENT
    # Browsers send a textarea's line breaks as CRLF.
    raw = raw.replace("\r\n", "\n")
    text = raw.strip()
    if node.widget == "password":
        if text == "":
            return stored if isinstance(stored, str) else ABSENT
        return raw
    if text == "":
        return ABSENT
    if node.widget == "select":
        for option in node.options:
            if _text(option) == text:
                return option
        return text
    if node.widget in ("text",):
        return text
    if node.widget in ("number", "scalar"):
        return _scalar(text, node.types)
    if node.widget == "lines":
        items = [_scalar(line.strip(), node.types) for line in text.splitlines() if line.strip()]
        if node.scalar_or_list and len(items) == 1:
            return items[0]
        return items
    if node.widget == "pairs":
        return _parse_pairs(node, text, stored)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_items(
    node: Node, item: Node, data: FormData, path: JsonPath, current: Any, root: JsonPath
) -> Any:
    name = field_name(path)
    indexes: set[int] = set()
    start = name + "/"
    for key in data:
        bare = (
            key.split(":", 1)[1]
            if key.startswith((BLANK_PREFIX, REMOVE_PREFIX, SET_PREFIX))
            else key
        )
        if bare.startswith(start):
            head = bare[len(start) :].split("/", 1)[0]
            if head.isdigit():
                indexes.add(int(head))
    out = []
    for i in sorted(indexes):
        item_path = (*path, i)
        item_name = field_name(item_path)
        if _last(data, REMOVE_PREFIX + item_name) is not None:
            continue
        if _last(data, BLANK_PREFIX + item_name) is not None and not _typed_anything(
            item, data, item_path
        ):
            continue
        value = _parse(replace(item, nullable=False, required=True), data, item_path, current, root)
        out.append(value)
    if not out:
        return [] if node.required else ABSENT
    return out


def _typed_anything(node: Node, data: FormData, path: JsonPath) -> bool:
    """Whether any text input under `node` holds something (a blank item left blank is no item)."""
    if node.widget in ("group", "item"):
        return any(
            _typed_anything(child, data, (*path, child.key))
            for child in node.children
            if child.key is not None
        )
    if node.widget == "items":
        start = field_name(path) + "/"
        return any(k.startswith(start) and any(v.strip() for v in vs) for k, vs in data.items())
    if node.widget in TEXT_WIDGETS:
        return bool((_last(data, field_name(path)) or "").strip())
    return False


def _scalar(text: str, types: Sequence[str]) -> Any:
    """`text` as the most specific of `types` it is (JSON types: integer, number, boolean,
    string), else the text itself."""
    order = ("integer", "number", "boolean", "string")
    for kind in sorted(types, key=lambda t: order.index(t) if t in order else len(order)):
        if kind == "integer" and _INT.match(text):
            return int(text)
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                continue
            return int(text) if _INT.match(text) else number
        if kind == "boolean" and text in ("true", "false"):
            return text == "true"
        if kind == "string":
            return text
    if "json" in types:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _parse_pairs(node: Node, text: str, stored: Any) -> Any:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            # Not `name = value`: passed on whole, for the service to refuse.
            return text
        if node.secret and value == "" and isinstance(stored, dict) and key in stored:
            out[key] = stored[key]
            continue
        out[key] = _scalar(value, node.types or ("string",))
    return out


# --- rendering ------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_fields(form: Form) -> str:
    """The form's fields as HTML (the page supplies `<form novalidate>` and its buttons).

    Every input has a `<label>`; help, hints and errors are tied to it with
    `aria-describedby`; an input with errors has `aria-invalid`.
    """
    out = []
    if form.errors:
        items = "".join(f"<li>{_e(e)}</li>" for e in form.errors)
        out.append(f'<div class="form-errors" role="alert"><ul>{items}</ul></div>')
    out.extend(_render(f) for f in form.fields)
    return "\n".join(out)


def _described(f: FormField) -> tuple[str, str]:
    parts, ids = [], []
    if f.help:
        ids.append(f"{f.id}-help")
        parts.append(f'<p class="help" id="{f.id}-help">{_e(f.help)}</p>')
    if f.hint:
        ids.append(f"{f.id}-hint")
        parts.append(f'<p class="hint" id="{f.id}-hint">{_e(f.hint)}</p>')
    if f.errors:
        ids.append(f"{f.id}-error")
        errors = "<br>".join(_e(e) for e in f.errors)
        parts.append(f'<p class="field-error" id="{f.id}-error">{errors}</p>')
    attrs = f' aria-describedby="{" ".join(ids)}"' if ids else ""
    if f.errors:
        attrs += ' aria-invalid="true"'
    return attrs, "".join(parts)


def _render(f: FormField) -> str:
    attrs, notes = _described(f)
    name, fid = _e(f.name), f.id
    ro = " readonly" if f.readonly else ""
    req = '<span class="required" aria-hidden="true"> *</span>' if f.required else ""
    label = f'<label for="{fid}">{_e(f.label)}{req}</label>'
    if f.widget in ("group", "item"):
        inner = "\n".join(_render(c) for c in f.children)
        extra = ""
        if f.widget == "group" and f.nullable:
            checked = " checked" if f.checked else ""
            extra = (
                f'<div class="field field-check"><input type="checkbox" id="{fid}-set" '
                f'name="{_e(SET_PREFIX + f.name)}" value="1"{checked}{ro}>'
                f'<label for="{fid}-set">Set {_e(f.label.lower())}</label></div>'
            )
        if f.widget == "item":
            if f.blank:
                extra = f'<input type="hidden" name="{_e(BLANK_PREFIX + f.name)}" value="1">'
            elif not f.readonly:
                extra = (
                    f'<div class="field field-check"><input type="checkbox" id="{fid}-remove" '
                    f'name="{_e(REMOVE_PREFIX + f.name)}" value="1">'
                    f'<label for="{fid}-remove">Remove {_e(f.label.lower())}</label></div>'
                )
        css = "item blank" if f.blank else f.widget
        return (
            f'<fieldset class="{css}" id="{fid}"{attrs}><legend>{_e(f.label)}</legend>'
            f"{notes}{extra}{inner}</fieldset>"
        )
    if f.widget == "items":
        inner = "\n".join(_render(c) for c in f.children)
        return (
            f'<fieldset class="items" id="{fid}"{attrs}><legend>{_e(f.label)}{req}</legend>'
            f"{notes}{inner}</fieldset>"
        )
    if f.widget == "checkbox":
        checked = " checked" if f.checked else ""
        if f.readonly:
            kept = "true" if f.checked else "false"
            return (
                f'<div class="field field-check"><input type="hidden" name="{name}" '
                f'value="{kept}"><input type="checkbox" id="{fid}"{checked} disabled{attrs}>'
                f"{label}{notes}</div>"
            )
        return (
            f'<div class="field field-check"><input type="hidden" name="{name}" value="false">'
            f'<input type="checkbox" id="{fid}" name="{name}" value="true"{checked}'
            f"{attrs}>{label}{notes}</div>"
        )
    if f.widget == "select":
        options = "".join(
            '<option value="{}"{}>{}</option>'.format(
                _e(o.value), " selected" if o.selected else "", _e(o.label)
            )
            for o in f.options
        )
        disabled = " disabled" if f.readonly else ""
        keep = f'<input type="hidden" name="{name}" value="{_e(f.value)}">' if f.readonly else ""
        return (
            f'<div class="field">{label}<select id="{fid}" name="{name}"{disabled}{attrs}>'
            f"{options}</select>{keep}{notes}</div>"
        )
    if f.widget == "password" and f.multiline:
        placeholder = ' placeholder="stored; leave blank to keep"' if f.stored_secret else ""
        return (
            f'<div class="field">{label}<textarea id="{fid}" name="{name}" rows="4"'
            f' spellcheck="false" autocomplete="off"{placeholder}{ro}{attrs}></textarea>'
            f"{notes}</div>"
        )
    if f.widget in ("lines", "pairs", "json") or (f.widget == "text" and f.multiline):
        rows = max(2, min(12, f.value.count("\n") + 2))
        return (
            f'<div class="field">{label}<textarea id="{fid}" name="{name}" rows="{rows}"'
            f' spellcheck="false"{ro}{attrs}>{_e(f.value)}</textarea>{notes}</div>'
        )
    if f.widget == "password":
        placeholder = ' placeholder="stored; leave blank to keep"' if f.stored_secret else ""
        return (
            f'<div class="field">{label}<input type="password" id="{fid}" name="{name}"'
            f' value="" autocomplete="new-password"{placeholder}{ro}{attrs}>{notes}</div>'
        )
    kind = "number" if f.widget == "number" else "text"
    step = ' step="any"' if kind == "number" else ""
    listed = datalist = ""
    if f.suggestions and not f.readonly:
        listed = f' list="{fid}-names"'
        options = "".join(f'<option value="{_e(n)}">' for n in f.suggestions)
        datalist = f'<datalist id="{fid}-names">{options}</datalist>'
    return (
        f'<div class="field">{label}<input type="{kind}"{step} id="{fid}" name="{name}"'
        f' value="{_e(f.value)}"{listed}{ro}{attrs}>{datalist}{notes}</div>'
    )
