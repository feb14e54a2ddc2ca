"""Run an SDK generator on an OpenAPI document and package what it wrote.

Portcullis does not write clients itself: it runs the generators users already trust,
as separate programs (their dependency pins are their own: `./dev setup` installs
openapi-python-client in `.venv-tools/sdk` and openapi-ts in `tools/sdk`, see
docs/decisions/026-sdk-generation.md). A generator is found, in this order, at the
path in its environment variable (`PORTCULLIS_OPENAPI_PYTHON_CLIENT`,
`PORTCULLIS_OPENAPI_TS`), in the checkout Portcullis runs from, or on `PATH`; a
missing one is a `GeneratorMissing` that says how to install it.

The generated clients carry the document's security schemes: an API key goes in
`AuthenticatedClient(token=..., prefix="", auth_header_name="X-API-Key")` (Python)
or `createClient({auth: key})` (TypeScript): docs/sdks.md shows both.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

# The checkout this module runs from (src/portcullis/sdks/generators.py -> the root).
_CHECKOUT = Path(__file__).resolve().parents[3]
GENERATOR_TIMEOUT = 300.0
_MAX_OUTPUT = 4000


class Language(StrEnum):
    """The languages an SDK can be generated in."""

    python = "python"
    typescript = "typescript"


@dataclass(frozen=True, slots=True)
class Generator:
    """One generator program: where it is looked for, and how to install it."""

    language: Language
    program: str
    env_var: str
    in_checkout: Path
    install_hint: str


GENERATORS = {
    Language.python: Generator(
        Language.python,
        "openapi-python-client",
        "PORTCULLIS_OPENAPI_PYTHON_CLIENT",
        _CHECKOUT / ".venv-tools" / "sdk" / "bin" / "openapi-python-client",
        "run `./dev setup` in the Portcullis checkout, or `pipx install "
        "openapi-python-client==0.29.1` (or set PORTCULLIS_OPENAPI_PYTHON_CLIENT to its path)",
    ),
    Language.typescript: Generator(
        Language.typescript,
        "openapi-ts",
        "PORTCULLIS_OPENAPI_TS",
        _CHECKOUT / "tools" / "sdk" / "node_modules" / ".bin" / "openapi-ts",
        "run `./dev setup` in the Portcullis checkout, or `npm install "
        "@hey-api/openapi-ts@0.94.5 typescript@6.0.3` and set PORTCULLIS_OPENAPI_TS to "
        "node_modules/.bin/openapi-ts",
    ),
}


class SdkError(Exception):
    """Generation could not run or failed; `message` says why without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GeneratorMissing(SdkError):
    """The generator program for a language is not installed."""


class InvalidDocument(SdkError):
    """The input is not an OpenAPI 3.x document a generator can take."""


class GenerationFailed(SdkError):
    """The generator ran and refused the document (its own message is kept)."""


@dataclass(frozen=True, slots=True)
class GeneratedSdk:
    """What a generation wrote: the folder, the package or module to import, the files."""

    language: Language
    directory: Path
    package: str
    files: int
    seconds: float
    # What the generator left out, in its words (openapi-python-client skips a schema it
    # cannot map, e.g. two schemas with one title, and says so).
    warnings: tuple[str, ...] = ()


def find_generator(language: Language) -> Path:
    """The generator's executable (see the module docstring for the search order)."""
    generator = GENERATORS[language]
    configured = os.environ.get(generator.env_var)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise GeneratorMissing(
                f"{generator.env_var}={configured} is not an executable file: "
                f"{generator.install_hint}"
            )
        return path
    if generator.in_checkout.is_file():
        return generator.in_checkout
    found = shutil.which(generator.program)
    if found is None:
        raise GeneratorMissing(
            f"the {language} SDK generator `{generator.program}` is not installed: "
            f"{generator.install_hint}"
        )
    return Path(found)


def package_name(api: str, version: str) -> str:
    """The Python package (and TypeScript folder) name of an API version's client:
    `demo` `v2` -> `demo_v2_client`."""
    stem = re.sub(r"[^a-z0-9]+", "_", f"{api}_{version}".lower()).strip("_") or "api"
    if stem[0].isdigit():
        stem = f"api_{stem}"
    return f"{stem}_client"


