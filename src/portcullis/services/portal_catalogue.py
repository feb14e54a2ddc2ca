"""The developer portal's API catalogue: which APIs a developer sees, search, each API's
versions with their status and deprecation notices, and a version's reference docs
(the published description, as clients see it through the gateway, turned into the
view model of `catalogue/reference.py`).

Who sees what (`PortalAccess`): every `public` API; signed in, also the APIs the portal
offers access to (`Api.access`) and the APIs of the organizations the developer's
applications (gateway consumers, `consumers_of(developer)` of the portal
service) belong to — the same rule as the catalogue's published documents for an API
key of a consumer of the API's organization (services/catalogue.py `Viewer`). An API
the developer may not see is "not found", as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from portcullis.catalogue.publish import publish
from portcullis.catalogue.reference import ReferenceDoc, reference
from portcullis.model.apis import Api, ApiVersion, VersionStatus
from portcullis.model.config import GatewayConfig
from portcullis.services.catalogue import gateway_of
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import not_found
from portcullis.settings import Settings

# Reference docs kept rendered (per API version of the current config).
_CACHE_SIZE = 64


class AppConsumer(Protocol):
    """One application of a developer's teams as the portal service lists it
    (`services.portal_apps.AppConsumer`): its gateway consumer and its team."""

    @property
    def application(self) -> str: ...

    @property
    def team_id(self) -> str: ...

    @property
    def consumer(self) -> str: ...


class DeveloperConsumers(Protocol):
    """What the portal service answers about a developer: the applications of their
    teams, each with its gateway consumer (`PortalApps.consumers_of`)."""

    async def consumers_of(self, developer: Any) -> Sequence[AppConsumer]: ...


@dataclass(frozen=True, slots=True)
class AppRef:
    consumer: str
    name: str
    team_id: str


@dataclass(frozen=True, slots=True)
class PortalAccess:
    """What one developer may see: their teams' applications (gateway consumers), the
    organizations those belong to (None: the operator's own consumers) and the teams."""

    apps: tuple[AppRef, ...] = ()
    organizations: frozenset[str | None] = frozenset()
    signed_in: bool = False

    @property
    def consumers(self) -> frozenset[str]:
        return frozenset(a.consumer for a in self.apps)

    @property
    def teams(self) -> frozenset[str]:
        return frozenset(a.team_id for a in self.apps)

    def app(self, consumer: str) -> AppRef | None:
        return next((a for a in self.apps if a.consumer == consumer), None)

    def sees(self, api: Api) -> bool:
        """Public APIs; for a signed-in developer also those the portal offers access to
        (`Api.access`) and those of their applications' organizations."""
        if api.public or (self.signed_in and api.access is not None):
            return True
        return bool(self.apps) and api.organization in self.organizations


ANONYMOUS = PortalAccess()


def access_of(config: GatewayConfig, apps: Iterable[AppRef | str]) -> PortalAccess:
    """The access of a developer whose applications are `apps` (a bare consumer name is
    an application of that name in team ""); consumers the config no longer has are
    dropped."""
    refs = [a if isinstance(a, AppRef) else AppRef(a, a, "") for a in apps]
    known = {c.username: c for c in config.consumers}
    kept = tuple(sorted((a for a in refs if a.consumer in known), key=lambda a: a.consumer))
    return PortalAccess(
        kept, frozenset(known[a.consumer].organization for a in kept), signed_in=True
    )


async def developer_access(
    directory: DeveloperConsumers, developer: Any, editor: ConfigEditor
) -> PortalAccess:
    """`access_of` the developer's applications in the current config."""
    config = (await editor.state()).config
    apps = await directory.consumers_of(developer)
    return access_of(config, [AppRef(a.consumer, a.application, a.team_id) for a in apps])


@dataclass(frozen=True, slots=True)
class VersionCard:
    name: str
    status: str
    description: str | None
    deprecated_at: datetime | None
    sunset_at: datetime | None
    successor: str | None
    has_docs: bool
    notice: str | None = field(default=None)


@dataclass(frozen=True, slots=True)
class ApiCard:
    name: str
    title: str
    description: str | None
    tags: list[str]
    default_version: str | None
    versions: list[VersionCard]


@dataclass(frozen=True, slots=True)
class TryOperation:
    """An operation the try-it console offers: method and the path a client sends
    (the route's prefix included), with `{placeholders}` to fill."""

    anchor: str
    method: str
    path: str
    summary: str
    # The first documented request body's media type and example (to prefill the form).
    content_type: str | None = None
    example: str | None = None


def notice_of(version: ApiVersion) -> str | None:
    """The deprecation or sunset notice a version's page shows (None: nothing to say)."""
    parts: list[str] = []
    if version.status is VersionStatus.retired:
        parts.append("This version is retired and no longer served.")
    elif version.deprecated_at is not None or version.status is VersionStatus.deprecated:
        since = (
            f" since {version.deprecated_at.date().isoformat()}"
            if version.deprecated_at is not None
            else ""
        )
        parts.append(f"Deprecated{since}.")
    if version.sunset_at is not None and version.status is not VersionStatus.retired:
        parts.append(f"Sunset on {version.sunset_at.date().isoformat()}: answered 410 from then.")
    if version.brownouts:
        parts.append(f"{len(version.brownouts)} brownout window(s) announced before the sunset.")
    if parts and version.successor is not None:
        parts.append(f"Use version {version.successor}.")
    return " ".join(parts) or None


def _card(api: Api) -> ApiCard:
    return ApiCard(
        name=api.name,
        title=api.title or api.name,
        description=api.description,
        tags=list(api.tags),
        default_version=api.default_version,
        versions=[
            VersionCard(
                name=v.name,
                status=v.status.value,
                description=v.description,
                deprecated_at=v.deprecated_at,
                sunset_at=v.sunset_at,
                successor=v.successor,
                has_docs=v.openapi is not None,
                notice=notice_of(v),
            )
            for v in api.versions
        ],
    )


def _matches(api: Api, words: list[str]) -> bool:
    text = " ".join(
        [
            api.name,
            api.title or "",
            api.description or "",
            *api.tags,
            *(v.name for v in api.versions),
        ]
    ).lower()
    return all(w in text for w in words)


class PortalCatalogue:
    """The catalogue as a developer sees it, over the current config."""

    def __init__(self, editor: ConfigEditor, settings: Settings) -> None:
        self._editor = editor
        self._settings = settings
        self._docs: dict[
            tuple[int, str, str], tuple[GatewayConfig, ReferenceDoc, dict[str, Any]]
        ] = {}

    async def _config(self) -> GatewayConfig:
        return (await self._editor.state()).config

    async def listing(self, access: PortalAccess, search: str = "") -> list[ApiCard]:
        """The APIs `access` sees whose name, title, description, tags or versions hold
        every word of `search` (case-insensitive), by name."""
        words = search.lower().split()[:10]
        config = await self._config()
        return [
            _card(a)
            for a in sorted(config.apis, key=lambda a: a.name)
            if access.sees(a) and _matches(a, words)
        ]

    async def _api(self, access: PortalAccess, name: str) -> tuple[GatewayConfig, Api]:
        config = await self._config()
        found = next((a for a in config.apis if a.name == name), None)
        if found is None or not access.sees(found):
            raise not_found(f"api {name!r} does not exist", target="api")
        return config, found

    async def api(self, access: PortalAccess, name: str) -> ApiCard:
        return _card((await self._api(access, name))[1])

    async def published(
        self, access: PortalAccess, api: str, version: str
    ) -> tuple[ApiCard, VersionCard, ReferenceDoc, dict[str, Any]]:
        """A version's card, its reference docs and the published document they are
        rendered from; not found for a version without a description."""
        config, found = await self._api(access, api)
        v = found.version(version)
        if v is None or v.openapi is None:
            raise not_found(
                f"api {api!r} has no version {version!r} with a description", target="version"
            )
        card = _card(found)
        version_card = next(c for c in card.versions if c.name == version)
        key = (id(config), api, version)
        cached = self._docs.get(key)
        if cached is None or cached[0] is not config:
            document = publish(config, found, v, gateway_of(self._settings))
            if len(self._docs) >= _CACHE_SIZE:
                self._docs.clear()
            cached = self._docs[key] = (config, reference(document), document)
        return card, version_card, cached[1], cached[2]

    async def operations(self, access: PortalAccess, api: str, version: str) -> list[TryOperation]:
        """The operations the try-it console offers for a version, with client paths."""
        _, _, doc, _ = await self.published(access, api, version)
        prefix = urlsplit(doc.servers[0]).path.rstrip("/") if doc.servers else ""
        found: dict[str, TryOperation] = {}
        for tag in doc.tags:
            for op in tag.operations:
                media = (
                    op.request_body.media[0] if op.request_body and op.request_body.media else None
                )
                found.setdefault(
                    op.anchor,
                    TryOperation(
                        op.anchor,
                        op.method,
                        prefix + op.path,
                        op.summary,
                        None if media is None else media.media_type,
                        None if media is None else media.example,
                    ),
                )
        return list(found.values())
