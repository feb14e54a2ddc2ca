"""Wrong uses of the generated Python client: `mypy --strict` must refuse each
(test_codegen.py checks the messages), which proves the check can fail."""

from portcullis_admin_client import AdminClient, ServiceInput


async def url_lengths(client: AdminClient) -> list[int]:
    # `url` is nullable in the schema.
    return [len(node.url) for node in (await client.list_services()).services.nodes]


async def first_is_a_number(client: AdminClient) -> object:
    # `first` is an Int.
    return await client.list_services(first="10")


def nameless() -> ServiceInput:
    # `name` is required in ServiceInput.
    return ServiceInput(url="http://a:1")
