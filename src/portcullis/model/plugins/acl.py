"""The `acl` plugin's config (its handler: plugins/acl.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.types import Name

# RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
ScopeToken = Annotated[str, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")]


class AclConfig(PluginConfig):
    allow: list[Name] | None = Field(default=None, description="consumer groups allowed")
    deny: list[Name] | None = Field(default=None, description="consumer groups refused")
    required_scopes: list[ScopeToken] = Field(
        default_factory=list,
        description="scopes the credential must all carry",
    )
    hide_groups_header: bool = Field(
        default=False, description="do not send X-Consumer-Groups upstream"
    )
    realm: str = Field(
        default="portcullis",
        pattern=r'^[^"\\\x00-\x1f\x7f]{1,128}$',
        description="realm of the WWW-Authenticate challenges",
    )

    @model_validator(mode="after")
    def _one_list(self) -> AclConfig:
        if self.allow is not None and self.deny is not None:
            raise ValueError("set allow or deny, not both")
        if self.allow is None and self.deny is None and not self.required_scopes:
            raise ValueError("set allow, deny or required_scopes")
        return self
