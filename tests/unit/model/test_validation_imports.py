"""Validating a config file imports the model and the plugin schemas only: no handler, no
data or control plane, and none of aiohttp, SQLAlchemy, cryptography or FastAPI (checked in
a fresh interpreter, since this test process has imported everything already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from portcullis.model.plugins.registry import SCHEMAS

# A valid config for every plugin (jwt-auth without static keys: checking key material
# needs cryptography, imported only for a config that holds one).
MINIMAL: dict[str, dict[str, Any]] = {
    "acl": {"allow": ["staff"]},
    "basic-auth": {},
    "hmac-auth": {},
    "mtls-auth": {
        "ca_certificates": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    },
    "cors": {"origins": ["https://app.example.com"]},
    "file-log": {"path": "/var/log/portcullis/requests.log"},
    "http-log": {"url": "https://logs.example.com/ingest", "headers": {"authorization": "x"}},
    "ip-restriction": {"allow": ["10.0.0.0/8"]},
    "jwt-auth": {"gateway_tokens": True},
    "key-auth": {},
    "plan-limits": {"default_plan": "free"},
    "rate-limit": {"limits": [{"limit": 10, "period": "1m"}]},
    "request-size-limit": {"max_bytes": 1024},
    "request-termination": {"status_code": 503, "message": "maintenance"},
    "request-transformer": {"headers": {"add": {"x-a": "1"}}},
    "request-validator": {},
    "response-cache": {},
    "response-transformer": {"headers": {"remove": ["x-internal"]}},
    "syslog": {"host": "logs.example.com", "protocol": "tcp"},
}

PROBE = """
import json, sys
from portcullis.model.loader import load_config_file
config = load_config_file(sys.argv[1])
print(json.dumps({"plugins": len(config.plugins), "modules": sorted(sys.modules)}))
"""


def test_validating_a_config_imports_no_handler_and_no_heavy_dependency(tmp_path: Path) -> None:
    assert set(MINIMAL) == set(SCHEMAS), "add the new plugin to MINIMAL"
    document = {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "r", "service": "svc", "paths": ["/"]}],
        "plans": [{"name": "free", "limits": [{"limit": 5, "period": "1s"}]}],
        # request-validator checks against the description of the API version a route serves.
        "apis": [
            {
                "name": "api",
                "versions": [
                    {
                        "name": "v1",
                        "routes": ["r"],
                        "openapi": {
                            "openapi": "3.1.0",
                            "info": {"title": "a", "version": "1"},
                            "paths": {},
                        },
                    }
                ],
            }
        ],
        "plugins": [
            {"name": name, "route": "r", "config": config} for name, config in MINIMAL.items()
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = json.loads(result.stdout)
    assert probe["plugins"] == len(MINIMAL)
    modules = set(probe["modules"])
    heavy = {"aiohttp", "sqlalchemy", "cryptography", "fastapi", "jwt", "redis", "granian"}
    assert heavy & modules == set()
    ours = {m for m in modules if m.startswith("portcullis.")}
    outside_the_model = {m for m in ours if not m.startswith("portcullis.model")}
    assert outside_the_model <= LEAVES, outside_the_model - LEAVES


# What the model may import from the rest of portcullis: leaves (the "leaves" import
# contract), plus the limits package's __init__ (it re-exports the backend protocol).
LEAVES = {
    "portcullis.http_fields",
    "portcullis.limits",
    "portcullis.limits.backend",
    "portcullis.limits.calendar",
    "portcullis.limits.spec",
}
