"""Limits on a GraphQL document, computed on the fragment-expanded operation.

A document is measured before it is validated or executed, so every hostile shape is
refused before graphql-core spends time on it:

- `parse_within_limits` bounds the source size (`max_bytes`) and the lexer tokens and
  comments (`max_tokens`); graphql-core's parser also refuses nesting deeper than 200
  (a syntax error, never a `RecursionError`).
- `check_limits` measures the operation that will run as if every fragment spread were
  replaced by its fragment: selection depth, aliases and cost. Each fragment is measured
  once (its depth, aliases and cost are memoised) and a spread adds the memoised figures,
  so a fragment spread ten times counts ten times at the cost of one addition, and a
  spread "bomb" (A spreads B ten times, B spreads C ten times, ...) is measured in time
  linear in the document. Figures saturate at `SATURATED`, so even an exponential one
  stays a small integer. Circular fragments are refused as `LimitExceeded("fragments")`.

The measurement is safe on invalid documents: unknown fields, types and fragments are
counted without schema information (validation rejects them later), and nothing
recurses on the document's shape (explicit stacks), so neither circular fragments nor a
hand-built AST of any depth can exhaust the Python stack. See
docs/decisions/016-graphql-document-limits.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    parse,
)
from graphql.type import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

if TYPE_CHECKING:
    from graphql import GraphQLField

    from portcullis.settings import Settings

__all__ = [
    "SATURATED",
    "DocumentLimits",
    "Figures",
    "LimitExceeded",
    "check_limits",
    "limits_from",
    "measure",
    "parse_within_limits",
]

# Depth, alias and cost figures stop growing here: a spread bomb's true cost can have
# thousands of digits, and arithmetic on it would cost what the limit protects.
SATURATED = 10**18
# Arguments that bound the length of a list field (Relay `first`/`last`, plain `limit`).
PAGE_ARGUMENTS = ("first", "last", "limit")
# List fields of a `...Connection` type already bounded by the connection's `first`.
CONNECTION_LISTS = ("edges", "nodes")
# `__Type` lists whose nesting graphql-core's MaxIntrospectionDepthRule bounds (< 3):
# `__type { fields { type { fields { type { fields ...` grows with the schema's size
# at each level, which the cost model (counting introspection lists once) does not see.
INTROSPECTION_LISTS = ("fields", "interfaces", "possibleTypes", "inputFields")
MAX_INTROSPECTION_LISTS = 2
# Argument lists, lists and input objects nested in one another (graphql-core's parser
# refuses 200, after parsing them): no input type of the admin API nests nearly as deep.
MAX_VALUE_NESTING = 64


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one GraphQL document may ask for (`PORTCULLIS_GRAPHQL_*` settings)."""

    max_bytes: int = 100_000  # document source size, UTF-8 bytes
    max_tokens: int = 5_000  # lexer tokens, and separately comments
    max_depth: int = 12  # selection depth after fragment expansion (introspection too)
    max_aliases: int = 30  # aliases after fragment expansion (each spread counts)
    max_cost: int = 50_000  # see `check_limits`
    default_list_size: int = 100  # multiplier of a list field without first/last/limit
    max_directives: int = 50  # directives (`@name`) in the document's source
    max_operations: int = 20  # operations in the document (all are validated)
    max_fragments: int = 100  # fragment definitions in the document
    max_name_length: int = 256  # characters of one name (field, alias, fragment, ...)
    # The page a connection returns without `first`: the service layer's DEFAULT_LIMIT
    # (services/pagination.py; a test keeps them equal). Not a setting: it follows the
    # server, not the operator.
    default_page_size: int = 50

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


