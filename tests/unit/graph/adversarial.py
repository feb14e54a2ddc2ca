"""A deterministic corpus of hostile GraphQL documents, and benign ones, for the limits.

`corpus()` generates (seeded) at least 1,000 documents that must each be refused by
the admission pipeline (`admit`: parse within limits, check the limits, validate) with
a `LimitExceeded` or a `GraphQLError`, never another exception. `benign()` lists
documents that must pass all three. Used by tests/unit/graph/test_limits.py and by
benchmarks/graphql_limits_bench.py (the p99 rejection time).
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    build_schema,
    get_introspection_query,
    specified_rules,
    validate,
)
from graphql.validation import MaxIntrospectionDepthRule

from portcullis.graph.limits import DocumentLimits, LimitExceeded, check_limits, parse_within_limits

SDL = """
type Query {
  services(first: Int, last: Int, after: String, before: String): ServiceConnection!
  service(name: String!): Service
  node(id: ID!): Node
  search(text: String!, limit: Int): [SearchResult!]!
  consumers(limit: Int, filter: ConsumerFilter): [Consumer!]!
  tags: [String!]!
  matrix: [[Service!]!]!
}
type Mutation { createService(input: ServiceInput!): Service! }
input ServiceInput { name: String!, tags: [String!], nested: ServiceInput }
input ConsumerFilter { names: [[String!]], and: ConsumerFilter }
interface Node { id: ID! }
type Service implements Node {
  id: ID!
  name: String!
  parent: Service
  children: [Service!]!
  routes(first: Int, after: String): RouteConnection!
}
type Route implements Node { id: ID! paths: [String!]! service: Service! }
type Consumer implements Node { id: ID! name: String! services: [Service!]! }
union SearchResult = Service | Route | Consumer
type ServiceConnection {
  edges: [ServiceEdge!]!
  nodes: [Service!]!
  pageInfo: PageInfo!
  totalCount: Int!
}
type ServiceEdge { node: Service! cursor: String! }
type RouteConnection { edges: [RouteEdge!]! nodes: [Route!]! pageInfo: PageInfo! }
type RouteEdge { node: Route! cursor: String! }
type PageInfo { hasNextPage: Boolean! endCursor: String }
"""

RULES = (*specified_rules, MaxIntrospectionDepthRule)


def schema() -> GraphQLSchema:
    return build_schema(SDL)


@dataclass(frozen=True)
class Case:
    """One document: its family, source, operation name and variables."""

    family: str
    source: str
    operation_name: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


def admit(case: Case, graph: GraphQLSchema, limits: DocumentLimits) -> str:
    """Run the admission pipeline on one document: how it was refused ("bytes", "depth",
    ..., "syntax" for a parser error, "invalid" for validation), or "admitted".

    Only `LimitExceeded` and `GraphQLError` are outcomes; anything else propagates."""
    try:
        document = parse_within_limits(case.source, limits)
        check_limits(
            document,
            graph,
            limits,
            operation_name=case.operation_name,
            variables=case.variables,
        )
    except LimitExceeded as exceeded:
        return exceeded.limit
    except GraphQLError:
        return "syntax"
    if validate(graph, document, RULES):
        return "invalid"
    return "admitted"


def _name(rng: random.Random, length: int = 6) -> str:
    return rng.choice(string.ascii_letters) + "".join(
        rng.choices(string.ascii_letters + string.digits + "_", k=length - 1)
    )


def _circular(rng: random.Random) -> Iterator[Case]:
    # Direct: a fragment spreading itself, at the top or deep inside.
    for i in range(40):
        inner = "parent { " * (i % 5) + "...A" + " }" * (i % 5)
        yield Case(
            "circular",
            f'{{ service(name: "x") {{ ...A }} }} fragment A on Service {{ name {inner} }}',
        )
    # Mutual and long cycles, entered at a random point of the chain.
    for _ in range(80):
        length = rng.randint(2, 300)
        names = [f"F{i}_{_name(rng, 4)}" for i in range(length)]
        fragments = " ".join(
            f"fragment {name} on Service {{ id ...{names[(i + 1) % length]} }}"
            for i, name in enumerate(names)
        )
        entry = rng.choice(names)
        yield Case("circular", f'{{ service(name: "x") {{ ...{entry} }} }} {fragments}')
    # A cycle behind a bomb: the cycle is reached through many spreads.
    for i in range(30):
        fan = 2 + i % 8
        spreads = " ".join(["...B"] * fan)
        yield Case(
            "circular",
            f'{{ service(name: "x") {{ ...A }} }} fragment A on Service {{ {spreads} }} '
            f"fragment B on Service {{ parent {{ ...C }} }} fragment C on Service {{ ...B }}",
        )


def _alias_bombs(rng: random.Random) -> Iterator[Case]:
    for _ in range(60):
        count = rng.randint(31, 2000)
        fields = " ".join(f"a{i}: tags" for i in range(count))
        yield Case("alias-bomb", f"{{ {fields} }}")
    # Aliases hidden in a fragment spread many times (each spread counts them again).
    for _ in range(60):
        aliases = rng.randint(2, 15)
        spreads = 31 // aliases + rng.randint(1, 20)
        fragment = " ".join(f"x{i}: name" for i in range(aliases))
        body = " ".join(["...F"] * spreads)
        yield Case(
            "alias-bomb",
            f'{{ service(name: "x") {{ {body} }} }} fragment F on Service {{ {fragment} }}',
        )
    # Aliased expensive root fields.
    for i in range(30):
        count = 31 + i * 7
        fields = " ".join(
            f"s{j}: services(first: 100) {{ nodes {{ name }} }}" for j in range(count)
        )
        yield Case("alias-bomb", f"{{ {fields} }}")


def _spread_bombs(rng: random.Random) -> Iterator[Case]:
    for _ in range(150):
        fan = rng.randint(2, 10)
        # At least fan**levels > 50,000 copies (cost), up to astronomically many.
        levels = rng.randint(math.ceil(math.log(50_000, fan)), 40)
        aliased = rng.random() < 0.5
        leaf = "a: name" if aliased else "name"
        fragments = [f"fragment L{levels} on Service {{ {leaf} id }}"]
        for level in range(levels - 1, -1, -1):
            spreads = " ".join([f"...L{level + 1}"] * fan)
            fragments.append(f"fragment L{level} on Service {{ {spreads} }}")
        yield Case(
            "spread-bomb",
            '{ service(name: "x") { ...L0 } } ' + " ".join(fragments),
        )
    # A bomb through fields (each level a field: depth and cost both explode).
    for _ in range(40):
        levels = rng.randint(4, 12)
        fragments = [f"fragment L{levels} on Service {{ name }}"]
        for level in range(levels - 1, -1, -1):
            spreads = " ".join([f"...L{level + 1}"] * rng.randint(2, 6))
            fragments.append(f"fragment L{level} on Service {{ children {{ {spreads} }} }}")
        yield Case("spread-bomb", '{ service(name: "x") { ...L0 } } ' + " ".join(fragments))


def _deep(rng: random.Random) -> Iterator[Case]:
    for _ in range(50):
        depth = rng.randint(13, 190)
        yield Case(
            "deep",
            '{ service(name: "x") { ' + "parent { " * depth + "name" + " }" * depth + " } }",
        )
    # Through a chain of fragments, one level each.
    for _ in range(50):
        depth = rng.randint(12, 400)
        fragments = " ".join(
            f"fragment D{i} on Service {{ parent {{ ...D{i + 1} }} }}" for i in range(depth)
        )
        yield Case(
            "deep",
            f'{{ service(name: "x") {{ ...D0 }} }} {fragments}'
            f" fragment D{depth} on Service {{ id }}",
        )
    # Interleaving inline fragments, unions and fields.
    for _ in range(50):
        depth = rng.randint(13, 60)
        opening = ""
        for _ in range(depth):
            opening += rng.choice(
                ["parent { ", "... on Service { parent { ", "children { ", "... { parent { "]
            )
        closing = " }" * opening.count("{")
        yield Case("deep", '{ service(name: "x") { ' + opening + "id" + closing + " } }")
    # Inline fragments nested without fields: no depth, but deep syntax.
    for i in range(30):
        nesting = 100 + i * 3
        yield Case(
            "deep",
            "{ " + "... on Query { " * nesting + "tags" + " }" * nesting + " a: tags " * 31 + "}",
        )


def _huge(rng: random.Random) -> Iterator[Case]:
    for i in range(20):
        padding = " " * (100_000 + i * 1000)
        yield Case("huge", "{ tags }" + padding)
    for i in range(10):
        yield Case("huge", "{ tags } # " + "é" * (50_001 + i))  # over in bytes, not characters
    for _ in range(20):
        count = rng.randint(5_000, 40_000)
        yield Case("huge", "{ " + " ".join(["tags"] * count) + " }")  # tokens
    for _ in range(10):
        count = rng.randint(5_001, 20_000)
        yield Case("huge", "{ tags }\n" + "#\n" * count)  # comments
    for _ in range(10):
        yield Case("huge", "{ tags }" + "x" * rng.randint(100_001, 2_000_000))


def _big_lists(rng: random.Random) -> Iterator[Case]:
    for _ in range(40):
        first = rng.choice([1_000_000, 10**9, 2**31 - 1, 501, 50_000])
        yield Case(
            "big-list",
            f"{{ services(first: {first}) {{ edges {{ node {{ name"
            " routes(first: 100) { nodes { id } } } } } }",
        )
    for _ in range(20):
        digits = rng.randint(19, 10_000)
        yield Case(
            "big-list",
            f"{{ consumers(limit: {'9' * digits}) {{ services {{ name }} }} }}",
        )
    for _ in range(20):
        value = rng.choice([10**6, 10**30, 2**63])
        yield Case(
            "big-list",
            "query Q($n: Int) { services(first: $n) { nodes { children { name } } } }",
            variables={"n": value},
        )
    for _ in range(10):
        yield Case(
            "big-list",
            "query Q($n: Int = 1000000) { consumers(limit: $n) { services { name } } }",
        )
    # Unbounded lists nested in each other (default_list_size per level).
    for i in range(20):
        levels = 3 + i % 5
        yield Case(
            "big-list",
            '{ service(name: "x") { ' + "children { " * levels + "name" + " }" * levels + " } }",
        )
    yield Case("big-list", "{ matrix { children { name } } }")


def _many_operations(rng: random.Random) -> Iterator[Case]:
    for _ in range(30):
        count = rng.randint(2, 400)
        yield Case("operations", " ".join(["{ tags }"] * count))  # anonymous: ambiguous
    for _ in range(30):
        count = rng.randint(2, 300)
        name = _name(rng)
        yield Case(
            "operations",
            " ".join(f"query {name} {{ tags }}" for _ in range(count)),
            operation_name=name,
        )  # the same name again and again
    for _ in range(20):
        count = rng.randint(2, 200)
        bomb = " ".join(["a: name"] * 40)
        operations = " ".join(
            f'query Q{i} {{ service(name: "x") {{ ...F }} }}' for i in range(count)
        )
        yield Case(
            "operations",
            f"{operations} fragment F on Service {{ {bomb} }}",
            operation_name=f"Q{rng.randrange(count)}",
        )
    for _ in range(20):
        count = rng.randint(2, 300)
        operations = " ".join(f"query Q{i} {{ tags }}" for i in range(count))
        heavy = "query Heavy { " + "parent { " * 20 + " }" * 20 + " }"
        yield Case("operations", f"{operations} {heavy}")  # no name: all are checked


def _directives(rng: random.Random) -> Iterator[Case]:
    for _ in range(40):
        count = rng.randint(2, 1200)
        spam = " ".join(["@include(if: true)"] * count)
        yield Case("directives", f"{{ tags {spam} }}")
    for _ in range(30):
        count = rng.randint(1, 1200)
        spam = " ".join(f"@{_name(rng)}(a: 1)" for _ in range(count))
        yield Case("directives", f"{{ tags {spam} }}")
    for _ in range(20):
        count = rng.randint(200, 2000)
        spam = " ".join(["@skip(if: false)"] * count)
        yield Case("directives", f"query Q {spam} {{ tags }}")


def _garbage(rng: random.Random) -> Iterator[Case]:
    for _ in range(40):
        yield Case("garbage", '{ service(name: "' + _name(rng, rng.randint(1, 5000)))
    for _ in range(20):
        yield Case("garbage", '{ service(name: """' + "x" * rng.randint(1, 5000))
    for _ in range(50):
        size = rng.randint(1, 3000)
        yield Case("garbage", "".join(chr(rng.randrange(0, 0x3000)) for _ in range(size)))
    for _ in range(30):
        size = rng.randint(1, 2000)
        yield Case("garbage", "".join(rng.choices("{}()[]:$@!.=,\"'#\\ \n", k=size)))
    for _ in range(20):
        depth = rng.randint(1, 5000)
        yield Case("garbage", "{" * depth)
    for _ in range(10):
        yield Case("garbage", "{ tags }\x00" + "\ud800" * rng.randint(1, 100))
    for text in ("", " ", "#", "query", "{ } }", "fragment F on Service { id }", "...", "}"):
        yield Case("garbage", text)


