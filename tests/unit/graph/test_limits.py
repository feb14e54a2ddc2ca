"""GraphQL document limits (graph/limits.py): each limit at and one past its value, the
cost model, fragment expansion against a naive textual-expansion reference, safety on
invalid documents, and the adversarial corpus (tests/unit/graph/adversarial.py)."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    Lexer,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Source,
    TokenKind,
    VariableNode,
    get_named_type,
    parse,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from portcullis.graph.limits import (
    SATURATED,
    DocumentLimits,
    LimitExceeded,
    check_limits,
    limits_from,
    measure,
    parse_within_limits,
)
from portcullis.services.pagination import DEFAULT_LIMIT
from portcullis.settings import Settings
from unit.graph.adversarial import Case, admit, benign, corpus, schema

GRAPH = schema()
DEFAULTS = DocumentLimits()


def figures(source: str, **options: Any) -> tuple[int, int, int]:
    """(depth, aliases, cost) of the one operation of `source`."""
    (result,) = measure(parse(source), GRAPH, DEFAULTS, **options)
    return result.depth, result.aliases, result.cost


def refused(source: str, limits: DocumentLimits = DEFAULTS, **options: Any) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        check_limits(parse_within_limits(source, limits), GRAPH, limits, **options)
    return caught.value


def passes(source: str, limits: DocumentLimits = DEFAULTS, **options: Any) -> None:
    check_limits(parse_within_limits(source, limits), GRAPH, limits, **options)


def parents(depth: int) -> str:
    """`service` with `parent` nested so the operation's depth is `depth` (>= 2)."""
    return '{ service(name: "x") { ' + "parent { " * (depth - 2) + "name" + " }" * depth


# Each limit: at the limit passes, one past it fails naming the limit.


def test_bytes_at_and_past_the_limit_counting_utf8() -> None:
    limits = DocumentLimits(max_bytes=40)
    at = "{ tags }" + " " * 32
    passes(at, limits)
    error = refused(at + " ", limits)
    assert (error.limit, error.maximum) == ("bytes", 40)
    # 8 + 2 + 15 two-byte characters = 40 bytes (25 characters) passes; one more refuses.
    passes("{ tags } #" + "é" * 15, limits)
    error = refused("{ tags } #" + "é" * 15 + "x", limits)
    assert (error.limit, error.actual) == ("bytes", 41)
    assert "41 exceeds the limit of 40 (max_bytes)" in str(error)


def test_tokens_at_and_past_the_limit() -> None:
    source = "{ " + " ".join(["tags"] * 8) + " }"  # 10 tokens
    passes(source, DocumentLimits(max_tokens=10))
    error = refused(source, DocumentLimits(max_tokens=9))
    assert (error.limit, error.maximum) == ("tokens", 9)
    assert str(error) == "document has more than 9 tokens, the limit (max_tokens)"


def test_comments_are_counted_apart_from_tokens() -> None:
    source = "{ tags }" + "\n# note" * 5
    passes(source, DocumentLimits(max_tokens=5))
    assert refused(source, DocumentLimits(max_tokens=4)).limit == "comments"


def test_directives_at_and_past_the_limit() -> None:
    source = "{ tags " + " ".join(["@include(if: true)"] * 3) + " }"
    limits = DocumentLimits(max_directives=3)
    check_limits(parse_within_limits(source, limits), GRAPH, limits)
    assert refused(source, DocumentLimits(max_directives=2)).limit == "directives"


def test_operations_fragments_and_name_length_at_and_past_the_limit() -> None:
    operations = " ".join(f"query Q{i}($v: Int = {{a: 1}}) {{ tags }}" for i in range(3))
    passes(operations, DocumentLimits(max_operations=3), operation_name="Q0")
    error = refused(operations, DocumentLimits(max_operations=2), operation_name="Q0")
    assert (error.limit, error.maximum) == ("operations", 2)
    assert str(error) == "document has more than 2 operations, the limit (max_operations)"
    fragments = '{ service(name: "fragment") { ...A ...B } } '
    fragments += "fragment A on Service { id } fragment B on Service { name }"
    passes(fragments, DocumentLimits(max_fragments=2, max_operations=1))
    error = refused(fragments, DocumentLimits(max_fragments=1))
    assert (error.limit, error.maximum) == ("fragments", 1)
    passes("{ " + "a" * 16 + ": tags }", DocumentLimits(max_name_length=16))
    error = refused("{ " + "a" * 17 + ": tags }", DocumentLimits(max_name_length=16))
    assert (error.limit, error.actual) == ("name_length", 17)
    assert str(error) == "name length 17 exceeds the limit of 16 (max_name_length)"


