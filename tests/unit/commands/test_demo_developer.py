"""The demo's portal developer: made verified on the first start, given a new password on
each start (the banner prints it), and that password signs in."""

from __future__ import annotations

from pathlib import Path

import pytest

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


async def test_each_demo_start_prints_an_owner_password_that_signs_in(tmp_path: Path) -> None:
    """The dashboard's demo owner: made on the first start, a new password on each."""
    from portcullis.commands.serve import DEMO_ADMIN, demo_admin
    from portcullis.services.admin_auth import AuthService, InvalidCredentials
    from portcullis.services.rbac import Role

    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await upgrade_to_head(url)
    settings = Settings(database_url=url, log_json=False)
    email, first = await demo_admin(settings)
    again, second = await demo_admin(settings)
    assert email == again == DEMO_ADMIN
    assert first != second
    engine = create_engine(url)
    try:
        auth = AuthService(engine)
        user = await auth.check_password(DEMO_ADMIN, second, "127.0.0.1")
        assert user.role is Role.OWNER
        assert len(await auth.list_users()) == 1
        with pytest.raises(InvalidCredentials):  # the previous start's password is gone
            await auth.check_password(DEMO_ADMIN, first, "127.0.0.1")
    finally:
        await engine.dispose()
