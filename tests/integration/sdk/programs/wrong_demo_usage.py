"""Wrong uses of the demo API's Python SDK: `mypy --strict` must refuse each
(test_sdks_e2e.py checks the messages), which proves the check can fail."""

from demo_v2_client import AuthenticatedClient
from demo_v2_client.api.items import get_item, list_items
from demo_v2_client.models import ItemIn


def names_without_checking(client: AuthenticatedClient) -> list[str]:
    # A 401 or 429 answer parses to a Problem, not to a list of items.
    return [item.name for item in list_items.sync(client=client)]


def item_by_name(client: AuthenticatedClient) -> object:
    # `item_id` is an integer.
    return get_item.sync(client=client, item_id="portcullis")


def priceless() -> ItemIn:
    # `price` is required.
    return ItemIn(name="moat")