def _nested_values(rng: random.Random) -> Iterator[Case]:
    for _ in range(40):
        depth = rng.randint(20, 5000)
        value = "[" * depth + '"x"' + "]" * depth
        yield Case("nested-values", f"{{ consumers(filter: {{names: {value}}}) {{ name }} }}")
    for _ in range(30):
        depth = rng.randint(201, 3000)  # past the parser's nesting limit (200)
        value = "{and: " * depth + "{}" + "}" * depth
        yield Case("nested-values", f"{{ consumers(filter: {value}) {{ name }} }}")
    for _ in range(20):
        depth = rng.randint(20, 190)
        value = "[" * depth + "1" + "]" * depth
        yield Case("nested-values", f"query Q($v: [Int] = {value}) {{ tags }}")
    for i in range(10):
        depth = 50 + i * 14
        value = "[" * depth + "]" * depth
        yield Case(
            "nested-values",
            'mutation { createService(input: {name: "x", tags: ' + value + "}) { id } }",
        )


def _long_names(rng: random.Random) -> Iterator[Case]:
    for _ in range(20):
        yield Case("long-names", "{ " + _name(rng, rng.randint(10_000, 99_000)) + " }")
    for _ in range(10):
        long = _name(rng, rng.randint(3_000, 3_200))
        aliases = " ".join([f"{long}: tags"] * 31)
        yield Case("long-names", f"query {long} {{ {aliases} }}", operation_name=long)
    for _ in range(10):
        long = _name(rng, rng.randint(10_000, 90_000))
        yield Case("long-names", f'{{ service(name: "x") {{ ...{long} }} }}')
    for _ in range(10):
        yield Case("long-names", "{ " + _name(rng, rng.randint(100_001, 500_000)) + " }")


