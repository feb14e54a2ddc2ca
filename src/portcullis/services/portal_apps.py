"""Applications of the developer portal: registration, access requests and their
approval, API keys and OAuth client credentials (docs/decisions/034-developer-portal.md).

Every developer-facing method takes a `DeveloperContext` and reads the application
with `team_id IN (the developer's teams)` in the query itself: another team's
application (and so its requests, keys and clients) is "not found", never read.

An application becomes a gateway consumer, `app-<application id>`, in the API's
organization, when its first access request is approved (by an operator, or at once
for an API whose `access.approval` is `automatic`). The consumer is written through
`ConfigEditor` like every admin edit (validated, versioned, audited): it gets the
group `portal-<api>` per approved API (an acl plugin on the API's routes can require
it) and the requested plan as its `plan`. An application works with the APIs of one
organization and one plan, since it is one consumer. Keys are the gateway's API keys
(services/keys.py; sandbox keys are `development` keys) and OAuth clients the
gateway's (services/oauth_clients.py): each key or client must be the application
consumer's, or it is "not found".
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.bus import record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.key_admin import CreatedKey, KeyInfo, KeySpec, Rotation
from portcullis.identity.oauth_clients import OAuthClient
from portcullis.identity.oauth_server import OAuthServer
from portcullis.model.apis import Api
from portcullis.model.config import Consumer
from portcullis.services.config_editor import ConfigEditor, ConfigState, Edit
from portcullis.services.context import AuditSink, Operation, RequestFacts
from portcullis.services.errors import ALREADY_EXISTS, ServiceError, invalid, not_found
from portcullis.services.keys import KeyService
from portcullis.services.oauth_clients import OAuthClientService
from portcullis.services.portal import (
    ACCESS_STATE_CONFLICT,
    EMAIL_NOT_VERIFIED,
    ClientType,
    Developer,
    DeveloperContext,
    KeyEnvironment,
    iso,
    teams_of,
)
from portcullis.services.portal_mail import MailMessage, MailSender
from portcullis.services.scoping import UNLIMITED
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import write_transaction
from portcullis.store.portal_tables import (
    AccessRequestRow,
    ApplicationRow,
    DeveloperRow,
    TeamMemberRow,
)

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
AUTO_APPROVER = "system:portal-automatic-approval"
MAX_DESCRIPTION = 2000


def consumer_name(application_id: str) -> str:
    """The gateway consumer of an application (deterministic: one per application)."""
    return f"app-{application_id}"


def api_group(api: str) -> str:
    """The consumer group an approved access to `api` adds (for an acl on its routes)."""
    return f"portal-{api}"


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    team_id: str
    name: str
    description: str
    client_type: ClientType
    consumer: str | None
    organization_id: str | None
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "description": self.description,
            "client_type": self.client_type.value,
            "consumer": self.consumer,
            "organization_id": self.organization_id,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str
    application_id: str
    team_id: str
    api: str
    organization: str | None
    organization_id: str | None
    plan: str | None
    status: Literal["pending", "approved", "rejected"]
    reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "application_id": self.application_id,
            "team_id": self.team_id,
            "api": self.api,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "plan": self.plan,
            "status": self.status,
            "reason": self.reason,
            "decided_by": self.decided_by,
            "decided_at": iso(self.decided_at),
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class AppConsumer:
    """A gateway consumer of one of a developer's applications (usage, captured requests)."""

    application_id: str
    application: str
    team_id: str
    consumer: str
    organization: str | None
    organization_id: str | None


@dataclass(frozen=True, slots=True)
class ApiOffer:
    """An API a developer may ask access to, and how it is granted."""

    name: str
    title: str
    organization: str | None
    approval: Literal["automatic", "manual"]
    plans: tuple[str, ...]


def application_of(row: Any) -> Application:
    return Application(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        description=row.description,
        client_type=ClientType(row.client_type),
        consumer=row.consumer,
        organization_id=row.organization_id,
        created_at=row.created_at,
    )


def access_request_of(row: Any) -> AccessRequest:
    return AccessRequest(
        id=row.id,
        application_id=row.application_id,
        team_id=row.team_id,
        api=row.api,
        organization=row.organization,
        organization_id=row.organization_id,
        plan=row.plan,
        status=row.status,
        reason=row.reason,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        created_at=row.created_at,
    )


