"""The import contracts of pyproject.toml (`lint-imports`, run by `./dev test`): the tree
keeps them, and each kind of wrong-way import injected into a copy of it breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the package under `tree/src` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "portcullis",
        tmp_path / "src" / "portcullis",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def inject(tree: Path, module: str, line: str) -> None:
    path = tree / "src" / "portcullis" / module
    path.write_text(path.read_text() + f"\n{line}  # injected by the test\n")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# (module, injected import, the broken edge lint-imports must report), one per kind.
WRONG_WAY = [
    # The model validating plugins through their handlers (the old 16-module cycle).
    ("model/config.py", "import portcullis.plugins.registry", "portcullis.plugins.registry"),
    # The data plane reaching into the control plane.
    ("upstream/balancer.py", "from portcullis.admin import app", "portcullis.admin.app"),
    # The snapshot compiler reaching up into the proxy (the old runtime <-> proxy cycle).
    ("runtime/snapshot.py", "import portcullis.proxy.app", "portcullis.proxy.app"),
    # The upstream pieces the snapshot holds reaching up into the runtime.
    ("upstream/shedding.py", "import portcullis.runtime.snapshot", "portcullis.runtime.snapshot"),
    # A plugin naming the runtime's compiled route instead of its RouteView.
    ("plugins/base.py", "import portcullis.runtime.snapshot", "portcullis.runtime.snapshot"),
    # A plugin schema importing its handler.
    ("model/plugins/acl.py", "import portcullis.plugins.acl", "portcullis.plugins.acl"),
    # A schema importing the gateway model it is part of.
    ("model/plugins/cors.py", "import portcullis.model.config", "portcullis.model.config"),
    # The traffic rules reaching back up to the gateway model (the old mid-file cycle).
    ("model/traffic.py", "import portcullis.model.config", "portcullis.model.config"),
    # Config validation pulling in the database layer.
    ("model/traffic.py", "import sqlalchemy", "sqlalchemy"),
    # A leaf growing a dependency.
    ("model/types.py", "import portcullis.http_fields", "portcullis.http_fields"),
    # SQL in an admin router instead of the service layer.
    ("admin/routers/usage.py", "import sqlalchemy.exc", "sqlalchemy"),
    # A new analytics -> admin import (only the listed old ones are ignored).
    ("analytics/queries.py", "import portcullis.admin.app", "portcullis.admin.app"),
    # The service layer reaching up into the GraphQL face.
    ("services/entities.py", "import portcullis.graph.schema", "portcullis.graph.schema"),
    # The GraphQL face reaching up into the REST app, or holding SQL of its own.
    ("graph/http.py", "import portcullis.admin.app", "portcullis.admin.app"),
    ("graph/entities.py", "import sqlalchemy", "sqlalchemy"),
]


def test_each_wrong_way_import_breaks_a_contract(tree: Path) -> None:
    for module, line, _ in WRONG_WAY:
        inject(tree, module, line)
    result = lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    reported = " ".join(result.stdout.split())
    for module, _, imported in WRONG_WAY:
        importer = "portcullis." + module.removesuffix(".py").replace("/", ".")
        assert f"{importer} -> {imported}" in reported, (importer, imported, result.stdout)