class LimitExceeded(Exception):
    """A document is over one of its limits; `str()` names the limit and the value.

    `limit` is "bytes", "tokens", "comments" (counted against max_tokens), "directives",
    "operations", "fragments" (too many, or a circular one), "name_length", "nesting"
    (of a value), "depth",
    "aliases", "cost" or "introspection"; `actual` is the measured figure
    when it is known (a count that stops at the limit does not know it), `maximum` the
    limit.
    """

    def __init__(
        self,
        limit: str,
        actual: int | None,
        maximum: int,
        message: str | None = None,
        setting: str | None = None,
    ) -> None:
        self.limit = limit
        self.actual = actual
        self.maximum = maximum
        if message is None:
            message = f"{_WHAT[limit]} {_figure(actual)} exceeds the limit of {maximum}"
        setting = _SETTING.get(limit, "max_" + limit) if setting is None else setting
        super().__init__(f"{message} ({setting})" if setting else message)


_WHAT = {
    "bytes": "document size in bytes",
    "tokens": "number of tokens",
    "comments": "number of comments",
    "depth": "query depth",
    "aliases": "number of aliases",
    "cost": "query cost",
    "name_length": "name length",
}
_SETTING = {
    "comments": "max_tokens",
    "directives": "max_directives",
    "introspection": "MaxIntrospectionDepthRule",
}


def _figure(actual: int | None) -> str:
    if actual is None:
        return "(not counted)"
    if actual >= SATURATED:
        return f"of at least {SATURATED}"
    return str(actual)


def limits_from(settings: Settings) -> DocumentLimits:
    """The document limits the process settings give."""
    return DocumentLimits(
        max_bytes=settings.graphql_max_bytes,
        max_tokens=settings.graphql_max_tokens,
        max_depth=settings.graphql_max_depth,
        max_aliases=settings.graphql_max_aliases,
        max_cost=settings.graphql_max_cost,
        default_list_size=settings.graphql_default_list_size,
        max_directives=settings.graphql_max_directives,
        max_operations=settings.graphql_max_operations,
        max_fragments=settings.graphql_max_fragments,
        max_name_length=settings.graphql_max_name_length,
    )


def parse_within_limits(source: str, limits: DocumentLimits) -> DocumentNode:
    """Parse `source`, refusing it (`LimitExceeded`) when it is over `max_bytes`, or
    over `max_tokens` lexer tokens or comments. A malformed document (or one nested
    deeper than the parser allows) stays a `graphql.GraphQLError`."""
    # A code point is 1-4 UTF-8 bytes: encode only when the length alone cannot tell.
    if len(source) > limits.max_bytes:
        raise LimitExceeded(
            "bytes",
            len(source),
            limits.max_bytes,
            f"document of {len(source)} characters (at least as many bytes) exceeds "
            f"the limit of {limits.max_bytes} bytes",
        )
    if len(source) * 4 > limits.max_bytes:
        size = _utf8_size(source)
        if size > limits.max_bytes:
            raise LimitExceeded("bytes", size, limits.max_bytes)
    _count_tokens(source, limits)
    try:
        return parse(
            source,
            no_location=False,
            max_lexical_tokens=limits.max_tokens,
            max_comments=limits.max_tokens,
        )
    except GraphQLSyntaxError as error:
        if error.message.startswith("Document contains more than"):
            limit = "comments" if error.message.endswith("comments. Parsing aborted.") else "tokens"
            raise LimitExceeded(
                limit,
                None,
                limits.max_tokens,
                f"document has more than {limits.max_tokens} {limit}, the limit",
            ) from None
        raise


# GraphQL's lexical tokens (spec section 2.1): block strings, strings, comments, names,
# numbers and punctuators; commas and white space are ignored. A valid document splits
# exactly as graphql-core's lexer splits it; an invalid one may split into more tokens
# (an unterminated string's words), which only refuses it as "tokens" instead of
# "syntax".
_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\"""|\\|"(?!""))*"""'
    r'|"(?:[^"\\\n\r]|\\.)*"'
    r"|#[^\n\r]*"
    r"|[_A-Za-z][_0-9A-Za-z]*"
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|\.\.\.|[!$&()\[\]{}:=@|]"
)


