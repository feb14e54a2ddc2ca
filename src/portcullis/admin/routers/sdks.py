"""`POST /admin/v1/apis/{api}/versions/{version}/sdk?lang=python|typescript`: an API
version's client SDK as a zip archive, generated as `portcullis sdk generate` does.
The operation and its rules are `services.sdks` (permission: `config:read`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.sdks.generators import Language
from portcullis.services.catalogue import publisher
from portcullis.services.context import Operation
from portcullis.services.entities import EntityService
from portcullis.services.entity_kinds import KIND_BY_COLLECTION
from portcullis.services.rbac import Permission
from portcullis.services.sdks import SdkService

router = APIRouter(tags=["APIs"])
WARNINGS_HEADER = "Sdk-Generator-Warnings"


def _service(request: Request) -> SdkService:
    state = admin_state(request)
    collection = state.collection(KIND_BY_COLLECTION["apis"])
    entities = EntityService(collection, state.editor, state.engine, state.secret)
    return SdkService(entities, publisher(state))


@router.post(
    "/apis/{api}/versions/{version}/sdk",
    summary="Generate an API version's client SDK (a zip of the generated package)",
    response_class=Response,
    responses={
        200: {
            "description": "The generated SDK: a zip archive whose files sit under "
            "`<api>_<version>_client/`",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {
                WARNINGS_HEADER: {
                    "description": "How many parts of the document the generator left out",
                    "schema": {"type": "integer"},
                }
            },
        },
        **problem_responses(401, 403, 404, 409, 422, 429, 503),
    },
    operation_id="generate_api_sdk",
)
async def generate_api_sdk(
    request: Request,
    api: str,
    version: str,
    lang: Annotated[Language, Query(description="The SDK's language")],
    op: Operation = Depends(operation(Permission.CONFIG_READ)),
) -> Response:
    archive = await _service(request).archive(op, api, version, lang)
    return Response(
        archive.content,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{archive.filename}"',
            WARNINGS_HEADER: str(len(archive.warnings)),
        },
    )
