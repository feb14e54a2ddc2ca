"""The generator runner's pure parts: package names, the document check, where a generator
is found (and the install hint when it is not), the zip layout."""

from __future__ import annotations

import dataclasses
import io
import stat
import zipfile
from pathlib import Path

import pytest

from portcullis.sdks import generators
from portcullis.sdks.generators import (
    GeneratorMissing,
    InvalidDocument,
    Language,
    check_document,
    find_generator,
    package_name,
    zip_folder,
)


@pytest.mark.parametrize(
    ("api", "version", "package"),
    [
        ("demo", "v2", "demo_v2_client"),
        ("Billing-API", "2024-06-01", "billing_api_2024_06_01_client"),
        ("3d", "beta.3", "api_3d_beta_3_client"),
    ],
)
def test_package_names_are_python_identifiers(api: str, version: str, package: str) -> None:
    assert package_name(api, version) == package
    assert package.isidentifier()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({"swagger": "2.0", "paths": {}}, "expected an OpenAPI 3.0 or 3.1 document, got None"),
        ({"openapi": "2.0", "paths": {}}, "got '2.0'"),
        ({"openapi": "3.1.0"}, "paths: the document has no paths object"),
    ],
)
def test_documents_generators_cannot_take_are_refused(document: object, message: str) -> None:
    with pytest.raises(InvalidDocument, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_document(document)


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No generator in the checkout, an empty PATH, no variables: `tmp_path/bin` is PATH."""
    for language, generator in list(generators.GENERATORS.items()):
        monkeypatch.setitem(
            generators.GENERATORS,
            language,
            dataclasses.replace(generator, in_checkout=tmp_path / "absent"),
        )
        monkeypatch.delenv(generator.env_var, raising=False)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path / "bin"


@pytest.mark.parametrize(
    ("language", "hint"),
    [
        (Language.python, "pipx install openapi-python-client==0.29.1"),
        (Language.typescript, "npm install @hey-api/openapi-ts@0.94.5 typescript@6.0.3"),
    ],
)
def test_a_missing_generator_says_how_to_install_it(
    nowhere: Path, language: Language, hint: str
) -> None:
    with pytest.raises(GeneratorMissing) as refused:
        find_generator(language)
    assert "is not installed" in refused.value.message
    assert "./dev setup" in refused.value.message
    assert hint in refused.value.message


def test_generators_are_found_by_variable_then_checkout_then_path(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_path = executable(nowhere / "openapi-ts")
    assert find_generator(Language.typescript) == on_path

    in_checkout = executable(tmp_path / "checkout-openapi-ts")
    generator = generators.GENERATORS[Language.typescript]
    monkeypatch.setitem(
        generators.GENERATORS,
        Language.typescript,
        dataclasses.replace(generator, in_checkout=in_checkout),
    )
    assert find_generator(Language.typescript) == in_checkout

    named = executable(tmp_path / "named-openapi-ts")
    monkeypatch.setenv("PORTCULLIS_OPENAPI_TS", str(named))
    assert find_generator(Language.typescript) == named

    # A variable naming something that cannot run is an error, not a silent fallback.
    named.chmod(0o644)
    with pytest.raises(GeneratorMissing, match="is not an executable file"):
        find_generator(Language.typescript)


def test_the_archive_holds_the_folder_under_one_root(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "api").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "api" / "items.py").write_text("x = 1\n")
    archive = zipfile.ZipFile(io.BytesIO(zip_folder(tmp_path, "demo_v2_client")))
    assert archive.namelist() == [
        "demo_v2_client/pkg/__init__.py",
        "demo_v2_client/pkg/api/items.py",
    ]
    assert archive.read("demo_v2_client/pkg/api/items.py") == b"x = 1\n"


@pytest.mark.parametrize(
    ("ref", "where"),
    [
        ("/etc/passwd", "#/paths/~1items/get/responses/200/$ref"),
        ("http://169.254.169.254/latest/meta-data", "#/paths/~1items/get/responses/200/$ref"),
        ("other.yaml#/components/schemas/Item", "#/paths/~1items/get/responses/200/$ref"),
    ],
)
def test_references_outside_the_document_are_refused(ref: str, where: str) -> None:
    """The generators would read the file or fetch the URL from wherever they run."""
    document = {
        "openapi": "3.1.0",
        "paths": {"/items": {"get": {"responses": {"200": {"$ref": ref}}}}},
    }
    with pytest.raises(InvalidDocument) as refused:
        check_document(document)
    assert refused.value.message == (
        f"{where}: $ref {ref!r} points outside the document (only local #/ references)"
    )
    document["paths"]["/items"]["get"]["responses"]["200"]["$ref"] = "#/components/x"
    assert check_document(document) == document