def _count_tokens(source: str, limits: DocumentLimits) -> None:
    """Refuse a document over its token, comment, directive, operation, fragment or
    name-length limits before graphql-core parses it.

    The regular expression runs at C speed and this loop at well under a microsecond a
    token, the parser at ~5-10 µs a token and validation at ~0.1-0.3 ms an operation: a
    flood is refused in about a millisecond instead of being parsed up to the limit (the
    parser's own token limits stay as a backstop). Operations and fragments are the
    definitions whose selection set opens at the top level (no enclosing bracket).

    Aliases and the nesting of fields (inline fragments' selection sets aside) are
    counted per definition too: an operation or fragment with more than `max_aliases`
    aliases of its own, or fields nested more than `max_depth` deep in it alone, is
    refused here. For the operation that runs, its own and its fragments' figures are
    lower bounds of the expanded ones; a fragment no operation spreads is invalid
    anyway; the one document refused here that `check_limits` would pass holds a second
    operation, not run, that is over a limit by itself."""
    tokens = comments = directives = operations = fragments = depth = values = aliases = 0
    fragment_next = after_name = after_dots = inline_next = after_at = False
    # Per definition (a fragment by name, an operation by its position): its own fields
    # and aliases and the fragments it spreads, to expand before parsing (see _expand).
    shapes: dict[str, _Shape] = {}
    shape = _Shape()
    fragment_name: str | None = None
    skip_name = 0  # names that are not fields: a type condition, a spread fragment
    previous = ""  # the previous token when it was punctuation (`.` ends `...`)
    field_braces: list[bool] = []  # selection sets open in this definition: a field's?
    open_fields = nested_values = 0
    for match in _TOKEN.finditer(source):
        start, end = match.span()
        first = source[start]
        if first == "#":
            comments += 1
            if comments > limits.max_tokens:
                raise _too_many("comments", limits.max_tokens)
            continue
        tokens += 1
        if tokens > limits.max_tokens:
            raise _too_many("tokens", limits.max_tokens)
        name = first.isalpha() or first == "_"
        if after_dots:  # `...Name` spreads a fragment; `... on`, `... @`, `... {` inline
            inline_next = not name or source[start:end] == "on"
            after_dots = False
        if first == "{" and depth and not values:
            # A field's selection set (not an inline fragment's): a field `open_fields`
            # deep exists, in this definition alone (a lower bound, as for aliases).
            field_braces.append(not inline_next)
            open_fields += not inline_next
            inline_next = False
            if open_fields > limits.max_depth:
                raise LimitExceeded(
                    "depth",
                    None,
                    limits.max_depth,
                    f"a definition nests fields more than {limits.max_depth} deep, the limit",
                )
        elif first == "}" and not values and field_braces:
            open_fields -= field_braces.pop()
        if first == ".":
            after_dots = True
        if first in "{[(":
            if depth == 0 and first == "{":
                aliases = open_fields = 0
                field_braces.clear()
                shape = _Shape()
                key = fragment_name if fragment_next and fragment_name else f"#{operations}"
                shapes.setdefault(key, shape)
                if fragment_next:
                    fragments += 1
                    fragment_next = False
                    fragment_name = None
                    if fragments > limits.max_fragments:
                        raise _too_many("fragments", limits.max_fragments)
                else:
                    operations += 1
                    if operations > limits.max_operations:
                        raise _too_many("operations", limits.max_operations)
            if values or first != "{":  # arguments, variable definitions, values
                nested_values += 1
                if nested_values > MAX_VALUE_NESTING:
                    raise LimitExceeded(
                        "nesting",
                        None,
                        MAX_VALUE_NESTING,
                        f"a value nests lists or objects more than {MAX_VALUE_NESTING} deep",
                        setting="",
                    )
            depth += 1
            values += first != "{"
        elif first in "}])":
            if nested_values and (values or first != "}"):
                nested_values -= 1
            depth = depth - 1 if depth else 0
            values -= 1 if values and first != "}" else 0
        elif first == ":" and after_name and depth and not values:
            # `name:` in a selection set (not in arguments or values) is an alias: a
            # definition with too many aliases of its own is over the limit however
            # it is spread (a lower bound of the expanded count, see check_limits).
            aliases += 1
            shape.fields -= 1  # the alias was counted as a field name; the field follows
            shape.aliases += 1
            if aliases > limits.max_aliases:
                raise LimitExceeded(
                    "aliases",
                    None,
                    limits.max_aliases,
                    f"a definition has more than {limits.max_aliases} aliases of its own, "
                    "the limit",
                )
        elif first == "@":
            after_at = True
            directives += 1
            if directives > limits.max_directives:
                raise _too_many("directives", limits.max_directives)
        elif name:
            if end - start > limits.max_name_length:
                raise LimitExceeded("name_length", end - start, limits.max_name_length)
            if depth == 0:
                if fragment_next and fragment_name is None:
                    fragment_name = source[start:end]
                elif end - start == 8 and source[start:end] == "fragment":
                    fragment_next = True
            elif not values:
                text = source[start:end]
                if previous == ".":
                    if text == "on":
                        skip_name = 1  # `... on Type`: the type is no field
                    else:
                        shape.spreads[text] = shape.spreads.get(text, 0) + 1
                elif skip_name:
                    skip_name -= 1
                elif not after_at:
                    shape.fields += 1
            after_at = False
        if first != "@" and not name:
            after_at = False
        after_name = name
        previous = first if not name else ""
    _expand(shapes, limits)