@pytest.mark.parametrize(
    "source",
    [
        "{ } }",
        '{ service(name: "x") { name } ',
        '{ service(name: "x) { name } }',
        '{ tags(a: """never closed) }',
        "{ tags } \x00",
    ],
)
def test_malformed_and_too_nested_documents_stay_syntax_errors(source: str) -> None:
    with pytest.raises(GraphQLError) as caught:
        parse_within_limits(source, DEFAULTS)
    assert not isinstance(caught.value, LimitExceeded)


def test_values_nested_past_64_are_refused_before_parsing() -> None:
    # The argument list, 61 + 1 objects and a list: 64.
    at = "{ consumers(filter: " + "{and: " * 61 + "{names: []}" + "}" * 61 + ") { name } }"
    passes(at)
    over = at.replace("[]", "[[]]")
    error = refused(over)
    assert (error.limit, error.maximum) == ("nesting", 64)
    assert str(error) == "a value nests lists or objects more than 64 deep"
    lists = "{ consumers(filter: {names: " + "[" * 300 + "]" * 300 + "}) { name } }"
    assert refused(lists).limit == "nesting"
    assert refused("query Q($v: [[Int]] = " + "[" * 70 + "]" * 70 + ") { tags }").limit == (
        "nesting"
    )


def test_depth_at_and_past_the_limit() -> None:
    passes(parents(12))
    with pytest.raises(LimitExceeded) as caught:
        check_limits(parse(parents(13)), GRAPH, DEFAULTS)
    error = caught.value
    assert (error.limit, error.actual, error.maximum) == ("depth", 13, 12)
    assert str(error) == "query depth 13 exceeds the limit of 12 (max_depth)"


def test_a_definitions_own_field_nesting_is_refused_before_parsing() -> None:
    # parents(14): 13 fields with a selection set, one inside the other. (parents(13)
    # has 12, its 13th field a leaf: the pre-count's lower bound is 12, and the parsed
    # document is refused below.)
    error = refused(parents(14))  # counted in the source
    assert str(error) == "a definition nests fields more than 12 deep, the limit (max_depth)"
    error = refused("{" * 300 + "}" * 300)
    assert error.limit == "depth"
    # Inline fragments (with or without a type, with directives) add no depth.
    inline = "... on Query { ... @include(if: true) { ... { " * 20 + "tags" + " } } }" * 20
    passes("{ " + inline + " }")
    # A field's arguments, object values and directives do not open selection sets.
    nested = 'consumers(filter: {and: {and: {names: [["x"]]}}}) @skip(if: false) { name }'
    passes("query Q($f: ConsumerFilter = {and: {and: {and: {}}}}) { " + nested + " }")
    interleaved = "... on Service { parent { " * 10 + "name" + " } }" * 10
    passes('{ service(name: "x") { ' + interleaved + " } }")  # depth 12
    with pytest.raises(LimitExceeded) as caught:  # the parsed document: the same figure
        check_limits(parse(parents(13)), GRAPH, DEFAULTS)
    assert (caught.value.limit, caught.value.actual) == ("depth", 13)


def test_depth_through_fragments_and_inline_fragments() -> None:
    # service(1) > F: parent(2) > inline > G: parent(3) > parent(4) > name(5)
    source = (
        '{ service(name: "x") { ...F } } '
        "fragment F on Service { parent { ... on Service { ...G } } } "
        "fragment G on Service { parent { parent { name } } }"
    )
    assert figures(source)[0] == 5
    passes(source, DocumentLimits(max_depth=5))
    assert refused(source, DocumentLimits(max_depth=4)).actual == 5


