"""`portcullis admin create`: create an admin user from the command line (e.g. the first owner)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from portcullis.errors import UserError
from portcullis.settings import Settings

console = Console(stderr=True)
PASSWORD_ENV = "PORTCULLIS_ADMIN_PASSWORD"  # noqa: S105 - a variable name, not a secret
MIN_PASSWORD_LENGTH = 12


async def create_admin_user(
    database_url: str, email: str, password: str, role: str, organization_id: str | None
) -> str:
    """Migrate the store if needed, create the user; returns the new user's id."""
    from portcullis.services.admin_auth import AuthService, EmailTaken
    from portcullis.services.rbac import Role
    from portcullis.store.engine import create_engine
    from portcullis.store.migrations import upgrade_to_head

    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        try:
            user = await AuthService(engine).create_user(
                email, password, Role(role), organization_id
            )
        except EmailTaken as exc:
            raise UserError(str(exc)) from None
        return user.id
    finally:
        await engine.dispose()


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise UserError(f"no password: use --password-stdin or set {PASSWORD_ENV}")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def register_admin(app: typer.Typer) -> None:
    """Mount the `admin` command group on the root CLI."""
    group = typer.Typer(help="Manage control-plane admin users.", no_args_is_help=True)

    @group.command("create")
    def create(
        email: Annotated[str, typer.Option("--email", help="The user's email (login name).")],
        role: Annotated[
            str,
            typer.Option("--role", help="owner, admin, operator or viewer."),
        ] = "owner",
        organization: Annotated[
            str | None, typer.Option("--organization", help="Limit the user to this org id.")
        ] = None,
        password_stdin: Annotated[
            bool,
            typer.Option(
                "--password-stdin", help=f"Read the password from stdin (else ${PASSWORD_ENV})."
            ),
        ] = False,
    ) -> None:
        """Create an admin user (no default credentials exist; this makes the first owner)."""
        if role not in ("owner", "admin", "operator", "viewer"):
            raise UserError(f"--role must be owner, admin, operator or viewer, not {role!r}")
        if "@" not in email:
            raise UserError(f"--email: {email!r} is not an email address")
        password = _read_password(password_stdin)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        settings = Settings()
        user_id = asyncio.run(
            create_admin_user(settings.database_url, email, password, role, organization)
        )
        console.print(f"created {role} [bold]{email.strip().lower()}[/] (id {user_id})")

    app.add_typer(group, name="admin")