def offered(api: Api) -> bool:
    """An API the portal offers: one with portal access settings, or a public one."""
    return api.access is not None or api.public


def offer_of(api: Api) -> ApiOffer:
    access = api.access
    return ApiOffer(
        api.name,
        api.title or api.name,
        api.organization,
        "manual" if access is None else access.approval,
        () if access is None else tuple(access.plans),
    )


def _app_missing(application_id: str) -> ServiceError:
    return not_found(f"application {application_id!r} does not exist", target="application_id")


class PortalApps:
    """Applications and their credentials, for developers (and the approval workflow)."""

    def __init__(
        self,
        engine: AsyncEngine,
        editor: ConfigEditor,
        audit: AuditSink,
        mail: MailSender,
        keys: KeyService,
        oauth_server: Callable[[], OAuthServer],
    ) -> None:
        self._engine = engine
        self._editor = editor
        self._audit = audit
        self._mail = mail
        self._keys = keys
        self._oauth_server = oauth_server

    # ------------------------------------------------------------------ helpers

    def _op(self, ctx: DeveloperContext) -> Operation:
        """The operation a developer's call stands for: audited under their name, with no
        organization limit (the application, found in their teams, decided the scope)."""
        return Operation(None, ctx.developer.actor, ctx.facts, self._audit, UNLIMITED, ctx.clock)

    @staticmethod
    def _require_verified(ctx: DeveloperContext) -> None:
        if not ctx.developer.email_verified:
            raise ServiceError(
                EMAIL_NOT_VERIFIED,
                "verify your email address first (open the link we mailed you)",
            )

    async def _app_row(self, ctx: DeveloperContext, application_id: str) -> Any:
        """The application, found only among the developer's teams' applications."""
        query = select(ApplicationRow).where(
            ApplicationRow.id == application_id,
            ApplicationRow.team_id.in_(teams_of(ctx.developer.id)),
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise _app_missing(application_id)
        return row

    async def _consumer_of(self, ctx: DeveloperContext, application_id: str) -> str:
        row = await self._app_row(ctx, application_id)
        if row.consumer is None:
            raise ServiceError(
                ACCESS_STATE_CONFLICT,
                "the application has no approved API access yet: request access first",
            )
        return str(row.consumer)

    # ------------------------------------------------------------------ applications

    async def create_application(
        self,
        ctx: DeveloperContext,
        team_id: str,
        name: str,
        *,
        description: str = "",
        client_type: ClientType | str = ClientType.server,
    ) -> Application:
        """A new application of team `team_id` (one of the caller's teams)."""
        self._require_verified(ctx)
        name, errors = name.strip(), []
        if not 1 <= len(name) <= 128:
            errors.append(("#/name", "must be 1 to 128 characters"))
        if len(description) > MAX_DESCRIPTION:
            errors.append(("#/description", f"must be at most {MAX_DESCRIPTION} characters"))
        try:
            kind = ClientType(client_type)
        except ValueError:
            errors.append(("#/client_type", "must be one of web, mobile, server, partner"))
        if errors:
            raise invalid(errors)
        now = ctx.now()
        row = {
            "id": secrets.token_hex(6),
            "team_id": team_id,
            "name": name,
            "description": description,
            "client_type": kind.value,
            "consumer": None,
            "organization_id": None,
            "created_by": ctx.developer.id,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with write_transaction(self._engine) as conn:
                mine = await conn.scalar(
                    select(TeamMemberRow.team_id).where(
                        TeamMemberRow.team_id == team_id,
                        TeamMemberRow.developer_id == ctx.developer.id,
                    )
                )
                if mine is None:
                    raise not_found(f"team {team_id!r} does not exist", target="team_id")
                await conn.execute(insert(ApplicationRow).values(**row))
                app = application_of(ApplicationRow(**row))
                await self._op(ctx).record(
                    "create",
                    "portal_application",
                    app.id,
                    after=app.as_json(),
                    status=201,
                    conn=conn,
                )
        except IntegrityError:
            raise ServiceError(
                ALREADY_EXISTS,
                "the team has an application with this name",
                errors=[{"pointer": "#/name", "detail": "is taken in this team"}],
            ) from None
        return app

    async def list_applications(self, ctx: DeveloperContext) -> list[Application]:
        """The applications of every team of the caller."""
        query = (
            select(ApplicationRow)
            .where(ApplicationRow.team_id.in_(teams_of(ctx.developer.id)))
            .order_by(ApplicationRow.name, ApplicationRow.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [application_of(r) for r in rows]

    async def get_application(self, ctx: DeveloperContext, application_id: str) -> Application:
        return application_of(await self._app_row(ctx, application_id))

    async def consumers_of(self, developer: Developer) -> list[AppConsumer]:
        """The gateway consumers of the developer's teams' applications, with their
        organization (for usage charts and captured requests: only these are theirs)."""
        query = (
            select(ApplicationRow, OrganizationRow.name.label("organization"))
            .outerjoin(OrganizationRow, OrganizationRow.id == ApplicationRow.organization_id)
            .where(
                ApplicationRow.team_id.in_(teams_of(developer.id)),
                ApplicationRow.consumer.is_not(None),
            )
            .order_by(ApplicationRow.name, ApplicationRow.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AppConsumer(r.id, r.name, r.team_id, r.consumer, r.organization, r.organization_id)
            for r in rows
        ]

    # ------------------------------------------------------------------ access requests

    async def offers(self) -> list[ApiOffer]:
        """The APIs the portal offers, by name."""
        config = (await self._editor.state()).config
        return sorted((offer_of(a) for a in config.apis if offered(a)), key=lambda o: o.name)

    async def access_requests(
        self, ctx: DeveloperContext, application_id: str
    ) -> list[AccessRequest]:
        """The access requests of one of the caller's applications."""
        await self._app_row(ctx, application_id)
        query = (
            select(AccessRequestRow)
            .where(
                AccessRequestRow.application_id == application_id,
                AccessRequestRow.team_id.in_(teams_of(ctx.developer.id)),
            )
            .order_by(AccessRequestRow.api)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [access_request_of(r) for r in rows]

    async def request_access(
        self, ctx: DeveloperContext, application_id: str, api: str, plan: str | None = None
    ) -> AccessRequest:
        """Ask for the application's access to `api` (with `plan`: one the API offers; left
        out: its first). Approved at once when the API's approval is automatic; a
        rejected request may be made again."""
        self._require_verified(ctx)
        app = await self._app_row(ctx, application_id)
        config = (await self._editor.state()).config
        found = next((a for a in config.apis if a.name == api and offered(a)), None)
        if found is None:
            raise invalid([("#/api", f"the portal offers no API {api!r}")])
        offer = offer_of(found)
        if plan is None and offer.plans:
            plan = offer.plans[0]
        if plan is not None and plan not in offer.plans:
            choices = ", ".join(offer.plans) or "none"
            raise invalid([("#/plan", f"{api!r} offers the plans: {choices}")])
        others = await self.access_requests(ctx, application_id)
        self._check_consistent(others, api, offer.organization, plan)
        now = ctx.now()
        async with write_transaction(self._engine) as conn:
            organization_id = await self._organization_id(conn, offer.organization)
            previous = next((r for r in others if r.api == api), None)
            values = {
                "organization": offer.organization,
                "organization_id": organization_id,
                "plan": plan,
                "status": PENDING,
                "reason": None,
                "requested_by": ctx.developer.id,
                "decided_by": None,
                "decided_at": None,
                "updated_at": now,
            }
            if previous is None:
                request_id = str(uuid.uuid4())
                await conn.execute(
                    insert(AccessRequestRow).values(
                        id=request_id,
                        application_id=app.id,
                        team_id=app.team_id,
                        api=api,
                        created_at=now,
                        **values,
                    )
                )
            else:
                request_id = previous.id
                reopened = await conn.execute(
                    update(AccessRequestRow)
                    .where(AccessRequestRow.id == request_id, AccessRequestRow.status == REJECTED)
                    .values(**values)
                )
                if reopened.rowcount != 1:
                    raise ServiceError(
                        ALREADY_EXISTS,
                        f"the application has a {previous.status} request for {api!r}",
                        errors=[{"pointer": "#/api", "detail": "requested already"}],
                    )
            request = await self._request(conn, request_id)
            await self._announce(conn, EventType.PORTAL_ACCESS_REQUESTED, request, app.name, None)
            await self._op(ctx).record(
                "request",
                "portal_access_request",
                request_id,
                after=request.as_json(),
                status=201,
                conn=conn,
            )
        if offer.approval == "automatic":
            automatic = Operation(None, AUTO_APPROVER, ctx.facts, self._audit, UNLIMITED, ctx.clock)
            return await self.decide(
                automatic, request_id, approve=True, reason="automatic approval"
            )
        return request

    @staticmethod
    def _check_consistent(
        others: list[AccessRequest], api: str, organization: str | None, plan: str | None
    ) -> None:
        """One application is one consumer: one organization, one plan."""
        live = [r for r in others if r.api != api and r.status != REJECTED]
        if any(r.organization != organization for r in live):
            raise invalid(
                [
                    (
                        "#/api",
                        "this application uses APIs of another organization; register "
                        "another application for this API",
                    )
                ]
            )
        plans = {r.plan for r in live if r.plan is not None}
        if plan is not None and plans and plans != {plan}:
            held = ", ".join(sorted(plans))
            raise invalid([("#/plan", f"this application's plan is {held}; ask for that one")])

    @staticmethod
    async def _organization_id(conn: AsyncConnection, organization: str | None) -> str | None:
        if organization is None:
            return None
        found = await conn.scalar(
            select(OrganizationRow.id).where(OrganizationRow.name == organization)
        )
        return None if found is None else str(found)

    @staticmethod
    async def _request(conn: AsyncConnection, request_id: str) -> AccessRequest:
        row = (
            await conn.execute(select(AccessRequestRow).where(AccessRequestRow.id == request_id))
        ).first()
        if row is None:
            raise not_found(f"access request {request_id!r} does not exist", target="request_id")
        return access_request_of(row)

    async def _announce(
        self,
        conn: AsyncConnection,
        kind: EventType,
        request: AccessRequest,
        application: str,
        consumer: str | None,
    ) -> None:
        """The access request's event, in the caller's transaction (streams, webhooks)."""
        await record_event(
            conn,
            kind,
            f"access_request:{request.id}",
            {
                "request_id": request.id,
                "application_id": request.application_id,
                "application": application,
                "team_id": request.team_id,
                "api": request.api,
                "plan": request.plan,
                "status": request.status,
                "reason": request.reason,
                "consumer": consumer,
            },
            organization_id=request.organization_id,
        )

    # ------------------------------------------------------------------ approval

    async def decide(
        self, op: Operation, request_id: str, *, approve: bool, reason: str | None
    ) -> AccessRequest:
        """Approve or reject a pending request (an operator's `op`, limited to the API's
        organization, or the automatic approval); the developer who asked is mailed."""
        async with self._engine.connect() as conn:
            request = await self._request(conn, request_id)
            app = (
                await conn.execute(
                    select(ApplicationRow).where(ApplicationRow.id == request.application_id)
                )
            ).one()
        op.scope.require_owned(
            request.organization_id, f"access request {request_id!r} does not exist"
        )
        if request.status != PENDING:
            raise ServiceError(
                ACCESS_STATE_CONFLICT, f"the request is {request.status}, not pending"
            )
        now = op.now()
        status = APPROVED if approve else REJECTED
        claim = (
            update(AccessRequestRow)
            .where(AccessRequestRow.id == request_id, AccessRequestRow.status == PENDING)
            .values(
                status=status, reason=reason, decided_by=op.actor, decided_at=now, updated_at=now
            )
        )
        async with write_transaction(self._engine) as conn:
            if (await conn.execute(claim)).rowcount != 1:
                raise ServiceError(ACCESS_STATE_CONFLICT, "the request was decided meanwhile")
            if not approve:
                decided = await self._request(conn, request_id)
                await self._decided(conn, op, request, decided, app.name, None)
        if not approve:
            await self._notify(decided, app.name)
            return decided
        consumer = consumer_name(app.id)
        try:
            await self._grant(op, consumer, request)
        except BaseException:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    update(AccessRequestRow)
                    .where(AccessRequestRow.id == request_id)
                    .values(status=PENDING, reason=None, decided_by=None, decided_at=None)
                )
            raise
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(ApplicationRow)
                .where(ApplicationRow.id == app.id)
                .values(consumer=consumer, organization_id=request.organization_id, updated_at=now)
            )
            decided = await self._request(conn, request_id)
            await self._decided(conn, op, request, decided, app.name, consumer)
        await self._notify(decided, app.name)
        return decided

    async def _decided(
        self,
        conn: AsyncConnection,
        op: Operation,
        before: AccessRequest,
        after: AccessRequest,
        application: str,
        consumer: str | None,
    ) -> None:
        kind = (
            EventType.PORTAL_ACCESS_APPROVED
            if after.status == APPROVED
            else EventType.PORTAL_ACCESS_REJECTED
        )
        await self._announce(conn, kind, after, application, consumer)
        await op.record(
            "approve" if after.status == APPROVED else "reject",
            "portal_access_request",
            after.id,
            before=before.as_json(),
            after=after.as_json(),
            conn=conn,
        )

    async def _grant(self, op: Operation, consumer: str, request: AccessRequest) -> None:
        """Create (or extend) the application's consumer: in the API's organization, with
        the API's group and the request's plan; one config version, audited."""

        def plan(state: ConfigState) -> Edit[None]:
            api = next((a for a in state.config.apis if a.name == request.api), None)
            if api is None:
                raise ServiceError(
                    ACCESS_STATE_CONFLICT, f"the API {request.api!r} no longer exists"
                )
            document = dict(state.document)
            consumers = list(document.get("consumers", []))
            index = next((i for i, c in enumerate(consumers) if c["username"] == consumer), None)
            before = None if index is None else consumers[index]
            if before is None:
                model = Consumer(
                    username=consumer,
                    organization=api.organization,
                    groups=[api_group(request.api)],
                    plan=request.plan,
                    metadata={"portal_application": request.application_id},
                )
            else:
                current = Consumer.model_validate(before)
                groups = list(dict.fromkeys([*current.groups, api_group(request.api)]))
                model = current.model_copy(
                    update={"groups": groups, "plan": request.plan or current.plan}
                )
            after = model.model_dump(mode="json")
            if after == before:
                return Edit(None, None)
            if index is None:
                consumers.append(after)
            else:
                consumers[index] = after
            document["consumers"] = consumers
            return Edit(
                document,
                None,
                comment=f"portal: access of application {request.application_id} to {request.api}",
                on_write=op.on_config_write(
                    "create" if before is None else "update",
                    "consumer",
                    consumer,
                    before=before,
                    after=after,
                    status=201 if before is None else 200,
                ),
            )

        await self._editor.mutate(plan, author=op.actor)

    async def _notify(self, request: AccessRequest, application: str) -> None:
        """Mail the developer who asked about the decision."""
        async with self._engine.connect() as conn:
            email = await conn.scalar(
                select(DeveloperRow.email)
                .join(AccessRequestRow, AccessRequestRow.requested_by == DeveloperRow.id)
                .where(AccessRequestRow.id == request.id)
            )
        if email is None:
            return
        verdict = "approved" if request.status == APPROVED else "rejected"
        reason = f"\nReason: {request.reason}\n" if request.reason else ""
        await self._mail.send(
            MailMessage(
                str(email),
                f"Access to {request.api} {verdict} for {application}",
                f"Your application {application!r} was {verdict} for the API "
                f"{request.api!r}.\n{reason}",
            )
        )

    # ------------------------------------------------------------------ API keys

    async def list_keys(self, ctx: DeveloperContext, application_id: str) -> list[KeyInfo]:
        """The application consumer's keys (none before an approval)."""
        row = await self._app_row(ctx, application_id)
        if row.consumer is None:
            return []
        page = await self._keys.list_consumer_keys(self._op(ctx), row.consumer, limit=200)
        return page.items

    async def create_key(
        self,
        ctx: DeveloperContext,
        application_id: str,
        environment: KeyEnvironment | str,
        name: str,
    ) -> CreatedKey:
        """A new key of the application (the full key is in the result only)."""
        self._require_verified(ctx)
        try:
            env = KeyEnvironment(environment)
        except ValueError:
            raise invalid([("#/environment", "must be sandbox or production")]) from None
        consumer = await self._consumer_of(ctx, application_id)
        try:
            spec = KeySpec(name=name, environment=env.gateway)
        except ValueError:
            raise invalid([("#/name", "must be 1 to 128 characters")]) from None
        return await self._keys.create(self._op(ctx), consumer, spec)

    async def _own_key(self, ctx: DeveloperContext, application_id: str, key_id: str) -> str:
        consumer = await self._consumer_of(ctx, application_id)
        key_id = KeyService.key_id(key_id)
        try:
            info = await self._keys.get(self._op(ctx), key_id)
        except ServiceError:
            info = None
        if info is None or info.consumer != consumer:
            raise not_found(f"API key {key_id!r} does not exist", target="key_id")
        return key_id

    async def rotate_key(
        self, ctx: DeveloperContext, application_id: str, key_id: str, *, grace_seconds: int
    ) -> Rotation:
        """A successor key (shown once); the old one works `grace_seconds` more."""
        self._require_verified(ctx)
        key_id = await self._own_key(ctx, application_id, key_id)
        if not 0 <= grace_seconds <= 30 * 86400:
            raise invalid([("#/grace_seconds", "must be 0 to 2592000 seconds")])
        return await self._keys.rotate(self._op(ctx), key_id, grace_seconds=grace_seconds)

    async def revoke_key(self, ctx: DeveloperContext, application_id: str, key_id: str) -> KeyInfo:
        """Revoke one of the application's keys (final)."""
        key_id = await self._own_key(ctx, application_id, key_id)
        return await self._keys.transition(
            self._op(ctx), key_id, "revoke", reason="revoked in the developer portal"
        )

    # ------------------------------------------------------------------ OAuth clients

    def _clients(self) -> OAuthClientService:
        return OAuthClientService(self._oauth_server(), self._editor)

    async def list_oauth_clients(
        self, ctx: DeveloperContext, application_id: str
    ) -> list[OAuthClient]:
        row = await self._app_row(ctx, application_id)
        if row.consumer is None:
            return []
        clients = await self._oauth_server().clients.list_for(row.consumer)
        return [c for c in clients if c.organization_id == row.organization_id]

    async def create_oauth_client(
        self, ctx: DeveloperContext, application_id: str, name: str
    ) -> tuple[OAuthClient, str]:
        """OAuth client credentials for the application (the secret is in the result only)."""
        self._require_verified(ctx)
        consumer = await self._consumer_of(ctx, application_id)
        if not 1 <= len(name.strip()) <= 128:
            raise invalid([("#/name", "must be 1 to 128 characters")])
        return await self._clients().create(
            self._op(ctx), consumer, name=name.strip(), allowed_scopes=[], token_ttl=3600
        )

    async def _own_client(self, ctx: DeveloperContext, application_id: str, client_id: str) -> None:
        consumer = await self._consumer_of(ctx, application_id)
        client = await self._oauth_server().clients.get(client_id)
        if client is None or client.consumer != consumer:
            raise not_found(f"OAuth client {client_id!r} does not exist", target="client_id")

    async def rotate_oauth_secret(
        self, ctx: DeveloperContext, application_id: str, client_id: str
    ) -> tuple[OAuthClient, str]:
        """A new secret for one of the application's clients (in the result only)."""
        self._require_verified(ctx)
        await self._own_client(ctx, application_id, client_id)
        return await self._clients().rotate_secret(self._op(ctx), client_id)

    async def delete_oauth_client(
        self, ctx: DeveloperContext, application_id: str, client_id: str
    ) -> None:
        await self._own_client(ctx, application_id, client_id)
        await self._clients().delete(self._op(ctx), client_id)


def facts_of_system() -> RequestFacts:
    """Request facts for work no request started (seeding)."""
    return RequestFacts(f"system-{secrets.token_hex(8)}", None)