def test_aliases_at_and_past_the_limit() -> None:
    thirty = " ".join(f"a{i}: tags" for i in range(30))
    passes(f"{{ {thirty} }}")
    over = f"{{ {thirty} extra: tags }}"
    error = refused(over)  # counted in the source, before parsing
    assert (error.limit, error.maximum) == ("aliases", 30)
    assert str(error) == (
        "a definition has more than 30 aliases of its own, the limit (max_aliases)"
    )
    with pytest.raises(LimitExceeded) as caught:  # counted on the parsed document
        check_limits(parse(over), GRAPH, DEFAULTS)
    assert (caught.value.limit, caught.value.actual) == ("aliases", 31)
    assert str(caught.value) == "number of aliases 31 exceeds the limit of 30 (max_aliases)"
    # Variable definitions, argument names and object fields are not aliases.
    variables = ", ".join(f"$v{i}: Int = {i}" for i in range(40))
    passes(f"query Q({variables}) {{ tags }}")
    passes(f'{{ {thirty} consumers(limit: 1, filter: {{names: [["a"]], and: {{}}}}) {{ name }} }}')


def test_each_fragment_spread_counts_its_aliases_again() -> None:
    """The anchor bug: aliases hidden in a fragment spread many times."""
    fragment = "fragment F on Service { " + " ".join(f"x{i}: name" for i in range(10)) + " }"
    passes('{ service(name: "x") { ...F ...F ...F } } ' + fragment)
    error = refused('{ service(name: "x") { ...F ...F ...F ...F } } ' + fragment)
    assert (error.limit, error.actual) == ("aliases", 40)
    # Through a second level: G spreads F twice, the operation spreads G twice.
    nested = '{ service(name: "x") { ...G ...G } } fragment G on Service { ...F ...F } '
    assert refused(nested + fragment).actual == 40


def test_cost_at_and_past_the_limit() -> None:
    # services: 1 + 10 x (edges: 1 + node: 1 + name: 1) = 31
    source = "{ services(first: 10) { edges { node { name } } } }"
    assert figures(source)[2] == 31
    passes(source, DocumentLimits(max_cost=31))
    error = refused(source, DocumentLimits(max_cost=30))
    assert (error.limit, error.actual, error.maximum) == ("cost", 31, 30)
    assert str(error) == "query cost 31 exceeds the limit of 30 (max_cost)"


@pytest.mark.parametrize(
    ("source", "variables", "cost"),
    [
        ("{ tags }", None, 1),  # a list of scalars: nothing below it to multiply
        ("{ consumers { name } }", None, 101),  # a list without first/limit: x100
        ("{ consumers(limit: 5) { name } }", None, 6),
        ("{ consumers(limit: 0) { name } }", None, 1),
        ("{ matrix { name } }", None, 1 + 100 * 100),  # a list of lists: x100 per level
        ("{ services(first: 3) { nodes { children { id } } } }", None, 1 + 3 * (1 + 101)),
        ("{ services(last: 2, first: 7) { totalCount } }", None, 8),  # the largest
        ("{ services { nodes { id } } }", None, 1 + 50 * 2),  # a connection's default page
        ("query Q($n: Int = 7) { consumers(limit: $n) { name } }", None, 8),
        ("query Q($n: Int = 7) { consumers(limit: $n) { name } }", {"n": 3}, 4),
        ("query Q($n: Int) { consumers(limit: $n) { name } }", None, 101),
        ("query Q($n: Int) { consumers(limit: $n) { name } }", {"n": True}, 101),
        ("query Q($n: Int) { consumers(limit: $n) { name } }", {"n": "9"}, 101),
        ("query Q($n: Int) { consumers(limit: $n) { name } }", {"n": -1}, 101),
        ('{ consumers(limit: "x") { name } }', None, 101),
        ("{ consumers(limit: -5) { name } }", None, 101),
        ("{ consumers(limit: 1.5) { name } }", None, 101),
        ('{ search(text: "a") { ... on Service { name id } ... on Route { paths } } }', None, 301),
        ('{ service(name: "x") { routes(first: 4) { edges { node { id } } } } }', None, 1 + 1 + 12),
    ],
)
def test_cost_model(source: str, variables: dict[str, Any] | None, cost: int) -> None:
    assert figures(source, variables=variables)[2] == cost


def test_huge_page_sizes_saturate_instead_of_growing() -> None:
    error = refused("{ consumers(limit: " + "9" * 4000 + ") { services { name } } }")
    assert (error.limit, error.actual) == ("cost", SATURATED)
    assert f"of at least {SATURATED}" in str(error)
    big = {"n": 10**40}
    assert refused(
        "query Q($n: Int) { services(first: $n) { nodes { id } } }", variables=big
    ).actual == (SATURATED)


