"""Gateway entities in the graph: services, upstreams and their targets, routes,
consumers, plugin instances, plans, boosts and overrides.

One factory gives every kind the same fields REST gives it (`services.entities`
holds the rules): a connection with REST's filters, tags and sort, a lookup by id,
and create / replace / update (a typed JSON Merge Patch) / delete mutations with
`ifMatch`, each answering with its payload or a problem. Entities also link to
each other (a route's service, a service's routes and plugins, an upstream's
targets) by resolving within the caller's organization, as REST does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

import strawberry
from pydantic import ValidationError
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import context_of
from portcullis.graph.models import input_document, input_type, output_type
from portcullis.graph.problems import problem_of, result_union
from portcullis.model.plugins.registry import SCHEMAS
from portcullis.services.entities import Entity, EntityQuery, EntityService
from portcullis.services.entity_kinds import (
    CONSUMERS,
    KINDS,
    OVERRIDES,
    PLANS,
    PLUGINS,
    ROUTES,
    SERVICES,
    TARGETS,
    UPSTREAMS,
    Kind,
)
from portcullis.services.errors import NOT_FOUND, ServiceError, errors_from_pydantic, invalid
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Permission


@strawberry.type(description="What a delete removed.")
class Deleted:
    id: str


@dataclass(slots=True)
class KindFields:
    """The graph fields of one kind: its node type and its root query and mutation
    fields."""

    kind: Kind
    node: type[Any]
    queries: dict[str, Any] = field(default_factory=dict)
    mutations: dict[str, Any] = field(default_factory=dict)


def _camel(name: str) -> str:
    head, *rest = name.replace("-", "_").split("_")
    return head + "".join(p.title() for p in rest)


def _pascal(name: str) -> str:
    camel = _camel(name)
    return camel[:1].upper() + camel[1:]


def _id_and_etag(kind: Kind) -> dict[str, tuple[Any, Any]]:
    """The `id` and `etag` fields every entity node has, computed from its
    representation (the dict the service returned, never copied)."""
    identity = kind.identity_fields[0]

    def id_(self: Any) -> strawberry.ID:
        return strawberry.ID(str(self.get("id") or self[identity]))

    def etag(self: Any) -> str:
        return etag_of(self)

    id_.__annotations__ = {"self": Any, "return": strawberry.ID}
    etag.__annotations__ = {"self": Any, "return": str}
    return {
        "id": (strawberry.ID, strawberry.field(resolver=id_, description="The id")),
        "etag": (
            str,
            strawberry.field(resolver=etag, description="ETag of this representation (ifMatch)"),
        ),
    }


def entity_service(info: Info[Any, Any], kind: Kind, nested: bool = False) -> EntityService:
    context = context_of(info)
    state = context.state
    collection = state.collection(kind, nested=nested)
    return EntityService(collection, context.editor, state.engine, state.secret)


def _validated(kind: Kind, value: Any) -> dict[str, Any]:
    """A typed input as the JSON document REST would have received, validated by the
    kind's model exactly as REST validates its body."""
    document = input_document(value)
    try:
        return kind.model.model_validate(document).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid(errors_from_pydantic(exc.errors())) from exc


def _to_one(field: str, target: Kind, description: str) -> tuple[Any, Any]:
    """A link to the entity of `target` named in this entity's `field` (null when none
    or not visible to the caller)."""

    async def resolve(self: Any, info: Info[Any, Any]) -> Any:
        name = self.get(field)
        if not name:
            return None
        op = await context_of(info).operation(Permission.CONFIG_READ)
        try:
            return (await entity_service(info, target).get(op, str(name))).representation
        except ServiceError as exc:
            if exc.kind is NOT_FOUND:
                return None
            raise

    node = _pascal(target.singular)
    resolve.__annotations__ = {"self": Any, "info": Info, "return": f"{node} | None"}
    return (f"{node} | None", strawberry.field(resolver=resolve, description=description))


def _to_many(target: Kind, on: str, description: str) -> tuple[Any, Any]:
    """The entities of `target` whose `on` field names this entity, as a connection."""

    async def resolve(
        self: Any, info: Info[Any, Any], first: int | None = None, after: str | None = None
    ) -> Any:
        op = await context_of(info).operation(Permission.CONFIG_READ)
        query = EntityQuery(page_size(first), after, None, None, {on: str(self["name"])})
        return page_connection(await entity_service(info, target).list(op, query))

    node = _pascal(target.singular)
    resolve.__annotations__ = {
        "self": Any,
        "info": Info,
        "first": int | None,
        "after": str | None,
        "return": f"Connection[{node}]",
    }
    return (f"Connection[{node}]", strawberry.field(resolver=resolve, description=description))


class _PluginSettings(dict[str, Any]):
    """A plugin instance's config, tagged with its plugin (to pick its union member)."""

    plugin: str = ""


