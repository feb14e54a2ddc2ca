"""`portcullis sdk generate`: a client SDK for one API version, from its published document.

The document is the one clients see through the gateway (servers, security schemes
and gateway responses included): by default it is fetched from the control plane's
catalogue, `GET {--admin-url}/apis/{api}/{version}/openapi.json`; `--from FILE` takes a
saved copy (JSON or YAML) instead. The generators are separate programs
(portcullis.sdks.generators says where they are looked for); a missing one is an
error that says how to install it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import typer
from rich.console import Console
from rich.markup import escape

from portcullis.errors import UserError

console = Console(stderr=True, highlight=False, soft_wrap=True)
DEFAULT_ADMIN_URL = "http://127.0.0.1:8001"
FETCH_TIMEOUT = 30.0
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


def published_document_url(admin_url: str, api: str, version: str) -> str:
    """Where the catalogue serves an API version's published OpenAPI document."""
    base = admin_url.rstrip("/")
    return f"{base}/apis/{quote(api, safe='')}/{quote(version, safe='')}/openapi.json"


def fetch_document(url: str, api_key: str | None) -> Any:
    """The JSON document at `url` (an API key, for a key-gated catalogue, as a Bearer token)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise UserError(f"--admin-url: {url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        hint = " (is the API public, or give --api-key?)" if exc.code in (401, 403) else ""
        raise UserError(f"GET {url}: {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"GET {url}: {reason} (is the control plane running?)") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise UserError(f"GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise UserError(f"GET {url}: the answer is not JSON ({exc})") from None


def read_document(path: Path) -> Any:
    """An OpenAPI document saved as JSON or YAML."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--from: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"--from: {path} is not valid JSON or YAML: {exc}") from None


def register_sdk(app: typer.Typer) -> None:
    """Mount the `sdk` command group on the root CLI."""
    group = typer.Typer(
        help="Generate client SDKs from the published OpenAPI documents.", no_args_is_help=True
    )

    @group.command("generate")
    def generate(
        api: Annotated[str, typer.Option("--api", help="The API's name.")],
        version: Annotated[str, typer.Option("--version", help="The API version, e.g. v2.")],
        lang: Annotated[str, typer.Option("--lang", help="python or typescript.")],
        out: Annotated[Path, typer.Option("--out", help="The folder to write the SDK to.")],
        source: Annotated[
            Path | None,
            typer.Option(
                "--from", help="Read the published document from this file (JSON or YAML)."
            ),
        ] = None,
        admin_url: Annotated[
            str,
            typer.Option(
                "--admin-url",
                envvar="PORTCULLIS_ADMIN_URL",
                help="The control plane serving the catalogue.",
            ),
        ] = DEFAULT_ADMIN_URL,
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key",
                envvar="PORTCULLIS_API_KEY",
                help="An API key, if the API's documents are key-gated.",
            ),
        ] = None,
        package: Annotated[
            str | None,
            typer.Option("--package", help="The package name (default: <api>_<version>_client)."),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Replace --out if it exists and is not empty.")
        ] = False,
    ) -> None:
        """Generate the LANG client of API version VERSION into OUT."""
        from portcullis.sdks.generators import Language, SdkError, generate_sdk, package_name

        try:
            language = Language(lang)
        except ValueError:
            raise UserError(f"--lang must be python or typescript, not {lang!r}") from None
        if out.exists() and not out.is_dir():
            raise UserError(f"--out: {out} is a file")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise UserError(f"--out: {out} is not empty (give --force to replace it)")
        name = package or package_name(api, version)
        if not name.isidentifier():
            raise UserError(f"--package: {name!r} is not a valid package name")

        with console.status("", spinner="dots") as status:
            if source is not None:
                status.update(f"reading {escape(str(source))}")
                document = read_document(source)
            else:
                url = published_document_url(admin_url, api, version)
                status.update(f"fetching {escape(url)}")
                document = fetch_document(url, api_key)
            try:
                sdk = asyncio.run(
                    generate_sdk(
                        document,
                        language,
                        out,
                        package=name,
                        step=lambda text: status.update(escape(text)),
                    )
                )
            except SdkError as exc:
                raise UserError(exc.message) from None
        for warning in sdk.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        console.print(
            f"[green]generated[/] the {language} SDK of {escape(api)} {escape(version)} "
            f"in {escape(str(out))} ({sdk.files} files, {sdk.seconds:.1f} s)"
        )
        if language is Language.python:
            console.print(f"  pip install {escape(str(out))}  ->  import {sdk.package}")
        else:
            console.print(f"  import {{ createClient }} from './{escape(out.name)}/client'")

    app.add_typer(group, name="sdk")
