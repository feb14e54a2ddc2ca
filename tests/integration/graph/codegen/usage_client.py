"""Correct uses of the Python client ariadne-codegen generates: `mypy --strict` accepts them
(test_codegen.py), the generated package included."""

from portcullis_admin_client import AdminClient, ServiceInput


async def service_names(client: AdminClient) -> list[str]:
    return [node.name for node in (await client.list_services(first=10)).services.nodes]


async def created_id(client: AdminClient) -> str | None:
    result = (await client.create_service(ServiceInput(name="x", url="http://a:1"))).create_service
    return result.service.id if result.typename__ == "ServicePayload" else None