def test_the_operation_that_runs_is_measured() -> None:
    """Heavy is deep through a fragment, which only the expanded measure sees."""
    source = (
        'query Light { tags } query Heavy { service(name: "x") { ...Deep } } '
        "fragment Deep on Service { " + "parent { " * 11 + "name" + " }" * 11 + " }"
    )
    passes(source, operation_name="Light")
    assert refused(source, operation_name="Heavy").limit == "depth"
    assert refused(source).limit == "depth"  # ambiguous: every operation
    assert refused(source, operation_name="Missing").limit == "depth"
    # The source pre-count is per definition: an operation over a limit by itself
    # refuses the document, even when another operation is the one to run.
    alone = "query Light { tags } query Heavy " + parents(20)
    assert refused(alone, operation_name="Light").limit == "depth"
    check_limits(parse(alone), GRAPH, DEFAULTS, operation_name="Light")


def test_circular_fragments_are_refused_by_name() -> None:
    error = refused('{ service(name: "x") { ...A } } fragment A on Service { parent { ...A } }')
    assert error.limit == "fragments"
    assert "'A' spreads itself (A -> A)" in str(error)
    mutual = (
        '{ service(name: "x") { ...A } } fragment A on Service { ...B } '
        "fragment B on Service { id ...C } fragment C on Service { ...A }"
    )
    assert "A -> B -> C -> A" in str(refused(mutual))


def test_a_long_fragment_chain_and_cycle_do_not_recurse() -> None:
    chain = " ".join(f"fragment F{i} on Service {{ id ...F{i + 1} }}" for i in range(3000))
    document = parse(
        '{ service(name: "x") { ...F0 } } ' + chain + " fragment F3000 on Service { id }"
    )
    check_limits(document, GRAPH, DEFAULTS)  # depth 2: the chain adds no fields
    cycle = chain + " fragment F3000 on Service { ...F0 }"
    with pytest.raises(LimitExceeded, match="spreads itself"):
        check_limits(parse('{ service(name: "x") { ...F0 } } ' + cycle), GRAPH, DEFAULTS)


def test_a_spread_bomb_is_measured_without_expanding_it() -> None:
    """L0 spreads L1 ten times, ..., L39: 10**40 copies, measured once per fragment."""
    fragments = ["fragment L40 on Service { a: name }"]
    fragments += [
        f"fragment L{level} on Service {{ {' '.join([f'...L{level + 1}'] * 10)} }}"
        for level in range(40)
    ]
    source = '{ service(name: "x") { ...L0 } } ' + " ".join(fragments)
    # Refused before parsing: the pre-scan follows the spreads on its counts.
    error = refused(source, DocumentLimits(max_tokens=5000))
    assert error.limit == "aliases"
    # And the measure of the parsed document saturates instead of expanding it.
    with pytest.raises(LimitExceeded) as measured:
        check_limits(parse(source), GRAPH, DEFAULTS)
    assert (measured.value.limit, measured.value.actual) == ("aliases", SATURATED)


def test_invalid_documents_are_measured_without_crashing() -> None:
    source = (
        "{ unknown { deeper(first: 5) { x } } ...Missing ... on Nowhere { tags } "
        "service { routes { edges { node { nope } } } } } "
        "fragment Orphan on Nothing { a b c }"
    )
    depth, aliases, cost = figures(source)
    assert (depth, aliases) == (5, 0)  # service > routes > edges > node > nope
    assert cost > 0


def test_a_hand_built_ast_of_any_depth_is_measured_without_recursion() -> None:
    """Not reachable through the parser (it stops at 200), but check_limits must not
    depend on that: 20,000 nested fields."""
    node = FieldNode(name=NameNode(value="name"))
    for _ in range(20_000):
        node = FieldNode(
            name=NameNode(value="parent"), selection_set=SelectionSetNode(selections=(node,))
        )
        node = InlineFragmentNode(selection_set=SelectionSetNode(selections=(node,)))  # type: ignore[assignment]
    operation = OperationDefinitionNode(
        operation=OperationType.QUERY,
        selection_set=SelectionSetNode(selections=(node,)),
        variable_definitions=(),
        directives=(),
    )
    with pytest.raises(LimitExceeded) as caught:
        check_limits(DocumentNode(definitions=(operation,)), GRAPH, DEFAULTS)
    assert (caught.value.limit, caught.value.actual) == ("depth", 20_001)


