"""One registry of problem kinds for both planes: one title per `type` URI."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import portcullis
from portcullis.problems import NOT_FOUND, ProblemKind, RegisteredProblemKind, problem_kinds

# Modules that do something when imported (the CLI entry point, alembic's migration env).
SKIP = ("portcullis.__main__", "portcullis.store.alembic")


def every_module() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(portcullis.__path__, "portcullis."):
        if not info.name.startswith(SKIP):
            names.append(info.name)
    return names


def test_every_type_uri_has_exactly_one_title_across_both_planes() -> None:
    titles: dict[str, set[str]] = {}
    for name in every_module():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, ProblemKind):
                titles.setdefault(value.type_uri, set()).add(value.title)
    assert len(titles) > 40  # both planes' kinds were found
    assert {uri: t for uri, t in titles.items() if len(t) != 1} == {}
    registry = problem_kinds()
    assert {uri: registry[uri].title for uri in titles} == {
        uri: next(iter(t)) for uri, t in titles.items()
    }


def test_a_second_title_for_a_known_type_is_refused() -> None:
    with pytest.raises(ValueError, match="already has the title 'Resource not found'"):
        ProblemKind("not-found", "Nothing here", 404)
    assert problem_kinds()[NOT_FOUND.type_uri] is NOT_FOUND


def test_the_same_kind_defined_again_is_accepted_and_registered_types_are_separate() -> None:
    again = ProblemKind("not-found", "Resource not found", 404)
    assert again == NOT_FOUND
    # An IANA-registered kind lives under IANA's URI, so its slug never clashes with ours.
    iana = RegisteredProblemKind("not-found", "Something else", 404)
    assert iana.type_uri != NOT_FOUND.type_uri
