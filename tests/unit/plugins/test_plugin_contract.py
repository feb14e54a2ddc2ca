"""The plugin contract: declared phases match the phase methods, chains follow the
declaration, and every handler pairs with the schema the model validates against."""

from __future__ import annotations

from typing import ClassVar

import pytest

from portcullis.cache.memory import MemoryCache, default_memory_cache
from portcullis.limits.memory import MemoryBackend, default_memory_backend
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.registry import SCHEMAS
from portcullis.plugins.base import Headers, Phase, Plugin, PluginChain, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, mismatches


class _Config(PluginConfig):
    pass


def test_a_phase_method_that_is_not_declared_is_refused() -> None:
    with pytest.raises(TypeError, match="phases"):

        class _Undeclared(Plugin[_Config]):
            name: ClassVar[str] = "undeclared"
            priority: ClassVar[int] = 1
            config_model = _Config

            def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
                return None


def test_a_declared_phase_without_its_method_is_refused() -> None:
    with pytest.raises(TypeError, match="response_body"):

        class _Missing(Plugin[_Config]):
            name: ClassVar[str] = "missing"
            priority: ClassVar[int] = 1
            config_model = _Config
            phases: ClassVar[frozenset[Phase]] = frozenset({"response_body"})


class _Head(Plugin[_Config]):
    name: ClassVar[str] = "head"
    priority: ClassVar[int] = 5
    config_model = _Config
    phases: ClassVar[frozenset[Phase]] = frozenset({"response"})

    def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        headers.append((b"x-head", b"1"))


class _Quiet(Plugin[_Config]):
    name: ClassVar[str] = "quiet"
    priority: ClassVar[int] = 9
    config_model = _Config


def test_a_chain_holds_each_plugin_in_the_phases_it_declares_by_priority() -> None:
    head, late_head = _Head(_Config(), PluginEnv()), _Head(_Config(), PluginEnv())
    quiet = _Quiet(_Config(), PluginEnv())
    chain = PluginChain.from_plugins([quiet, head, late_head])
    assert chain.response == (head, late_head)
    assert chain.access == chain.body == chain.request_body == ()


def test_every_handler_pairs_with_its_registered_schema() -> None:
    assert mismatches() == []
    assert set(PLUGINS) == set(SCHEMAS)


def test_a_handler_registered_with_another_schema_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(SCHEMAS, "acl", _Config)
    monkeypatch.setitem(PLUGINS, "quiet", _Quiet)
    assert mismatches() == [
        "acl: handler config_model is not the registered schema",
        "quiet: no schema",
    ]


def test_the_env_hands_out_the_workers_backends_else_the_process_defaults() -> None:
    limits, cache = MemoryBackend(), MemoryCache()
    env = PluginEnv(limits=limits, cache=cache)
    assert env.limit_backend() is limits
    assert env.cache_backend() is cache
    bare = PluginEnv()
    assert bare.limit_backend() is default_memory_backend()
    assert bare.cache_backend() is default_memory_cache()
    assert bare.limit_backend() is not limits