def test_introspection_counts_but_the_standard_query_passes() -> None:
    for case in benign():
        if "IntrospectionQuery" in case.source:
            depth, _aliases, cost = figures(case.source)
            assert depth <= 8
            assert cost < 1000
    nested = (
        '{ __type(name: "Service") { fields { type { fields { type { fields { name } } } } } } }'
    )
    error = refused(nested)
    assert (error.limit, error.actual) == ("introspection", 3)
    assert "MaxIntrospectionDepthRule" in str(error)
    passes('{ __type(name: "Service") { fields { type { fields { name } } } } }')
    # ofType adds no depth, every other introspection field does.
    assert figures('{ __type(name: "S") { ofType { ofType { ofType { name } } } } }')[0] == 2
    assert figures("{ __schema { types { name } } }")[0] == 3


# Fragment expansion against a naive reference that expands spreads textually.


def reference(
    document: DocumentNode, graph: GraphQLSchema, variables: dict[str, int]
) -> tuple[int, int, int]:
    fragments = {d.name.value: d for d in document.definitions if d.kind == "fragment_definition"}

    def size(node: FieldNode, field_type: Any, parent: Any) -> int:
        for argument in node.arguments or ():
            if argument.name.value in ("first", "last", "limit"):
                value = argument.value
                return (
                    variables[value.name.value]
                    if isinstance(value, VariableNode)
                    else int(value.value)
                )  # type: ignore[attr-defined]
        levels = 0
        while isinstance(field_type, GraphQLNonNull | GraphQLList):
            levels += isinstance(field_type, GraphQLList)
            field_type = field_type.of_type
        connection = parent.name.endswith("Connection") and node.name.value in ("edges", "nodes")
        return 1 if connection else 100**levels

    def walk(selections: Any, parent: GraphQLObjectType) -> tuple[int, int, int]:
        depth = aliases = cost = 0
        for selection in selections:
            if isinstance(selection, FieldNode):
                field_type = parent.fields[selection.name.value].type
                if selection.selection_set:
                    d, a, c = walk(selection.selection_set.selections, get_named_type(field_type))
                    c *= size(selection, field_type, parent)
                else:
                    d = a = c = 0
                depth, aliases, cost = (
                    max(depth, d + 1),
                    aliases + a + bool(selection.alias),
                    cost + 1 + c,
                )
            else:
                inner = (
                    fragments[selection.name.value].selection_set
                    if isinstance(selection, FragmentSpreadNode)
                    else selection.selection_set
                )
                d, a, c = walk(inner.selections, parent)
                depth, aliases, cost = max(depth, d), aliases + a, cost + c
        return depth, aliases, cost

    operation = document.definitions[0]
    assert graph.query_type is not None
    return walk(operation.selection_set.selections, graph.query_type)  # type: ignore[attr-defined]


def random_document(rng: random.Random) -> tuple[str, dict[str, int]]:
    """An acyclic document on Service: fragment i spreads only fragments > i."""
    count = rng.randint(0, 5)

    def selections(level: int, own: int) -> str:
        parts = []
        for _ in range(rng.randint(1, 3)):
            alias = f"a{rng.randrange(99)}: " if rng.random() < 0.3 else ""
            roll = rng.random()
            if level < 3 and roll < 0.2:
                parts.append(f"{alias}parent {{ {selections(level + 1, own)} }}")
            elif level < 3 and roll < 0.35:
                parts.append(f"{alias}children {{ {selections(level + 1, own)} }}")
            elif level < 3 and roll < 0.5:
                first = rng.choice(["0", "1", "7", "$n"])
                parts.append(
                    f"{alias}routes(first: {first}) {{ edges {{ node {{ {alias}paths service {{ "
                    f"{selections(level + 1, own)} }} }} }} }}"
                )
            elif roll < 0.65 and own + 1 < count:
                parts.append(f"...F{rng.randint(own + 1, count - 1)}")
            elif level < 3 and roll < 0.75:
                parts.append(f"... on Service {{ {selections(level + 1, own)} }}")
            else:
                parts.append(f"{alias}{rng.choice(['id', 'name'])}")
        return " ".join(parts)

    fragments = " ".join(f"fragment F{i} on Service {{ {selections(0, i)} }}" for i in range(count))
    source = f'query Q($n: Int) {{ service(name: "x") {{ {selections(0, -1)} }} }} {fragments}'
    return source, {"n": rng.randint(0, 50)}


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_figures_match_a_naive_textual_expansion(seed: int) -> None:
    source, variables = random_document(random.Random(seed))
    document = parse(source)
    (result,) = measure(document, GRAPH, DEFAULTS, variables=variables)
    depth, aliases, cost = reference(document, GRAPH, variables)
    assert (result.depth, result.aliases, result.cost) == (
        depth,
        min(aliases, SATURATED),
        min(cost, SATURATED),
    )


