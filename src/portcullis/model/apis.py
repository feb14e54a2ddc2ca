"""API products: an `apis` entity with versions, each served by routes of the gateway.

An API groups routes into named **versions** with a lifecycle (`beta`, `stable`,
`deprecated`, `retired`). How a request's version is chosen:

- a route listed under a version's `routes` serves only that version (path-prefix
  versioning: `/v1/...` and `/v2/...` are different routes);
- a route listed under the API's own `routes` is an entry shared by every version: the
  version comes from the request (`selection`: a header, a query parameter or the
  `Accept` media type `application/vnd.<api>.<version>+json`), else from the
  consumer's pin (`Consumer.api_versions`, Stripe-style), else `default_version`;
  the chosen version's `service` (when it has one) then serves the request.

A deprecated version's responses carry `Deprecation` (RFC 9745) and `Sunset` (RFC
8594); from `sunset_at` on, its requests are answered 410 naming `successor`;
`brownouts` answer a share of them 410 in announced windows before that.

`openapi` holds the version's OpenAPI description as imported (external `$ref`s
already resolved), so the data plane compiles validators and mocks from the snapshot
alone; `openapi_source` names a URL the control plane re-fetches into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, Field, HttpUrl, field_validator, model_validator

from portcullis.model.tenancy import location_key
from portcullis.model.types import Name, StrictModel, Tag

# A version's name as clients send it (`v2`, `2024-06-01`, `beta.3`).
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
VersionName = Annotated[str, Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)]
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class VersionStatus(StrEnum):
    """Where a version is in its life: `retired` versions answer 410 whatever the dates."""

    beta = "beta"
    stable = "stable"
    deprecated = "deprecated"
    retired = "retired"


class Brownout(StrictModel):
    """A window before the sunset in which `share` of the version's requests get the 410."""

    start: AwareDatetime
    end: AwareDatetime
    share: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a brownout must end after it starts")
        return self


class Sandbox(StrictModel):
    """Where requests made with non-production keys go: another service, or a mock
    answered from the version's OpenAPI description (examples, else generated data)."""

    service: Name | None = None
    mock: bool = False

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.service is None) == (not self.mock):
            raise ValueError("a sandbox is either a service or mock: true")
        return self


class OpenApiSource(StrictModel):
    """A URL the control plane fetches the description from (SSRF-guarded like webhooks)."""

    url: HttpUrl
    refresh_seconds: int = Field(default=3600, ge=60, le=7 * 86400)


class ApiVersion(StrictModel):
    """One version of an API and its lifecycle."""

    name: VersionName
    status: VersionStatus = VersionStatus.stable
    description: str | None = Field(default=None, max_length=2000)
    routes: list[Name] = Field(
        default_factory=list, description="routes that serve this version only"
    )
    service: Name | None = Field(
        default=None,
        description="the service a request on one of the API's shared routes goes to when "
        "this version is selected (else the route's own)",
    )
    deprecated_at: AwareDatetime | None = None
    sunset_at: AwareDatetime | None = None
    deprecation_link: HttpUrl | None = None
    sunset_link: HttpUrl | None = None
    successor: VersionName | None = None
    brownouts: list[Brownout] = Field(default_factory=list, max_length=32)
    openapi: dict[str, Any] | None = Field(
        default=None, description="the version's OpenAPI 3.0/3.1 description, resolved"
    )
    openapi_source: OpenApiSource | None = None
    sandbox: Sandbox | None = None

    @model_validator(mode="after")
    def _lifecycle(self) -> Self:
        sunset, deprecated = self.sunset_at, self.deprecated_at
        if sunset is not None and deprecated is not None and sunset < deprecated:
            raise ValueError("sunset_at must not be earlier than deprecated_at (RFC 8594)")
        if self.status is VersionStatus.deprecated and self.deprecated_at is None:
            raise ValueError("a deprecated version needs deprecated_at")
        if self.brownouts and self.sunset_at is None:
            raise ValueError("brownouts need a sunset_at to lead up to")
        for i, b in enumerate(self.brownouts):
            if self.sunset_at is not None and b.end > self.sunset_at:
                raise ValueError(f"brownouts[{i}] ends after sunset_at")
        if self.successor == self.name:
            raise ValueError("a version cannot be its own successor")
        return self

    def sunset_passed(self, now: datetime) -> bool:
        """Whether the version answers 410 at `now` (retired, or past its sunset)."""
        return self.status is VersionStatus.retired or (
            self.sunset_at is not None and now >= self.sunset_at
        )


