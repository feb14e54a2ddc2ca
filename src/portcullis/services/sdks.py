"""SDK generation as a control-plane operation: the client of one API version, zipped.

The document a client is generated from is the version's **published** document (what
a client sees through the gateway: its servers, security schemes and the gateway's own
responses), given through one seam, `PublishedDocument` (the catalogue's
`services.catalogue.publisher`). The API is read with the
caller's organization scope (another organization's API is not found), and one
generation runs at a time per process: each costs one to ten seconds of CPU.
"""

from __future__ import annotations

import asyncio
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portcullis.model.apis import Api, ApiVersion
from portcullis.problems import ProblemKind
from portcullis.sdks.generators import (
    GenerationFailed,
    GeneratorMissing,
    InvalidDocument,
    Language,
    generate_sdk,
    package_name,
    zip_folder,
)
from portcullis.services.context import Operation
from portcullis.services.entities import EntityService
from portcullis.services.errors import ServiceError, not_found

SDK_GENERATOR_UNAVAILABLE = ProblemKind(
    "sdk-generator-unavailable", "The SDK generator is not installed", 503
)
SDK_GENERATION_FAILED = ProblemKind(
    "sdk-generation-failed", "The SDK could not be generated from the document", 422
)
NO_API_DESCRIPTION = ProblemKind(
    "no-api-description", "The API version has no OpenAPI description", 409
)

# The published document of a version (None: it has none).
PublishedDocument = Callable[[Api, ApiVersion], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class SdkArchive:
    """A generated SDK as a zip archive, and what the generator said about it."""

    filename: str
    content: bytes
    files: int
    seconds: float
    warnings: tuple[str, ...]


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _generation_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _SLOTS.get(loop)
    if slot is None:
        slot = _SLOTS[loop] = asyncio.Semaphore(1)
    return slot


class SdkService:
    """Generate API version SDKs from the APIs the caller may see (`apis`: the apis
    entity service)."""

    def __init__(self, apis: EntityService, published: PublishedDocument) -> None:
        self._apis = apis
        self._published = published

    async def archive(
        self, op: Operation, api_name: str, version_name: str, language: Language
    ) -> SdkArchive:
        """The `language` SDK of `api_name` `version_name` as a zip archive whose files
        sit under `<package>/`."""
        entity = await self._apis.get(op, api_name)
        api = Api.model_validate(entity.representation)
        version = api.version(version_name)
        if version is None:
            raise not_found(f"api {api_name!r} has no version {version_name!r}", target="version")
        document = await self._published(api, version)
        if document is None:
            raise ServiceError(
                NO_API_DESCRIPTION,
                f"api {api_name!r} version {version_name!r} has no OpenAPI description "
                "to generate an SDK from",
            )
        package = package_name(api.name, version.name)
        try:
            async with _generation_slot():
                return await _generate_and_zip(
                    document, language, package, f"{package}-{language}.zip"
                )
        except GeneratorMissing as exc:
            raise ServiceError(SDK_GENERATOR_UNAVAILABLE, exc.message) from None
        except (InvalidDocument, GenerationFailed) as exc:
            raise ServiceError(SDK_GENERATION_FAILED, exc.message) from None


async def _generate_and_zip(
    document: dict[str, Any], language: Language, package: str, filename: str
) -> SdkArchive:
    with tempfile.TemporaryDirectory(prefix="portcullis-sdk-") as tmp:
        out = Path(tmp) / package
        sdk = await generate_sdk(document, language, out, package=package)
        content = await asyncio.to_thread(zip_folder, out, package)
    return SdkArchive(filename, content, sdk.files, sdk.seconds, sdk.warnings)