def _plugin_settings() -> tuple[Any, Any]:
    """`settings`: the instance's config as its plugin's own type (a union over every
    plugin), read from the validated config document."""
    members = []
    for plugin, model in SCHEMAS.items():
        member = output_type(model)
        member.__strawberry_definition__.is_type_of = lambda obj, _info, plugin=plugin: (
            isinstance(obj, _PluginSettings) and obj.plugin == plugin
        )
        members.append(member)
    union: Any = Annotated[Union[tuple(members)], strawberry.union("PluginSettings")]  # noqa: UP007

    def resolve(self: Any) -> Any:
        model = SCHEMAS.get(str(self.get("name")))
        if model is None:
            return None
        # The stored config is valid; the model fills the defaults the type shows.
        try:
            config = model.model_validate(self.get("config") or {})
        except ValidationError:
            return None
        settings = _PluginSettings(config.model_dump(mode="json"))
        settings.plugin = str(self["name"])
        return settings

    resolve.__annotations__ = {"self": Any, "return": union | None}
    return (
        union | None,
        strawberry.field(
            resolver=resolve,
            description="The config as its plugin's type (defaults filled in); `config` "
            "holds the same as JSON",
        ),
    )


def _relations(kind: Kind) -> dict[str, tuple[Any, Any]]:
    """Links between entities, resolved within the caller's organization (config reads
    only: the config is in memory, so no loader is needed)."""
    if kind is SERVICES:
        return {
            "upstream_entity": _to_one("upstream", UPSTREAMS, "The upstream it balances over"),
            "routes": _to_many(ROUTES, "service", "Routes to this service"),
            "plugins": _to_many(PLUGINS, "service", "Plugin instances scoped to this service"),
        }
    if kind is ROUTES:
        return {
            "service_entity": _to_one("service", SERVICES, "The service it routes to"),
            "plugins": _to_many(PLUGINS, "route", "Plugin instances scoped to this route"),
        }
    if kind is PLUGINS:
        return {
            "service_entity": _to_one("service", SERVICES, "The service it is scoped to"),
            "route_entity": _to_one("route", ROUTES, "The route it is scoped to"),
            "settings": _plugin_settings(),
        }
    if kind is CONSUMERS:
        return {"plan_entity": _to_one("plan", PLANS, "The consumer's traffic plan")}
    if kind is OVERRIDES:
        return {"consumer_entity": _to_one("consumer", CONSUMERS, "The consumer it applies to")}
    return {}


def _filter_input(kind: Kind) -> type[Any]:
    annotations: dict[str, Any] = dict.fromkeys(kind.filter_fields, str | None)
    annotations["tags"] = list[str] | None
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    for name in annotations:
        namespace[name] = strawberry.field(
            default=None,
            description="Items carrying every one of these tags"
            if name == "tags"
            else f"Only items whose {name} is this",
        )
    cls = type(f"{_pascal(kind.singular)}Filter", (), namespace)
    return strawberry.input(cls, description=f"Filters on {kind.title.lower()}, as REST's")


def _typed(fn: Any, annotations: dict[str, Any]) -> None:
    """Give a resolver made per kind its GraphQL signature: only the parameters named in
    `annotations`, keyword-only, typed; `upstream` is required where it is a `str`."""
    signature = inspect.signature(fn)
    params = []
    for p in signature.parameters.values():
        if p.name not in annotations:
            continue
        default = inspect.Parameter.empty if annotations[p.name] is str else p.default
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if p.name == "info" else p.KEYWORD_ONLY
        params.append(p.replace(annotation=annotations[p.name], default=default, kind=kind))
    fn.__signature__ = signature.replace(parameters=params, return_annotation=annotations["return"])
    fn.__annotations__ = annotations


