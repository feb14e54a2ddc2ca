"""RequestConfig: one request reads the config once and sees one version; a change
through it is seen by its next read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.config_editor import ConfigEditor, Edit, RequestConfig


def _counting(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    return statements


async def test_reads_once_and_sees_its_own_writes(
    editor: ConfigEditor, engine: AsyncEngine
) -> None:
    view = RequestConfig(editor)
    statements = _counting(engine)
    first = await view.state()
    reads = len(statements)
    assert reads >= 1
    for _ in range(5):
        assert await view.state() is first
    assert len(statements) == reads

    def add_service(state: Any) -> Edit[None]:
        document = {**state.document, "services": [{"name": "s", "url": "http://s.internal"}]}
        return Edit(document, None)

    await view.mutate(add_service, author="test")
    after = await view.state()
    assert after.version == first.version + 1
    assert [s.name for s in after.config.services] == ["s"]
    # Another request (another view) sees the new version too; the first view did not
    # keep a stale state for anyone else.
    assert (await RequestConfig(editor).state()).version == after.version
