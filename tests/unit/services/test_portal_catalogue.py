"""The catalogue a developer sees: public APIs and their apps' organizations', search,
version notices, and reference docs of the published description."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.model.loader import load_config_file
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.portal_catalogue import ANONYMOUS, AppRef, PortalCatalogue, access_of
from portcullis.settings import Settings

EXAMPLE = Path(__file__).parents[3] / "examples" / "gateway.yaml"


class FakeEditor:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    async def state(self) -> Any:
        return SimpleNamespace(config=self.config)


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    demo = load_config_file(EXAMPLE)
    private = demo.apis[0].model_copy(
        update={"name": "internal", "public": False, "organization": None, "title": "Internal"}
    )
    return demo.model_copy(update={"apis": [*demo.apis, private]})


async def test_listing_search_notices_and_reference_docs(config: GatewayConfig) -> None:
    catalogue = PortalCatalogue(FakeEditor(config), Settings(proxy_port=8000))  # type: ignore[arg-type]
    assert [a.name for a in await catalogue.listing(ANONYMOUS)] == ["demo"]
    developer = access_of(config, [AppRef("demo-app", "My app", "team-1")])
    assert [a.name for a in await catalogue.listing(developer)] == ["demo", "internal"]
    assert [a.name for a in await catalogue.listing(developer, "INTERNAL")] == ["internal"]
    assert await catalogue.listing(developer, "nothing-like-it") == []
    with pytest.raises(ServiceError) as hidden:
        await catalogue.api(ANONYMOUS, "internal")
    assert hidden.value.kind is NOT_FOUND
    demo = await catalogue.api(ANONYMOUS, "demo")
    v1, v2 = demo.versions
    assert v1.notice is not None
    assert "Deprecated since 2026-11-01" in v1.notice
    assert "Use version v2" in v1.notice
    assert v2.notice is None
    _, _, docs, document = await catalogue.published(ANONYMOUS, "demo", "v2")
    assert docs.servers == ["http://127.0.0.1:8000/v2"]
    assert docs.operations == 4
    assert document["info"]["x-api-version"] == "v2"
    operations = await catalogue.operations(ANONYMOUS, "demo", "v2")
    assert ("GET", "/v2/items/{item_id}") in [(o.method, o.path) for o in operations]
    # Rendered once per config snapshot.
    assert (await catalogue.published(ANONYMOUS, "demo", "v2"))[2] is docs