def _introspection(rng: random.Random) -> Iterator[Case]:
    for i in range(25):
        levels = 3 + i % 6
        body = "fields { type { " * levels + "name" + " } }" * levels
        yield Case("introspection", f'{{ __type(name: "Service") {{ {body} }} }}')
    for i in range(15):
        levels = 2 + i % 4
        body = "possibleTypes { interfaces { " * levels + "name" + " } }" * levels
        yield Case("introspection", f"{{ __schema {{ types {{ {body} }} }} }}")
    for i in range(10):
        count = 31 + i
        fields = " ".join(f"s{j}: __schema {{ types {{ name }} }}" for j in range(count))
        yield Case("introspection", f"{{ {fields} }}")
    yield Case(
        "introspection",
        "{ __schema { types { ...T } } } fragment T on __Type { fields { type { ...U } } } "
        "fragment U on __Type { fields { type { ...T } } }",
    )
    yield Case(
        "introspection",
        "{ __schema { types { ...T } } } fragment T on __Type { fields { type { ...U } } } "
        "fragment U on __Type { inputFields { type { ...V } } } "
        "fragment V on __Type { interfaces { name } }",
    )


FAMILIES: tuple[Callable[[random.Random], Iterator[Case]], ...] = (
    _circular,
    _alias_bombs,
    _spread_bombs,
    _deep,
    _huge,
    _big_lists,
    _many_operations,
    _directives,
    _garbage,
    _nested_values,
    _long_names,
    _introspection,
)


