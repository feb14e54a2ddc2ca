"""`portcullis` command line: serve · demo · migrate · config · admin · keys · credentials ·
webhooks · graphql · apis · sdk."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from portcullis.errors import UserError

app = typer.Typer(
    name="portcullis",
    help="Portcullis API gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors.", envvar="PORTCULLIS_DEBUG")
    ] = False,
) -> None:
    _state["debug"] = debug


def _mount() -> None:
    # Imported here so `portcullis --help` stays fast and modules stay independent.
    from portcullis.commands import admin as admin_cmd
    from portcullis.commands import apis as apis_cmd
    from portcullis.commands import certificates as certificates_cmd
    from portcullis.commands import config as config_cmd
    from portcullis.commands import credentials as credentials_cmd
    from portcullis.commands import graphql_documents as graphql_cmd
    from portcullis.commands import keys as keys_cmd
    from portcullis.commands import sdk as sdk_cmd
    from portcullis.commands import serve as serve_cmd
    from portcullis.commands import webhooks as webhooks_cmd

    serve_cmd.register(app)
    config_cmd.register_migrate(app)
    admin_cmd.register_admin(app)
    keys_cmd.register_keys(app)
    credentials_cmd.register_credentials(app)
    webhooks_cmd.register_webhooks(app)
    graphql_cmd.register_graphql(app)
    apis_cmd.register_apis(app)
    certificates_cmd.register_certificates(app)
    sdk_cmd.register_sdk(app)
    app.add_typer(config_cmd.app, name="config", help="Validate, diff, apply and export config.")


def main() -> None:
    _mount()
    try:
        rc = app(standalone_mode=False)
    except UserError as exc:
        if _state["debug"]:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            err_console.print_exception()
        else:
            err_console.print(
                f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for details)",
                highlight=False,
            )
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