@dataclass(slots=True)
class _Shape:
    """What the pre-scan saw of one definition: its own fields and aliases, and how
    many times it spreads each fragment."""

    fields: int = 0
    aliases: int = 0
    spreads: dict[str, int] = field(default_factory=dict)


def _expand(shapes: dict[str, _Shape], limits: DocumentLimits) -> None:
    """Follow fragment spreads on the pre-scan's counts, before anything is parsed: a
    cycle is refused ("fragments"), and so is a definition whose expansion holds more
    fields than `max_cost` (each field costs at least 1) or more aliases than
    `max_aliases`. Each fragment is expanded once (memoised, iteratively), so a spread
    bomb costs time linear in the document, not in its expansion. Spreads of fragments
    the document does not define are left to validation."""
    done: dict[str, tuple[int, int]] = {}
    for root in shapes:
        stack: list[tuple[str, bool]] = [(root, False)]
        on_path: list[str] = []
        while stack:
            name, expanded = stack.pop()
            if expanded:
                on_path.pop()
                own = shapes[name]
                fields, aliases = own.fields, own.aliases
                for target, times in own.spreads.items():
                    if target in done:
                        fields = min(fields + times * done[target][0], SATURATED)
                        aliases = min(aliases + times * done[target][1], SATURATED)
                done[name] = (fields, aliases)
                if fields > limits.max_cost:
                    raise LimitExceeded(
                        "cost",
                        None if fields >= SATURATED else fields,
                        limits.max_cost,
                        f"{_definition(name)} expands to {_figure(fields)} fields, more "
                        f"than the cost limit of {limits.max_cost} (max_cost)",
                    )
                if aliases > limits.max_aliases:
                    raise LimitExceeded(
                        "aliases",
                        None if aliases >= SATURATED else aliases,
                        limits.max_aliases,
                        f"{_definition(name)} expands to {_figure(aliases)} aliases, more "
                        f"than the limit of {limits.max_aliases} (max_aliases)",
                    )
                continue
            if name in done:
                continue
            if name in on_path:
                raise _cycle(on_path, name)
            on_path.append(name)
            stack.append((name, True))
            for target in shapes[name].spreads:
                if target in shapes and target not in done:
                    stack.append((target, False))


def _cycle(path: list[str], name: str) -> LimitExceeded:
    """The refusal of a fragment met again while it is open on `path` (both measures)."""
    cycle = [*path[path.index(name) :], name]
    return LimitExceeded(
        "fragments",
        None,
        0,
        f"fragment {name!r} spreads itself ({' -> '.join(cycle)}); "
        "circular fragments are not allowed",
        setting="",
    )


def _definition(name: str) -> str:
    return "the operation" if name.startswith("#") else f"fragment {name}"


def _too_many(limit: str, maximum: int) -> LimitExceeded:
    return LimitExceeded(
        limit, None, maximum, f"document has more than {maximum} {limit}, the limit"
    )


