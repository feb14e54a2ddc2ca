"""The `request-validator` plugin's config (its handler: plugins/request_validator.py).

The plugin checks requests against the OpenAPI description of the API version the
route serves (`apis[].versions[].openapi`), so a route it applies to must serve
one: `gateway_errors` reports a route- or service-scoped instance on a route that
serves no version with a description (a global instance applies to the routes that
serve an API and leaves the others alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from portcullis.model.plugins.base import BODY_BUFFER_LIMIT, PluginConfig


class RequestValidatorConfig(PluginConfig):
    parameters: bool = Field(
        default=True, description="check path, query, header and cookie parameters"
    )
    body: bool = Field(
        default=True, description="check the Content-Type and JSON or form request bodies"
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        le=BODY_BUFFER_LIMIT,
        description="largest request body checked; a larger one is refused with 413",
    )
    unknown_operations: Literal["reject", "allow"] = Field(
        default="reject",
        description="a method and path the description does not have: 404/405, or let it pass",
    )
    max_errors: int = Field(default=20, ge=1, le=100, description="errors listed in a refusal")
    validate_responses: bool = Field(
        default=False,
        description="check upstream responses against the description and log mismatches "
        "(never changes a response; buffers the route's responses: for sandbox/staging)",
    )
    max_response_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        le=BODY_BUFFER_LIMIT,
        description="largest JSON response body checked (larger ones are not parsed)",
    )

    @classmethod
    def gateway_errors(
        cls, config: Mapping[str, Any], scope: tuple[str, str | None], gateway: object
    ) -> list[str]:
        """Routes this instance applies to that serve no API version with a description."""
        kind, name = scope
        if kind == "global":
            return []
        field = "name" if kind == "route" else "service"
        routes = [
            str(getattr(r, "name", ""))
            for r in getattr(gateway, "routes", None) or ()
            if getattr(r, field, None) == name
        ]
        apis = getattr(gateway, "apis", None) or ()
        errors: list[str] = []
        for route in routes:
            missing = _missing_descriptions(route, apis)
            if missing is None:
                errors.append(
                    f"{kind}: route {route!r} serves no API version, so request-validator "
                    "has no description to check against (list it in apis[].versions[].routes "
                    "with an openapi description)"
                )
            errors += [
                f"{kind}: route {route!r} serves {where} without a description "
                f"({where}.openapi is not set)"
                for where in missing or ()
            ]
        return errors


def _missing_descriptions(route: str, apis: Any) -> list[str] | None:
    """Where the versions `route` serves lack `openapi` (None: it serves no API)."""
    for i, api in enumerate(apis):
        versions = getattr(api, "versions", None) or ()
        undescribed = [
            f"apis[{i}].versions[{k}]"
            for k, v in enumerate(versions)
            if getattr(v, "openapi", None) is None
        ]
        if route in (getattr(api, "routes", None) or ()):
            return undescribed
        for k, v in enumerate(versions):
            if route in (getattr(v, "routes", None) or ()):
                where = f"apis[{i}].versions[{k}]"
                return [where] if where in undescribed else []
    return None