def check_document(document: Any) -> dict[str, Any]:
    """The document, if it is a self-contained OpenAPI 3.x object with paths.

    A `$ref` outside the document is refused: the generators would follow it, reading a
    file or fetching a URL from wherever they run (the control plane, for the admin API);
    a published document has its external references resolved already."""
    if not isinstance(document, Mapping):
        raise InvalidDocument("the OpenAPI document must be a JSON object")
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise InvalidDocument(f"openapi: expected an OpenAPI 3.0 or 3.1 document, got {version!r}")
    if not isinstance(document.get("paths"), Mapping):
        raise InvalidDocument("paths: the document has no paths object")
    external = _external_ref(document, "#")
    if external is not None:
        where, ref = external
        raise InvalidDocument(
            f"{where}: $ref {ref!r} points outside the document (only local #/ references)"
        )
    return dict(document)


def _external_ref(node: Any, pointer: str) -> tuple[str, str] | None:
    """The JSON pointer and value of the first `$ref` that is not local (`#...`)."""
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return f"{pointer}/$ref", ref
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return None
    for key, value in items:
        found = _external_ref(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}")
        if found is not None:
            return found
    return None


async def generate_sdk(
    document: Mapping[str, Any],
    language: Language,
    out: Path,
    *,
    package: str,
    step: Callable[[str], None] = lambda _: None,
) -> GeneratedSdk:
    """Generate the `language` client of `document` into `out` (replaced if it exists).

    Python: a project folder (`pyproject.toml`, `README.md`, the package `package`)
    made by openapi-python-client. TypeScript: the source folder made by openapi-ts
    with its fetch client. `step` hears each stage, for a progress display."""
    checked = check_document(document)
    executable = find_generator(language)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="portcullis-sdk-") as tmp:
        work = Path(tmp)
        argv = await asyncio.to_thread(_prepare, checked, language, executable, work, package)
        step(f"running {executable.name}")
        warnings = await asyncio.to_thread(_run, argv, executable, cwd=work)
        step(f"writing {out}")
        files = await asyncio.to_thread(_install, work / "out", out, executable)
    return GeneratedSdk(language, out, package, files, time.monotonic() - started, warnings)


def _prepare(
    document: dict[str, Any], language: Language, executable: Path, work: Path, package: str
) -> list[str]:
    """Write the generator's input into `work`; its command line (output: `work/out`)."""
    source = work / "openapi.json"
    source.write_text(json.dumps(document))
    if language is Language.python:
        return _python_argv(executable, source, work / "out", work, package)
    return _typescript_argv(executable, source, work / "out")


def _install(generated: Path, out: Path, executable: Path) -> int:
    """Move what the generator wrote to `out` (replacing it); the number of files."""
    if not generated.is_dir():
        raise GenerationFailed(f"{executable.name} wrote nothing")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(generated, out)
    return sum(1 for p in out.rglob("*") if p.is_file())


def _python_argv(
    executable: Path, source: Path, target: Path, work: Path, package: str
) -> list[str]:
    project = package.replace("_", "-")
    # JSON is YAML: the generator reads its config with a YAML parser.
    config = {
        "project_name_override": project,
        "package_name_override": package,
        # --no-cache: no .ruff_cache folder in the SDK.
        "post_hooks": [
            "ruff check . --fix-only --quiet --no-cache",
            "ruff format . --quiet --no-cache",
        ],
    }
    (work / "config.yaml").write_text(json.dumps(config))
    return [
        str(executable), "generate", "--path", str(source), "--output-path", str(target),
        "--meta", "uv", "--config", str(work / "config.yaml"), "--overwrite",
    ]  # fmt: skip


def _typescript_argv(executable: Path, source: Path, target: Path) -> list[str]:
    return [
        str(executable), "--input", str(source), "--output", str(target),
        "--client", "@hey-api/client-fetch", "--no-log-file", "--silent",
    ]  # fmt: skip


def _run(argv: list[str], executable: Path, *, cwd: Path) -> tuple[str, ...]:
    """Run the generator; its warnings (lines saying what it could not generate).

    A blocking `subprocess.run` (callers run it in a thread), not the event loop's
    subprocess support: inside a granian worker uvloop's children exit 1 unrun."""
    # The generator's own folder first on PATH: openapi-python-client's post hooks run
    # the ruff of its venv, openapi-ts the node next to it where there is one.
    env = {**os.environ, "PATH": f"{executable.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=GENERATOR_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GenerationFailed(
            f"{executable.name} did not finish in {GENERATOR_TIMEOUT:.0f} s"
        ) from None
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        tail = text.strip()[-_MAX_OUTPUT:]
        raise GenerationFailed(f"{executable.name} failed (exit {done.returncode}): {tail}")
    return tuple(
        line.strip() for line in text.splitlines() if line.startswith(("Unable to", "Failure"))
    )


def zip_folder(folder: Path, root: str) -> bytes:
    """`folder`'s files as a zip archive whose entries sit under `root/`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, f"{root}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()