def corpus(seed: int = 16) -> list[Case]:
    """The hostile documents, the same for the same seed."""
    rng = random.Random(seed)
    return [case for family in FAMILIES for case in family(rng)]


def benign() -> list[Case]:
    """Documents every client may send: each passes parsing, the limits and validation."""
    deep = "parent { " * 10 + "name" + " }" * 10  # depth 12 with service and its parent
    thirty = " ".join(f"a{i}: name" for i in range(30))
    fifteen = " ".join(f"a{i}: name" for i in range(15))  # spread twice: 30 aliases
    sources = [
        "{ tags }",
        "{ services(first: 50) { edges { cursor node { name routes(first: 10) {"
        " nodes { paths } } } } pageInfo { hasNextPage endCursor } totalCount } }",
        "{ services(first: 20) { nodes { id name } } }",
        f'{{ service(name: "x") {{ {deep} }} }}',
        f'{{ service(name: "x") {{ {thirty} }} }}',
        f'{{ service(name: "x") {{ ...A ...A }} }} fragment A on Service {{ {fifteen} }}',
        '{ search(text: "a") { __typename ... on Service { name } ... on Route { paths }'
        " ... on Consumer { name } } }",
        '{ node(id: "1") { id ... on Service { routes(first: 5) { edges { node { paths } } } } } }',
        "query Q($n: Int = 10) { consumers(limit: $n) { name services { name } } }",
        'mutation { createService(input: {name: "x", tags: ["a", "b"]}) { id name } }',
        get_introspection_query(),
        get_introspection_query(
            descriptions=True,
            specified_by_url=True,
            directive_is_repeatable=True,
            schema_description=True,
            input_value_deprecation=True,
        ),
        '{ __type(name: "Service") { name fields { name type { name kind ofType { name } } } } }',
        "{ __typename }",
        "{ consumers(limit: 100) { name services { name } } }",
        "{ tags # a comment\n}",
        "{ services(first: 10) { ...Page } }"
        " fragment Page on ServiceConnection { edges { node { ...S } } }"
        " fragment S on Service { name routes(first: 10) { nodes { ...R } } }"
        " fragment R on Route { paths service { name } }",
        "{}",
    ]
    return [
        *(Case("benign", source) for source in sources),
        Case(
            "benign",
            "query Q($n: Int) { services(first: $n) { nodes { name children { id } } } }",
            variables={"n": 25},
        ),
        Case(
            "benign",
            "query A { tags } query B { services(first: 1) { totalCount } }",
            operation_name="A",
        ),
    ]