def test_the_token_precount_agrees_with_graphql_cores_lexer() -> None:
    """The pre-count refuses what the lexer would count past the limit, never less."""
    sources = [case.source for case in benign()] + [
        "query Q($a: [Int] = [1, -2, 3.5e10, 0.25]) { tags } # c\n",
        '{ service(name: "es\\"c\\\\aped \\u00e9") { name } }',
        '{ service(name: """block "quoted" \\""" still""") { name } }',
        "{ tags, tags ,, tags }\ufeff",
    ]
    for source in sources:
        lexer = Lexer(Source(source))
        count = 0
        while lexer.advance().kind is not TokenKind.EOF:
            count += 1
        parse_within_limits(source, DocumentLimits(max_tokens=count))
        with pytest.raises(LimitExceeded, match="tokens"):
            parse_within_limits(source, DocumentLimits(max_tokens=count - 1))


# Settings.


def test_a_connection_without_first_counts_the_service_layers_default_page() -> None:
    assert DocumentLimits().default_page_size == DEFAULT_LIMIT


def test_settings_give_the_limits_and_refuse_non_positive_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert limits_from(Settings()) == DocumentLimits()
    monkeypatch.setenv("PORTCULLIS_GRAPHQL_MAX_DEPTH", "7")
    monkeypatch.setenv("PORTCULLIS_GRAPHQL_MAX_COST", "900")
    monkeypatch.setenv("PORTCULLIS_GRAPHQL_DEFAULT_LIST_SIZE", "20")
    limits = limits_from(Settings())
    assert (limits.max_depth, limits.max_cost, limits.default_list_size) == (7, 900, 20)
    monkeypatch.setenv("PORTCULLIS_GRAPHQL_MAX_ALIASES", "0")
    with pytest.raises(ValidationError, match="graphql_max_aliases"):
        Settings()
    with pytest.raises(ValueError, match="max_depth must be a positive integer"):
        DocumentLimits(max_depth=0)


# The adversarial corpus.


def test_the_adversarial_corpus_is_refused_without_a_crash() -> None:
    """Every hostile document is refused by a limit, the parser or validation; no other
    exception (RecursionError included) escapes. About 5 s on a busy 2-core machine."""
    cases = corpus()
    assert len(cases) >= 1000
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    for case in cases:
        outcome = admit(case, GRAPH, DEFAULTS)
        assert outcome != "admitted", case.source[:300]
        outcomes[case.family, outcome] += 1
    refused_by = {outcome for (_family, outcome) in outcomes}
    assert {
        "bytes",
        "tokens",
        "depth",
        "aliases",
        "cost",
        "fragments",
        "introspection",
    } <= refused_by


@pytest.mark.parametrize("case", benign(), ids=lambda case: case.source[:40])
def test_benign_documents_pass(case: Case) -> None:
    assert admit(case, GRAPH, DEFAULTS) == "admitted"


def test_spread_bombs_and_cycles_are_refused_before_parsing() -> None:
    """The pre-scan follows spreads on its own counts, so graphql-core never parses a
    document that is only hostile once its fragments are expanded."""
    bomb = ["fragment L12 on Service { name id }"] + [
        f"fragment L{level} on Service {{ {' '.join([f'...L{level + 1}'] * 3)} }}"
        for level in range(12)
    ]
    with pytest.raises(LimitExceeded) as cost:
        parse_within_limits('{ service(name: "x") { ...L0 } } ' + " ".join(bomb), DEFAULTS)
    assert cost.value.limit == "cost"
    assert "expands to" in str(cost.value)
    cycle = "{ tags ...A } fragment A on Query { ...B } fragment B on Query { ...A }"
    with pytest.raises(LimitExceeded) as circular:
        parse_within_limits(cycle, DEFAULTS)
    assert circular.value.limit == "fragments"
    assert "A -> B -> A" in str(circular.value)
    # Within the limits, the same shapes parse.
    fine = "{ tags ...A } fragment A on Query { ...B ...B } fragment B on Query { tags }"
    assert parse_within_limits(fine, DEFAULTS).definitions