class VersionSelection(StrictModel):
    """How a request on a shared route names its version; the first that is present wins."""

    header: str | None = Field(default="Api-Version", pattern=HEADER_NAME_PATTERN)
    query: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._~-]+$", max_length=64)
    media_type: bool = Field(
        default=False, description="read Accept: application/vnd.<api>.<version>+json"
    )


class ApiAccess(StrictModel):
    """How the developer portal grants an application access to the API (decision 034):
    `automatic` approves every request at once, `manual` waits for an operator. `plans`
    are the traffic plans a developer may ask for (the first is the default; empty: the
    application's consumer gets no plan)."""

    approval: Literal["automatic", "manual"] = "manual"
    plans: list[Name] = Field(default_factory=list, max_length=16)


class Api(StrictModel):
    """An API product: what consumers discover, and the versions routes serve."""

    name: Name
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    owners: list[Annotated[str, Field(min_length=1, max_length=254)]] = Field(
        default_factory=list, max_length=32
    )
    tags: list[Tag] = Field(default_factory=list)
    organization: Name | None = None
    routes: list[Name] = Field(
        default_factory=list, description="routes shared by every version (see selection)"
    )
    selection: VersionSelection = Field(default_factory=VersionSelection)
    default_version: VersionName | None = None
    versions: list[ApiVersion] = Field(min_length=1, max_length=64)
    public: bool = Field(
        default=True,
        description="its published OpenAPI documents are readable without a credential",
    )
    access: ApiAccess | None = Field(
        default=None,
        description="developer portal access requests (None: manual approval, no plan)",
    )

    @field_validator("versions")
    @classmethod
    def _unique_versions(cls, v: list[ApiVersion]) -> list[ApiVersion]:
        seen: set[str] = set()
        for i, version in enumerate(v):
            if version.name in seen:
                raise ValueError(f"versions[{i}].name: duplicate version {version.name!r}")
            seen.add(version.name)
        return v

    @model_validator(mode="after")
    def _versions_named(self) -> Self:
        names = {v.name for v in self.versions}
        if self.default_version is not None and self.default_version not in names:
            raise ValueError(f"default_version: unknown version {self.default_version!r}")
        for i, v in enumerate(self.versions):
            if v.successor is not None and v.successor not in names:
                raise ValueError(f"versions[{i}].successor: unknown version {v.successor!r}")
        return self

    def version(self, name: str) -> ApiVersion | None:
        """The version called `name`, if the API has one."""
        return next((v for v in self.versions if v.name == name), None)


def api_reference_errors(apis: Sequence[object], consumers: Sequence[object]) -> list[str]:
    """What the per-entry validators can't see: a route serves at most one API version
    (or one API's shared entry), and a consumer's pins name versions that exist.

    Read defensively (`getattr`), like the tenancy rule: the config loader runs this on
    placeholders of entries that failed validation."""
    errors: list[str] = []
    claimed: dict[str, str] = {}
    versions_of: dict[str, set[str]] = {}
    for i, api in enumerate(apis):
        name = str(getattr(api, "name", ""))
        versions: Sequence[ApiVersion] = getattr(api, "versions", None) or ()
        versions_of[name] = {v.name for v in versions}
        shared: Sequence[str] = getattr(api, "routes", None) or ()
        places = [(f"apis[{i}].routes[{j}]", r, name) for j, r in enumerate(shared)]
        for k, v in enumerate(versions):
            places += [
                (f"apis[{i}].versions[{k}].routes[{j}]", r, f"{name} {v.name}")
                for j, r in enumerate(v.routes)
            ]
        for where, route, owner in places:
            if route in claimed:
                errors.append(f"{where}: route {route!r} already serves {claimed[route]}")
            else:
                claimed[route] = owner
    for i, c in enumerate(consumers):
        for api_name, version in (getattr(c, "api_versions", None) or {}).items():
            known = versions_of.get(api_name)
            # An unknown api is the tenancy rule's to report (within its organization).
            if known is not None and version not in known:
                errors.append(
                    f"consumers[{i}].api_versions{location_key(api_name)}: api "
                    f"{api_name!r} has no version {version!r}"
                )
    return errors