def build_kind(
    kind: Kind, *, nested: bool = False, links: Mapping[str, tuple[Any, Any]] | None = None
) -> KindFields:
    """The node type and root fields of one kind (`nested`: targets, under an upstream;
    `links`: more node fields, name: (annotation, strawberry field), from other areas)."""
    name = _pascal(kind.singular)
    node = output_type(
        kind.model, name, {**_id_and_etag(kind), **_relations(kind), **(links or {})}
    )
    # Relations name node types as strings, resolved in this module when the schema is
    # built (when every kind's type exists).
    globals()[name] = node
    fields = KindFields(kind, node)
    filter_input = _filter_input(kind)
    create_input = input_type(kind.model)
    patch_input = input_type(kind.model, patch=True)
    payload = strawberry.type(
        type(f"{name}Payload", (), {"__annotations__": {kind.singular: node}}),
        description=f"The {kind.singular} as the change left it",
    )
    single = _camel(kind.singular)
    plural = _camel(kind.collection)

    async def list_(
        info: Info[Any, Any],
        upstream: str | None = None,
        first: int | None = None,
        after: str | None = None,
        sort: str | None = None,
        filter: Any = None,
    ) -> Connection[Any]:
        op = await context_of(info).operation(Permission.CONFIG_READ)
        given = input_document(filter) if filter is not None else {}
        tags = given.pop("tags", None)
        query = EntityQuery(
            page_size(first),
            after,
            sort,
            ",".join(tags) if tags else None,
            {k: str(v) for k, v in given.items() if v is not None},
        )
        page = await entity_service(info, kind, nested).list(op, query, upstream)
        return page_connection(page)

    async def get(info: Info[Any, Any], id: strawberry.ID, upstream: str | None = None) -> Any:
        op = await context_of(info).operation(Permission.CONFIG_READ)
        try:
            entity = await entity_service(info, kind, nested).get(op, str(id), upstream)
        except ServiceError as exc:
            if exc.kind is NOT_FOUND:
                return None
            raise
        return entity.representation

    def shaped(entity: Entity) -> Any:
        return payload(**{kind.singular: entity.representation})

    async def create(info: Info[Any, Any], input: Any, upstream: str | None = None) -> Any:
        try:
            op = await context_of(info).operation(Permission.CONFIG_WRITE)
            service = entity_service(info, kind, nested)
            return shaped(await service.create(op, _validated(kind, input), upstream))
        except ServiceError as exc:
            return problem_of(exc)

    async def replace(
        info: Info[Any, Any],
        id: strawberry.ID,
        input: Any,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> Any:
        try:
            op = await context_of(info).operation(Permission.CONFIG_WRITE)
            service = entity_service(info, kind, nested)
            entity = await service.replace(
                op, str(id), _validated(kind, input), if_match=if_match, upstream=upstream
            )
            return shaped(entity)
        except ServiceError as exc:
            return problem_of(exc)

    async def update(
        info: Info[Any, Any],
        id: strawberry.ID,
        patch: Any,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> Any:
        try:
            op = await context_of(info).operation(Permission.CONFIG_WRITE)
            service = entity_service(info, kind, nested)
            entity = await service.patch(
                op, str(id), input_document(patch), if_match=if_match, upstream=upstream
            )
            return shaped(entity)
        except ServiceError as exc:
            return problem_of(exc)

    async def delete(
        info: Info[Any, Any],
        id: strawberry.ID,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> Any:
        try:
            op = await context_of(info).operation(Permission.CONFIG_WRITE)
            service = entity_service(info, kind, nested)
            await service.delete(op, str(id), if_match=if_match, upstream=upstream)
            return Deleted(id=str(id))
        except ServiceError as exc:
            return problem_of(exc)

    upstream_arg = {"upstream": str} if nested else {}
    _typed(
        list_,
        {
            "info": Info,
            **upstream_arg,
            "first": int | None,
            "after": str | None,
            "sort": str | None,
            "filter": filter_input | None,
            "return": Connection[node],  # type: ignore[valid-type]
        },
    )
    _typed(get, {"info": Info, "id": strawberry.ID, **upstream_arg, "return": node | None})
    results = {
        verb: result_union(f"{_pascal(verb)}{name}Result", payload)
        for verb in ("create", "replace", "update")
    }
    _typed(
        create,
        {
            "info": Info,
            "input": create_input,
            **upstream_arg,
            "return": results["create"],
        },
    )
    _typed(
        replace,
        {
            "info": Info,
            "id": strawberry.ID,
            "input": create_input,
            "if_match": str | None,
            **upstream_arg,
            "return": results["replace"],
        },
    )
    _typed(
        update,
        {
            "info": Info,
            "id": strawberry.ID,
            "patch": patch_input,
            "if_match": str | None,
            **upstream_arg,
            "return": results["update"],
        },
    )
    _typed(
        delete,
        {
            "info": Info,
            "id": strawberry.ID,
            "if_match": str | None,
            **upstream_arg,
            "return": result_union(f"Delete{name}Result", Deleted),
        },
    )
    sort_doc = "Comma-separated fields, `-` for descending. Allowed: " + ", ".join(kind.sort_fields)
    fields.queries[plural] = strawberry.field(
        resolver=list_,
        description=f"{kind.title} the caller may see (sort: {sort_doc})",
    )
    fields.queries[single] = strawberry.field(
        resolver=get, description=f"One {kind.singular} by id; null when absent or not yours"
    )
    fields.mutations[f"create{name}"] = strawberry.mutation(
        resolver=create, description=f"Create a {kind.singular}"
    )
    fields.mutations[f"replace{name}"] = strawberry.mutation(
        resolver=replace, description=f"Replace a {kind.singular}"
    )
    fields.mutations[f"update{name}"] = strawberry.mutation(
        resolver=update,
        description=f"Update a {kind.singular} (JSON Merge Patch: null removes a member)",
    )
    fields.mutations[f"delete{name}"] = strawberry.mutation(
        resolver=delete, description=f"Delete a {kind.singular}"
    )
    return fields


def build_entities(
    links: Mapping[str, Mapping[str, tuple[Any, Any]]] | None = None,
) -> list[KindFields]:
    """Every kind's fields. Targets first: their node type (with id and ETag) is the
    one an upstream's embedded `targets` list uses too. `links`: more node fields per
    kind (by collection name, e.g. a consumer's keys), from the areas that own them."""
    links = links or {}
    built = [build_kind(TARGETS, nested=True, links=links.get(TARGETS.collection))]
    built += [build_kind(kind, links=links.get(kind.collection)) for kind in KINDS]
    return built


__all__ = ["PLUGINS", "ROUTES", "SERVICES", "build_entities", "entity_service"]
