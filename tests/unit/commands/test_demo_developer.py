"""The demo's portal developer: made verified on the first start, given a new password on
each start (the banner prints it), and that password signs in."""

from __future__ import annotations

from pathlib import Path

from portcullis.commands.serve import DEMO_DEVELOPER, demo_developer
from portcullis.services.portal import DeveloperContext
from portcullis.settings import Settings
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.portal import build, facts


async def test_each_demo_start_prints_a_password_that_signs_in(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await upgrade_to_head(url)
    settings = Settings(database_url=url, log_json=False)
    email, first = await demo_developer(settings)
    again, second = await demo_developer(settings)
    assert email == again == DEMO_DEVELOPER
    assert first != second
    engine = create_engine(url)
    try:
        accounts = build(engine).accounts
        developer = await accounts.login(facts(), DEMO_DEVELOPER, second)
        assert developer.email_verified
        assert len(await accounts.teams(DeveloperContext(developer, facts()))) == 1
    finally:
        await engine.dispose()
