"""Organizations (tenants) in the graph: list, look up, create, rename, delete.

Every field calls `services.organizations.OrganizationService` with the caller's
operation, as REST does: organization-limited callers see only their own and can't
create any; a rename relabels the organization's gateway entities in the same
transaction; an organization with users or entities can't be deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import etag_field, mutation, or_none
from portcullis.graph.models import output_type, validated
from portcullis.services.organizations import (
    ORG_SORT,
    OrganizationIn,
    OrganizationOut,
    OrganizationService,
)
from portcullis.services.pagination import paginate, parse_sort
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Permission


def organization_service(ctx: GraphContext) -> OrganizationService:
    return OrganizationService(ctx.state.engine, ctx.editor)


Organization: Any = output_type(
    OrganizationOut,
    "Organization",
    etag_field(etag_of),
)


@strawberry.type(description="An organization as the change left it")
class OrganizationPayload:
    organization: Organization


@strawberry.type(description="What a delete removed.")
class DeletedOrganization:
    id: str


IfMatch = Annotated[
    str | None,
    strawberry.argument(description="The organization's etag from a previous read"),
]
NameArg = Annotated[
    str,
    strawberry.argument(
        description="Also the value gateway entities put in their `organization` field"
    ),
]


async def list_organizations(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: Annotated[
        str | None,
        strawberry.argument(description="name, created_at (comma-separated; `-` descending)"),
    ] = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ORGS_READ)
    keys = parse_sort(sort, ORG_SORT, "name")
    items = await organization_service(ctx).list(op)
    page = paginate(items, lambda item: str(item["id"]), keys, limit=page_size(first), cursor=after)
    return page_connection(page)


async def get_organization(info: Info[Any, Any], id: strawberry.ID) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ORGS_READ)
    return await or_none(organization_service(ctx).get(op, str(id)))


async def create_organization(info: Info[Any, Any], name: NameArg) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ORGS_WRITE)
    body = validated(OrganizationIn, {"name": name})
    return OrganizationPayload(organization=await organization_service(ctx).create(op, body.name))


async def rename_organization(
    info: Info[Any, Any], id: strawberry.ID, name: NameArg, if_match: IfMatch = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ORGS_WRITE)
    body = validated(OrganizationIn, {"name": name})
    renamed = await organization_service(ctx).rename(op, str(id), body.name, if_match=if_match)
    return OrganizationPayload(organization=renamed)


async def delete_organization(
    info: Info[Any, Any], id: strawberry.ID, if_match: IfMatch = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ORGS_WRITE)
    await organization_service(ctx).delete(op, str(id), if_match=if_match)
    return DeletedOrganization(id=str(id))


QUERIES: dict[str, Any] = {
    "organizations": strawberry.field(
        resolver=list_organizations,
        graphql_type=Connection[Organization],
        description="Organizations the caller may see",
    ),
    "organization": strawberry.field(
        resolver=get_organization,
        graphql_type=Organization | None,
        description="One organization by id; null when absent or not yours",
    ),
}


MUTATIONS: dict[str, Any] = {
    "createOrganization": mutation(
        create_organization,
        "CreateOrganizationResult",
        OrganizationPayload,
        "Create an organization",
    ),
    "renameOrganization": mutation(
        rename_organization,
        "RenameOrganizationResult",
        OrganizationPayload,
        "Rename an organization (and relabel its gateway entities)",
    ),
    "deleteOrganization": mutation(
        delete_organization,
        "DeleteOrganizationResult",
        DeletedOrganization,
        "Delete an organization that has no users and no gateway entities",
    ),
}
