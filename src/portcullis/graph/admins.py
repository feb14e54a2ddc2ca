"""Admin access in the graph: who the caller is (`me`), admin users, admin API tokens,
the caller's own password change and the end of a login session.

Every field calls `services.admin_users.AdminAccessService` on the application's
authenticator (`GraphDeps.extras("authenticator")`, the one REST uses), so its rules
hold unchanged: nobody manages a role above their own, organization-limited admins see
and assign their own organization only, nobody changes their own access, a token never
has a permission its owner lacks. A new API token appears only in the payload of
`createApiToken`, as REST returns it once. Signing in and refreshing a session stay
REST's: they yield the bearer token every GraphQL request needs.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any

import strawberry
from pydantic import BaseModel, create_model
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import etag_field, mutation, or_none
from portcullis.graph.models import input_document, input_type, output_type, validated
from portcullis.services.admin_auth import AdminUser as AdminUserRecord
from portcullis.services.admin_auth import AuthService
from portcullis.services.admin_users import (
    TOKEN_SORT,
    USER_SORT,
    AdminAccessService,
    AdminUserCreate,
    AdminUserUpdate,
    ApiTokenCreate,
    ApiTokenOut,
    Me,
    PasswordChangeRequest,
    PasswordChangeResult,
    RefreshRequest,
)
from portcullis.services.pagination import paginate, parse_sort
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Permission, Role


def _fields_of(record: type[Any]) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(record)
    return [(f, hints[f.name]) for f in dataclasses.fields(record)]


def access_service(ctx: GraphContext) -> AdminAccessService:
    auth = ctx.deps.extras("authenticator")
    assert isinstance(auth, AuthService), "the application supplies its authenticator"
    return AdminAccessService(auth, ctx.state.audit)


# The admin user's representation (`AdminUser.as_json`, REST's response model), as a
# model derived from the dataclass: one definition of its fields.
_USER_FIELDS: dict[str, Any] = {f.name: (hint, ...) for f, hint in _fields_of(AdminUserRecord)}
AdminUserOut = create_model(
    "AdminUserOut", __doc__="An admin user (never their password)", **_USER_FIELDS
)
AdminUser: Any = output_type(AdminUserOut, "AdminUser", etag_field(etag_of))
MeType: Any = output_type(Me, "Me")
ApiToken: Any = output_type(ApiTokenOut, "ApiToken")
PasswordChanged: Any = output_type(PasswordChangeResult, "PasswordChanged")
AdminUserInput: Any = input_type(AdminUserCreate)
# Every member optional; only those given change (an explicit null clears the organization).
AdminUserPatch: Any = input_type(AdminUserUpdate)
ApiTokenInput: Any = input_type(ApiTokenCreate)


@strawberry.type(description="An admin user as the change left them")
class AdminUserPayload:
    admin_user: AdminUser


@strawberry.type(description="What a delete removed.")
class DeletedAdminUser:
    id: str


@strawberry.type(description="A new API token; `token` is shown only in this payload")
class ApiTokenCreated:
    api_token: ApiToken
    token: str


@strawberry.type(description="The API token revoked")
class RevokedApiToken:
    id: str


@strawberry.type(description="The login session of the refresh token has ended")
class LoggedOut:
    ended: bool


IfMatch = Annotated[
    str | None, strawberry.argument(description="The user's etag from a previous read")
]


def _sort_arg(allowed: tuple[str, ...]) -> Any:
    return strawberry.argument(
        description="Comma-separated fields, `-` for descending. Allowed: " + ", ".join(allowed)
    )


def _connection(
    items: list[dict[str, Any]],
    sort: str | None,
    allowed: Any,
    default: str,
    first: int | None,
    after: str | None,
) -> Any:
    keys = parse_sort(sort, allowed, default)
    page = paginate(items, lambda item: str(item["id"]), keys, limit=page_size(first), cursor=after)
    return page_connection(page)


class _RoleFilter(BaseModel):
    role: Role


async def me(info: Info[Any, Any]) -> Any:
    return Me.of(context_of(info).caller)


async def list_admin_users(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: Annotated[str | None, _sort_arg(USER_SORT)] = None,
    role: Annotated[str | None, strawberry.argument(description="Only users of this role")] = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ADMINS_READ)
    wanted = None if role is None else validated(_RoleFilter, {"role": role}).role
    users = await access_service(ctx).list_users(op, wanted)
    return _connection(users, sort, USER_SORT, "email", first, after)


async def get_admin_user(info: Info[Any, Any], id: strawberry.ID) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ADMINS_READ)
    found = await or_none(access_service(ctx).get_user(op, str(id)))
    return None if found is None else found.as_json()


async def list_api_tokens(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: Annotated[str | None, _sort_arg(TOKEN_SORT)] = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.TOKENS_READ)
    tokens = await access_service(ctx).list_tokens(op)
    return _connection(tokens, sort, TOKEN_SORT, "created_at", first, after)


# ---------------------------------------------------------------------------- mutations


async def create_admin_user(
    info: Info[Any, Any],
    input: Annotated[Any, strawberry.argument(graphql_type=AdminUserInput)],
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ADMINS_WRITE)
    user = await access_service(ctx).create_user(op, validated(AdminUserCreate, input))
    return AdminUserPayload(admin_user=user.as_json())


async def update_admin_user(
    info: Info[Any, Any],
    id: strawberry.ID,
    patch: Annotated[Any, strawberry.argument(graphql_type=AdminUserPatch)],
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ADMINS_WRITE)
    # Only the members given change (an explicit null clears the organization).
    body = validated(AdminUserUpdate, input_document(patch))
    user = await access_service(ctx).update_user(op, str(id), body, if_match=if_match)
    return AdminUserPayload(admin_user=user.as_json())


async def delete_admin_user(
    info: Info[Any, Any], id: strawberry.ID, if_match: IfMatch = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.ADMINS_WRITE)
    await access_service(ctx).delete_user(op, str(id), if_match=if_match)
    return DeletedAdminUser(id=str(id))


async def create_api_token(
    info: Info[Any, Any],
    input: Annotated[Any, strawberry.argument(graphql_type=ApiTokenInput)],
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.TOKENS_WRITE)
    token, secret = await access_service(ctx).create_token(op, validated(ApiTokenCreate, input))
    return ApiTokenCreated(api_token=token.as_json(), token=secret)


async def revoke_api_token(info: Info[Any, Any], id: strawberry.ID) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.TOKENS_WRITE)
    await access_service(ctx).revoke_token(op, str(id))
    return RevokedApiToken(id=str(id))


async def change_own_password(
    info: Info[Any, Any], current_password: str, new_password: str
) -> Any:
    ctx = context_of(info)
    op = await ctx.own_operation()
    body = validated(
        PasswordChangeRequest,
        {"current_password": current_password, "new_password": new_password},
    )
    change = await access_service(ctx).change_own_password(
        op, body.current_password.get_secret_value(), body.new_password.get_secret_value()
    )
    return PasswordChanged(
        api_tokens_revoked=change.api_tokens_revoked, sessions_ended=change.sessions_ended
    )


async def logout(info: Info[Any, Any], refresh_token: str) -> Any:
    ctx = context_of(info)
    body = validated(RefreshRequest, {"refresh_token": refresh_token})
    await access_service(ctx).logout(body.refresh_token)
    return LoggedOut(ended=True)


QUERIES: dict[str, Any] = {
    "me": strawberry.field(
        resolver=me, graphql_type=MeType, description="Who am I and what may I do"
    ),
    "adminUsers": strawberry.field(
        resolver=list_admin_users,
        graphql_type=Connection[AdminUser],
        description="Admin users the caller may see",
    ),
    "adminUser": strawberry.field(
        resolver=get_admin_user,
        graphql_type=AdminUser | None,
        description="One admin user by id; null when absent or not yours",
    ),
    "apiTokens": strawberry.field(
        resolver=list_api_tokens,
        graphql_type=Connection[ApiToken],
        description="API tokens (your own; owners and admins see those of the users they see)",
    ),
}

MUTATIONS: dict[str, Any] = {
    "createAdminUser": mutation(
        create_admin_user, "CreateAdminUserResult", AdminUserPayload, "Create an admin user"
    ),
    "updateAdminUser": mutation(
        update_admin_user,
        "UpdateAdminUserResult",
        AdminUserPayload,
        "Change an admin user's role, password (revoking their API tokens and sessions), "
        "organization or disabled flag",
    ),
    "deleteAdminUser": mutation(
        delete_admin_user,
        "DeleteAdminUserResult",
        DeletedAdminUser,
        "Delete an admin user (and their sessions and tokens)",
    ),
    "createApiToken": mutation(
        create_api_token,
        "CreateApiTokenResult",
        ApiTokenCreated,
        "Create an API token for the caller (the token is in this payload only)",
    ),
    "revokeApiToken": mutation(
        revoke_api_token, "RevokeApiTokenResult", RevokedApiToken, "Revoke an API token"
    ),
    "changeOwnPassword": mutation(
        change_own_password,
        "ChangeOwnPasswordResult",
        PasswordChanged,
        "Change your own password (needs the current one; revokes your API tokens and ends "
        "your other sessions)",
    ),
    "logout": mutation(
        logout, "LogoutResult", LoggedOut, "End the login session of a refresh token"
    ),
}