def _utf8_size(source: str) -> int:
    # Lone surrogates (from JSON "\ud800") cannot be encoded; count them as 3 bytes.
    return len(source.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class Figures:
    """Depth, aliases and cost of a selection set, fragment or operation (`measure`)."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0
    # The longest chain of `__Type` lists (fields, interfaces, ...) inside each other.
    introspection: int = 0


@dataclass(slots=True)
class _Frame:
    """A selection set being measured, with the figures of what was measured so far."""

    selections: Iterator[Any]
    parent_type: GraphQLNamedType | None
    figures: Figures
    # How the finished set adds to the enclosing one: the field it is the selection
    # set of (with its multiplier), or None for an inline fragment.
    field: FieldNode | None = None
    multiplier: int = 1
    depth_step: int = 1  # 0 for `__Type.ofType`
    introspection_step: int = 0  # 1 for a `__Type` list


def measure(
    document: DocumentNode,
    schema: GraphQLSchema,
    limits: DocumentLimits,
    *,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> list[Figures]:
    """The figures of the operation that will run (of each, when that is ambiguous).

    Measured on the operation with every fragment spread expanded:

    - depth: fields nested in fields (a top-level field is depth 1; inline fragments and
      spreads add none; introspection fields count like any other);
    - aliases: aliased fields, each spread of a fragment counting its aliases again;
    - cost: each field costs 1, plus its selection set's cost times a multiplier: the
      largest integer `first`, `last` or `limit` argument (a literal, or a variable from
      `variables`, else its default, else `default_list_size`); without one, a list
      field multiplies by `default_list_size` per list level, except `edges` and `nodes`
      of a `...Connection` type (bounded by the connection's `first`); a connection
      field without one multiplies by `default_page_size` (the page it returns). Fragments on the
      different types of a union or interface all count (an upper bound);
    - introspection: its fields count for depth and aliases, except `__Type.ofType`
      (a type reference ends after the schema's few wrappers; the standard query nests
      it 7 times), and cost 1 each, their lists unmultiplied (they are bounded by the
      schema, not by data: the standard introspection query costs ~230); instead
      `__Type` lists (fields, interfaces, possibleTypes, inputFields) may nest at most
      `MAX_INTROSPECTION_LISTS` deep, as graphql-core's MaxIntrospectionDepthRule asks.

    The operation is the one graphql-core would run: the only one, or `operation_name`;
    when that is ambiguous or names no operation, every operation is checked.
    Unknown fields, types and fragments are measured without schema information and left
    to validation; a circular fragment raises `LimitExceeded("fragments")`.
    """
    operations: list[OperationDefinitionNode] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
        elif isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, definition)
    named = [
        operation
        for operation in operations
        if operation.name is not None and operation.name.value == operation_name
    ]
    chosen = named if operation_name is not None and named else operations
    measure = _Measure(schema, limits, fragments, variables or {})
    return [measure.operation(operation) for operation in chosen]


def check_limits(
    document: DocumentNode,
    schema: GraphQLSchema,
    limits: DocumentLimits,
    *,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> None:
    """Raise `LimitExceeded` when the operation that will run is over a limit: its
    depth, aliases or cost (see `measure`), or introspection lists nested too deep."""
    for figures in measure(
        document, schema, limits, operation_name=operation_name, variables=variables
    ):
        if figures.depth > limits.max_depth:
            raise LimitExceeded("depth", figures.depth, limits.max_depth)
        if figures.aliases > limits.max_aliases:
            raise LimitExceeded("aliases", figures.aliases, limits.max_aliases)
        if figures.cost > limits.max_cost:
            raise LimitExceeded("cost", figures.cost, limits.max_cost)
        if figures.introspection > MAX_INTROSPECTION_LISTS:
            raise LimitExceeded(
                "introspection",
                figures.introspection,
                MAX_INTROSPECTION_LISTS,
                f"introspection lists nested {figures.introspection} deep (fields, "
                "interfaces, possibleTypes or inputFields inside each other) exceed "
                f"the limit of {MAX_INTROSPECTION_LISTS}",
            )


class _Measure:
    """Measures operations of one document; fragment figures are memoised per set of
    variable values (operations with the same variable defaults share them)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: DocumentLimits,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.fragments = fragments
        self.variables = variables
        self.spreads: dict[str, list[str]] = {}
        self.memos: dict[tuple[tuple[str, int], ...], dict[str, Figures]] = {}

    def operation(self, operation: OperationDefinitionNode) -> Figures:
        page_sizes = self._page_sizes(operation)
        memo = self.memos.setdefault(tuple(sorted(page_sizes.items())), {})
        for name in self._fragments_in_order(operation.selection_set):
            if name not in memo:
                fragment = self.fragments[name]
                condition = self.schema.get_type(fragment.type_condition.name.value)
                memo[name] = self._selection_set(
                    fragment.selection_set, condition, memo, page_sizes
                )
        root = self.schema.get_root_type(operation.operation)
        return self._selection_set(operation.selection_set, root, memo, page_sizes)

    def _page_sizes(self, operation: OperationDefinitionNode) -> dict[str, int]:
        """The multiplier each of the operation's variables gives as a page size."""
        sizes: dict[str, int] = {}
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name in self.variables:
                sizes[name] = self._page_size(self.variables[name])
            elif definition.default_value is not None:
                sizes[name] = self._literal_page_size(definition.default_value)
        return sizes

    def _page_size(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return self.limits.default_list_size
        return min(value, SATURATED)

    def _literal_page_size(self, node: ValueNode) -> int:
        if isinstance(node, IntValueNode):
            digits = node.value.lstrip("-")
            if len(digits) > 18:  # int() of thousands of digits is slow (and refused)
                return self.limits.default_list_size if node.value[0] == "-" else SATURATED
            return self._page_size(int(node.value))
        return self.limits.default_list_size

    def _spreads_of(self, name: str) -> list[str]:
        """The names of the known fragments `name` spreads (in order, with repeats)."""
        spreads = self.spreads.get(name)
        if spreads is None:
            spreads = self.spreads[name] = _spread_names(
                self.fragments[name].selection_set, self.fragments
            )
        return spreads

    def _fragments_in_order(self, selection_set: SelectionSetNode) -> list[str]:
        """The fragments the selection set reaches, each after those it spreads.

        An iterative depth-first search (no recursion however long a chain is); a
        fragment met again while it is still open is a cycle."""
        order: list[str] = []
        done: set[str] = set()
        open_path: list[str] = []
        on_path: set[str] = set()
        stack: list[Iterator[str]] = [iter(_spread_names(selection_set, self.fragments))]
        while stack:
            name = next(stack[-1], None)
            if name is None:
                stack.pop()
                if open_path:
                    finished = open_path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    order.append(finished)
                continue
            if name in done:
                continue
            if name in on_path:
                raise _cycle(open_path, name)
            open_path.append(name)
            on_path.add(name)
            stack.append(iter(self._spreads_of(name)))
        return order

    def _selection_set(
        self,
        selection_set: SelectionSetNode,
        parent_type: GraphQLNamedType | None,
        memo: Mapping[str, Figures],
        page_sizes: Mapping[str, int],
    ) -> Figures:
        """Figures of a selection set whose fragments' figures are all in `memo`."""
        top = _Frame(iter(selection_set.selections), parent_type, Figures())
        stack = [top]
        while stack:
            frame = stack[-1]
            selection = next(frame.selections, None)
            if selection is None:
                stack.pop()
                if stack:
                    _add(stack[-1].figures, frame)
                continue
            if isinstance(selection, FieldNode):
                parent = frame.parent_type
                field_type = self._field_type(parent, selection)
                type_field = parent is not None and parent.name == "__Type"
                stack.append(
                    _Frame(
                        iter(selection.selection_set.selections if selection.selection_set else ()),
                        _named_composite(field_type),
                        Figures(),
                        selection,
                        self._multiplier(parent, selection, field_type, page_sizes),
                        0 if type_field and selection.name.value == "ofType" else 1,
                        1 if type_field and selection.name.value in INTROSPECTION_LISTS else 0,
                    )
                )
            elif isinstance(selection, InlineFragmentNode):
                condition = frame.parent_type
                if selection.type_condition is not None:
                    condition = self.schema.get_type(selection.type_condition.name.value)
                stack.append(_Frame(iter(selection.selection_set.selections), condition, Figures()))
            elif isinstance(selection, FragmentSpreadNode):
                figures = memo.get(selection.name.value)
                if figures is not None:  # unknown: left to validation
                    _merge(frame.figures, figures)
        return top.figures

    def _field_type(
        self, parent_type: GraphQLNamedType | None, node: FieldNode
    ) -> GraphQLOutputType | None:
        name = node.name.value
        definition: GraphQLField | None = None
        if name == "__typename":
            definition = TypeNameMetaFieldDef
        elif name in ("__schema", "__type") and parent_type is self.schema.query_type:
            definition = SchemaMetaFieldDef if name == "__schema" else TypeMetaFieldDef
        elif isinstance(parent_type, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent_type.fields.get(name)
        return definition.type if definition is not None else None

    def _multiplier(
        self,
        parent_type: GraphQLNamedType | None,
        node: FieldNode,
        field_type: GraphQLOutputType | None,
        page_sizes: Mapping[str, int],
    ) -> int:
        if not node.selection_set or (parent_type and parent_type.name.startswith("__")):
            return 1  # a leaf, or an introspection list (bounded by the schema)
        sizes = [
            self._argument_page_size(argument.value, page_sizes)
            for argument in node.arguments or ()
            if argument.name.value in PAGE_ARGUMENTS
        ]
        if sizes:
            return max(sizes)
        named = _named_composite(field_type)
        if named is not None and named.name.endswith("Connection"):
            return self.limits.default_page_size
        levels = _list_levels(field_type)
        if levels and not (
            parent_type is not None
            and parent_type.name.endswith("Connection")
            and node.name.value in CONNECTION_LISTS
        ):
            multiplier = 1
            for _ in range(levels):
                multiplier = min(multiplier * self.limits.default_list_size, SATURATED)
            return multiplier
        return 1

    def _argument_page_size(self, value: ValueNode, page_sizes: Mapping[str, int]) -> int:
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in page_sizes:
                return page_sizes[name]
            if name in self.variables:  # a variable the operation does not define
                return self._page_size(self.variables[name])
            return self.limits.default_list_size
        return self._literal_page_size(value)


def _spread_names(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[str]:
    """The known fragments spread anywhere in `selection_set` (not inside them)."""
    names: list[str] = []
    stack: list[Sequence[Any]] = [selection_set.selections]
    while stack:
        for selection in stack.pop():
            if isinstance(selection, FragmentSpreadNode):
                if selection.name.value in fragments:
                    names.append(selection.name.value)
            elif selection.selection_set is not None:
                stack.append(selection.selection_set.selections)
    return names


def _add(figures: Figures, finished: _Frame) -> None:
    """Add a finished field's or inline fragment's selection set to its parent's."""
    child = finished.figures
    if finished.field is None:  # an inline fragment
        _merge(figures, child)
        return
    _merge(
        figures,
        Figures(
            child.depth + finished.depth_step,
            child.aliases + (1 if finished.field.alias is not None else 0),
            1 + finished.multiplier * child.cost,
            child.introspection + finished.introspection_step,
        ),
    )


def _merge(figures: Figures, more: Figures) -> None:
    """Add `more` (a field, inline fragment or spread) to a selection set's figures."""
    figures.depth = max(figures.depth, more.depth)
    figures.aliases = min(figures.aliases + more.aliases, SATURATED)
    figures.cost = min(figures.cost + more.cost, SATURATED)
    figures.introspection = max(figures.introspection, more.introspection)


def _named_composite(field_type: GraphQLOutputType | None) -> GraphQLNamedType | None:
    return get_named_type(field_type) if field_type is not None else None


def _list_levels(field_type: GraphQLOutputType | None) -> int:
    levels = 0
    while isinstance(field_type, GraphQLNonNull | GraphQLList):
        if isinstance(field_type, GraphQLList):
            levels += 1
        field_type = field_type.of_type
    return levels
