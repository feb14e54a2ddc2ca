"""Identity and admin access over GraphQL (issue 16): API keys and their quota usage,
OAuth clients and signing keys, organizations, admin users, API tokens, `me`, the
caller's own password and logout - on the services REST uses, through the real `gql`
client. Secrets appear once, in the payload that makes them; problems are data; an
organization-limited admin sees and touches only their organization, as over REST; a
viewer is refused writes (ForbiddenProblem) and restricted reads (FORBIDDEN)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from admin_support import PASSWORD
from fastapi import FastAPI
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from graphql import GraphQLObjectType

from portcullis.graph.schema import graphql_schema
from portcullis.services.rbac import Role

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]
Graph = Callable[..., Awaitable[dict[str, Any]]]


async def _execute(app: FastAPI, bearer: str, document: str, **variables: Any) -> dict[str, Any]:
    transport = HTTPXAsyncTransport(
        url="http://admin/graphql",
        headers={"authorization": bearer},
        transport=httpx.ASGITransport(app=app),
    )
    async with Client(transport=transport) as session:
        result: dict[str, Any] = await session.execute(
            GraphQLRequest(document, variable_values=variables or None)
        )
        return result


def graph_of(app: FastAPI, client: httpx.AsyncClient | str) -> Graph:
    """Runs GraphQL documents as `client` (a signed-in REST client, or a bearer token)."""
    bearer = client if isinstance(client, str) else client.headers["authorization"]

    async def run(document: str, **variables: Any) -> dict[str, Any]:
        return await _execute(app, bearer, document, **variables)

    return run


async def errors_of(graph: Graph, document: str, **variables: Any) -> list[dict[str, Any]]:
    """The GraphQL errors a query answers with (it must fail)."""
    with pytest.raises(TransportQueryError) as caught:
        await graph(document, **variables)
    errors = caught.value.errors
    assert errors
    return errors


def fields_of(type_name: str) -> set[str]:
    """The fields of an object type of the published schema."""
    found = graphql_schema().type_map[type_name]
    assert isinstance(found, GraphQLObjectType)
    return set(found.fields)


def code_of(errors: list[dict[str, Any]]) -> str:
    return str(errors[0]["extensions"]["code"])


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


PROBLEM = "... on Problem { __typename status detail }"
VALIDATION = "... on ValidationProblem { errors { pointer detail } }"
KEY_FIELDS = "id prefix consumer name scopes state status statusReason etag expiresAt createdAt"

CREATE_KEY = f"""mutation($consumer: String!, $input: KeySpecInput!) {{
  createApiKey(consumer: $consumer, input: $input) {{
    __typename
    ... on ApiKeyCreated {{ key apiKey {{ {KEY_FIELDS} }} }}
    {PROBLEM} {VALIDATION}
  }}
}}"""


# ---------------------------------------------------------------------------- API keys


async def test_api_key_lifecycle_and_problems(app: FastAPI, owner: httpx.AsyncClient) -> None:
    graph = graph_of(app, owner)
    await _created(owner, "/admin/v1/consumers", {"username": "app"})

    made = (await graph(CREATE_KEY, consumer="app", input={"name": "ci", "scopes": ["a:read"]}))[
        "createApiKey"
    ]
    assert made["__typename"] == "ApiKeyCreated", made
    key, node = made["key"], made["apiKey"]
    assert key.startswith(node["prefix"] + "_")
    assert node["state"] == "active"
    rest = await owner.get(f"/admin/v1/keys/{node['id']}")
    assert node["etag"] == rest.headers["etag"]
    assert node["createdAt"] == rest.json()["created_at"]  # the same RFC 3339 text
    assert node["expiresAt"] is None

    # Problems as data: unknown consumer, invalid input.
    missing = (await graph(CREATE_KEY, consumer="nobody", input={"name": "x"}))["createApiKey"]
    assert (missing["__typename"], missing.get("status")) == ("NotFoundProblem", 404)
    bad = (await graph(CREATE_KEY, consumer="app", input={"name": "x", "ipAllowlist": ["nope"]}))[
        "createApiKey"
    ]
    assert bad["__typename"] == "ValidationProblem"
    assert bad["errors"][0]["pointer"].startswith("#/ip_allowlist")

    update = f"""mutation($id: ID!, $patch: KeySettingsPatch!, $ifMatch: String) {{
      updateApiKey(id: $id, patch: $patch, ifMatch: $ifMatch) {{
        __typename ... on ApiKeyPayload {{ apiKey {{ {KEY_FIELDS} }} }} {PROBLEM}
      }}
    }}"""
    stale = (await graph(update, id=node["id"], patch={"scopes": ["b"]}, ifMatch='"stale"'))[
        "updateApiKey"
    ]
    assert (stale["__typename"], stale.get("status")) == ("PreconditionFailedProblem", 412)
    updated = (
        await graph(update, id=node["id"], patch={"scopes": ["b:write"]}, ifMatch=node["etag"])
    )["updateApiKey"]
    assert updated["apiKey"]["scopes"] == ["b:write"]

    transition = f"""mutation($id: ID!, $reason: String!) {{
      suspendApiKey(id: $id, reason: $reason) {{
        __typename ... on ApiKeyPayload {{ apiKey {{ state statusReason }} }} {PROBLEM}
      }}
    }}"""
    suspended = (await graph(transition, id=node["id"], reason="audit"))["suspendApiKey"]
    assert suspended["apiKey"] == {"state": "suspended", "statusReason": "audit"}
    blank = (await graph(transition, id=node["id"], reason="   "))["suspendApiKey"]
    assert blank["__typename"] == "ValidationProblem"
    resumed = await graph(
        f'mutation {{ resumeApiKey(id: "{node["id"]}") {{ '
        f"... on ApiKeyPayload {{ apiKey {{ state }} }} {PROBLEM} }} }}"
    )
    assert resumed["resumeApiKey"]["apiKey"]["state"] == "active"

    rotate = f"""mutation($id: ID!, $grace: Int) {{
      rotateApiKey(id: $id, graceSeconds: $grace) {{
        __typename
        ... on ApiKeyRotated {{ key apiKey {{ id state }} previous {{ id state graceUntil }} }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    too_long = (await graph(rotate, id=node["id"], grace=10**9))["rotateApiKey"]
    assert too_long["__typename"] == "ValidationProblem"
    assert too_long["errors"][0]["pointer"] == "#/grace_seconds"
    rotated = (await graph(rotate, id=node["id"], grace=60))["rotateApiKey"]
    assert rotated["__typename"] == "ApiKeyRotated"
    assert rotated["key"] != key
    assert rotated["key"].startswith("pc_live_")
    assert (rotated["previous"]["id"], rotated["previous"]["state"]) == (node["id"], "grace")
    new_id = rotated["apiKey"]["id"]

    deleted = await graph(
        f'mutation {{ deleteApiKey(id: "{new_id}") {{ '
        f"... on ApiKeyPayload {{ apiKey {{ state statusReason }} }} {PROBLEM} }} }}"
    )
    assert deleted["deleteApiKey"]["apiKey"] == {
        "state": "revoked",
        "statusReason": "revoked via DELETE",
    }
    again = await graph(
        f'mutation {{ revokeApiKey(id: "{new_id}", reason: "again") {{ {PROBLEM} }} }}'
    )
    assert (again["revokeApiKey"]["__typename"], again["revokeApiKey"].get("status")) == (
        "OtherProblem",
        409,
    )

    # Audited as REST's changes are, by the same actor, without the key.
    audit = await owner.get("/admin/v1/audit-events?resource_type=api_key&limit=50")
    actions = [(e["action"], e["resource_id"]) for e in reversed(audit.json()["items"])]
    assert actions == [
        ("create", node["id"]),
        ("update", node["id"]),
        ("suspend", node["id"]),
        ("resume", node["id"]),
        ("rotate", node["id"]),
        ("create", new_id),
        ("revoke", new_id),
    ]
    assert {e["actor"] for e in audit.json()["items"]} == {"user:owner-0@example.com"}
    assert key not in audit.text
    assert rotated["key"] not in audit.text

    # Lists: every key, a consumer's, and the consumer's own link.
    listed = await graph(
        'query { apiKeys(filter: {consumer: "app"}, sort: "name") { nodes { id } } '
        'consumerApiKeys(consumer: "app") { nodes { id } pageInfo { hasNextPage } } '
        'consumer(id: "app") { keys(first: 1) { edges { cursor } pageInfo { hasNextPage } } } '
        'apiKey(id: "nope") { id } }'
    )
    assert {n["id"] for n in listed["apiKeys"]["nodes"]} == {node["id"], new_id}
    assert len(listed["consumerApiKeys"]["nodes"]) == 2
    assert listed["consumer"]["keys"]["pageInfo"]["hasNextPage"] is True
    assert listed["apiKey"] is None
    unknown = await errors_of(
        graph, 'query { consumerApiKeys(consumer: "nobody") { nodes { id } } }'
    )
    assert code_of(unknown) == "NOT_FOUND"
    bad_sort = await errors_of(graph, 'query { apiKeys(sort: "secret") { nodes { id } } }')
    assert code_of(bad_sort) == "VALIDATION_FAILED"


async def test_a_key_is_shown_once_and_never_its_hash(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    graph = graph_of(app, owner)
    await _created(owner, "/admin/v1/consumers", {"username": "app"})
    made = (await graph(CREATE_KEY, consumer="app", input={"name": "ci"}))["createApiKey"]
    key = made["key"]
    fields = fields_of("ApiKey")
    assert not {f for f in fields if "key" in f.lower() or "hash" in f.lower()}
    everything = " ".join(sorted(fields))
    read = await owner.post(
        "/graphql",
        json={
            "query": f"{{ apiKeys {{ nodes {{ {everything} }} }} "
            f'apiKey(id: "{made["apiKey"]["id"]}") {{ {everything} }} }}'.replace(
                "quotaUsage", "quotaUsage { plan }"
            )
        },
    )
    assert read.status_code == 200, read.text
    assert key.removeprefix(made["apiKey"]["prefix"]) not in read.text
    # The CSV import returns generated keys once, in its own payload.
    csv = "consumer,name\r\napp,imported\r\n"
    document = f"""mutation($csv: String!, $dry: Boolean!) {{
      importApiKeys(csv: $csv, dryRun: $dry) {{
        __typename ... on ApiKeysImported {{ created dryRun items {{ row consumer key }} }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    dry = (await graph(document, csv=csv, dry=True))["importApiKeys"]
    assert (dry["created"], dry["dryRun"], dry["items"][0]["row"]) == (0, True, 1)
    done = (await graph(document, csv=csv, dry=False))["importApiKeys"]
    assert done["created"] == 1
    assert done["items"][0]["key"].startswith("pc_live_")
    refused = (await graph(document, csv="consumer,name\r\nnobody,x\r\n", dry=False))[
        "importApiKeys"
    ]
    assert refused["__typename"] == "ValidationProblem"
    assert refused["errors"][0]["pointer"].startswith("#/rows/1/")


async def test_quota_usage_of_a_key_and_a_consumer(app: FastAPI, owner: httpx.AsyncClient) -> None:
    graph = graph_of(app, owner)
    await _created(owner, "/admin/v1/consumers", {"username": "app"})
    made = (await graph(CREATE_KEY, consumer="app", input={"name": "ci"}))["createApiKey"]
    key_id = made["apiKey"]["id"]
    usage = await graph(
        f'query {{ apiKeyQuotaUsage(id: "{key_id}") {{ consumer keyId counters quotas {{ name }} }}'
        ' consumerQuotaUsage(consumer: "app") { consumer keyId at }'
        f' apiKey(id: "{key_id}") {{ quotaUsage {{ keyId }} }} }}'
    )
    rest = (await owner.get(f"/admin/v1/keys/{key_id}/usage")).json()
    assert usage["apiKeyQuotaUsage"] == {
        "consumer": "app",
        "keyId": key_id,
        "counters": rest["counters"],
        "quotas": rest["quotas"],
    }
    assert usage["consumerQuotaUsage"]["consumer"] == "app"
    assert usage["apiKey"]["quotaUsage"]["keyId"] == key_id
    missing = await errors_of(graph, 'query { consumerQuotaUsage(consumer: "x") { plan } }')
    assert code_of(missing) == "NOT_FOUND"


# ---------------------------------------------------------------------------- OAuth


async def test_oauth_clients_and_signing_keys(app: FastAPI, owner: httpx.AsyncClient) -> None:
    graph = graph_of(app, owner)
    await _created(owner, "/admin/v1/consumers", {"username": "app"})
    create = f"""mutation($consumer: String!, $input: OAuthClientCreateInput!) {{
      createOAuthClient(consumer: $consumer, input: $input) {{
        __typename
        ... on OAuthClientWithSecret {{ clientSecret oauthClient {{ clientId name etag }} }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    made = (await graph(create, consumer="app", input={"name": "web", "allowedScopes": ["r"]}))[
        "createOAuthClient"
    ]
    assert made["__typename"] == "OAuthClientWithSecret"
    secret, client_id = made["clientSecret"], made["oauthClient"]["clientId"]
    short = (await graph(create, consumer="app", input={"name": "w", "tokenTtl": 5}))[
        "createOAuthClient"
    ]
    assert short["__typename"] == "ValidationProblem"
    assert short["errors"][0]["pointer"] == "#/token_ttl"
    missing = (await graph(create, consumer="nobody", input={"name": "w"}))["createOAuthClient"]
    assert missing["__typename"] == "NotFoundProblem"

    fields = fields_of("OAuthClient")
    assert not {f for f in fields if "secret" in f.lower()}
    read = await owner.post(
        "/graphql",
        json={
            "query": f'{{ oauthClient(clientId: "{client_id}") {{ {" ".join(sorted(fields))} }} '
            'consumer(id: "app") { oauthClients { nodes { clientId } } } '
            'consumerOAuthClients(consumer: "app") { nodes { clientId } } }'
        },
    )
    assert read.status_code == 200, read.text
    assert secret not in read.text
    data = read.json()["data"]
    assert data["oauthClient"]["etag"] == made["oauthClient"]["etag"]
    assert data["consumer"]["oauthClients"]["nodes"] == [{"clientId": client_id}]
    assert data["consumerOAuthClients"]["nodes"] == [{"clientId": client_id}]

    update = f"""mutation($id: String!, $patch: OAuthClientPatchInput!) {{
      updateOAuthClient(clientId: $id, patch: $patch) {{
        __typename ... on OAuthClientPayload {{ oauthClient {{ name status }} }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    nulled = (await graph(update, id=client_id, patch={"name": None}))["updateOAuthClient"]
    assert nulled["__typename"] == "ValidationProblem"
    assert nulled["errors"] == [{"pointer": "#/name", "detail": "must not be null"}]
    disabled = (await graph(update, id=client_id, patch={"status": "disabled"}))[
        "updateOAuthClient"
    ]
    assert disabled["oauthClient"] == {"name": "web", "status": "disabled"}

    rotated = await graph(
        f'mutation {{ rotateOAuthClientSecret(clientId: "{client_id}") {{ '
        f"... on OAuthClientWithSecret {{ clientSecret }} {PROBLEM} }} }}"
    )
    assert rotated["rotateOAuthClientSecret"]["clientSecret"] not in ("", secret)
    removed = await graph(
        f'mutation {{ deleteOAuthClient(clientId: "{client_id}") {{ '
        f"... on DeletedOAuthClient {{ clientId }} {PROBLEM} }} }}"
    )
    assert removed["deleteOAuthClient"] == {"clientId": client_id}
    gone = await graph(f'query {{ oauthClient(clientId: "{client_id}") {{ name }} }}')
    assert gone["oauthClient"] is None

    keys = await graph(
        "mutation { rotateSigningKey { __typename ... on SigningKeyPayload { signingKey { kid "
        "status publicJwk } } } }"
    )
    kid = keys["rotateSigningKey"]["signingKey"]["kid"]
    assert "d" not in keys["rotateSigningKey"]["signingKey"]["publicJwk"]
    listed = await graph("query { signingKeys { nodes { kid status } } }")
    assert {"kid": kid, "status": "active"} in listed["signingKeys"]["nodes"]


# ---------------------------------------------------------------------------- organizations


async def test_organizations(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    graph = graph_of(app, owner)
    create = f"""mutation($name: String!) {{
      createOrganization(name: $name) {{
        __typename ... on OrganizationPayload {{ organization {{ id name etag }} }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    acme = (await graph(create, name="acme"))["createOrganization"]["organization"]
    taken = (await graph(create, name="acme"))["createOrganization"]
    assert (taken["__typename"], taken.get("status")) == ("AlreadyExistsProblem", 409)
    bad = (await graph(create, name="-bad name"))["createOrganization"]
    assert bad["__typename"] == "ValidationProblem"
    assert bad["errors"][0]["pointer"] == "#/name"

    rename = f"""mutation($id: ID!, $name: String!, $ifMatch: String) {{
      renameOrganization(id: $id, name: $name, ifMatch: $ifMatch) {{
        __typename ... on OrganizationPayload {{ organization {{ name }} }} {PROBLEM}
      }}
    }}"""
    stale = (await graph(rename, id=acme["id"], name="acme2", ifMatch='"x"'))["renameOrganization"]
    assert stale["__typename"] == "PreconditionFailedProblem"
    renamed = (await graph(rename, id=acme["id"], name="acme2", ifMatch=acme["etag"]))[
        "renameOrganization"
    ]
    assert renamed["organization"]["name"] == "acme2"

    globex = (await graph(create, name="globex"))["createOrganization"]["organization"]
    limited = graph_of(app, await client_for(Role.ADMIN, acme["id"]))
    seen = await limited(
        "query { organizations { nodes { name } } "
        f'organization(id: "{globex["id"]}") {{ id }} }}'
    )
    assert seen == {"organizations": {"nodes": [{"name": "acme2"}]}, "organization": None}
    refused = (await limited(create, name="initech"))["createOrganization"]
    assert refused["__typename"] == "ForbiddenProblem"

    delete = f"""mutation($id: ID!) {{
      deleteOrganization(id: $id) {{
        __typename ... on DeletedOrganization {{ id }}
        ... on HasDependentsProblem {{ dependents }} {PROBLEM}
      }}
    }}"""
    busy = (await graph(delete, id=acme["id"]))["deleteOrganization"]
    assert busy["__typename"] == "HasDependentsProblem"
    assert busy["dependents"] == [{"kind": "admin_users", "count": 1}]
    assert (await graph(delete, id=globex["id"]))["deleteOrganization"] == {
        "__typename": "DeletedOrganization",
        "id": globex["id"],
    }
    listed = await graph('query { organizations(sort: "-name") { nodes { name } } }')
    assert listed["organizations"]["nodes"] == [{"name": "acme2"}]


# ---------------------------------------------------------------------------- admin access


USER = "id email role organizationId disabled etag"


async def test_admin_users_tokens_me_password_and_logout(
    app: FastAPI, owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    graph = graph_of(app, owner)
    me = await graph("query { me { actor role permissions userId } }")
    assert me["me"]["role"] == "owner"
    assert "admins:write" in me["me"]["permissions"]

    create = f"""mutation($input: AdminUserCreateInput!) {{
      createAdminUser(input: $input) {{
        __typename ... on AdminUserPayload {{ adminUser {{ {USER} }} }} {PROBLEM} {VALIDATION}
      }}
    }}"""
    new = {"email": "ops@example.com", "password": PASSWORD, "role": "operator"}
    user = (await graph(create, input=new))["createAdminUser"]["adminUser"]
    assert (user["email"], user["role"]) == ("ops@example.com", "operator")
    weak = (await graph(create, input={**new, "email": "x@example.com", "password": "short"}))[
        "createAdminUser"
    ]
    assert weak["__typename"] == "ValidationProblem"
    assert weak["errors"][0]["pointer"] == "#/password"
    dup = (await graph(create, input=new))["createAdminUser"]
    assert dup["__typename"] == "AlreadyExistsProblem"

    update = f"""mutation($id: ID!, $patch: AdminUserUpdateInput!) {{
      updateAdminUser(id: $id, patch: $patch) {{
        __typename ... on AdminUserPayload {{ adminUser {{ {USER} }} }} {PROBLEM}
      }}
    }}"""
    promoted = (await graph(update, id=user["id"], patch={"role": "admin"}))["updateAdminUser"]
    assert promoted["adminUser"]["role"] == "admin"
    own_id = me["me"]["userId"]
    self_change = (await graph(update, id=own_id, patch={"disabled": True}))["updateAdminUser"]
    assert (self_change["__typename"], self_change.get("status")) == ("OtherProblem", 409)
    users = await graph(
        f'query {{ adminUsers(role: "admin") {{ nodes {{ email }} }} '
        f'adminUser(id: "{user["id"]}") {{ etag }} }}'
    )
    assert users["adminUsers"]["nodes"] == [{"email": "ops@example.com"}]
    rest = await owner.get(f"/admin/v1/admin-users/{user['id']}")
    assert users["adminUser"]["etag"] == rest.headers["etag"]
    bad_role = await errors_of(graph, 'query { adminUsers(role: "boss") { nodes { id } } }')
    assert code_of(bad_role) == "VALIDATION_FAILED"

    # A token: shown once, works as the bearer, revoked, then refused.
    token_doc = f"""mutation($input: ApiTokenCreateInput!) {{
      createApiToken(input: $input) {{
        __typename ... on ApiTokenCreated {{ token apiToken {{ id name scopes prefix }} }}
        {PROBLEM}
      }}
    }}"""
    made = (await graph(token_doc, input={"name": "ci", "scopes": ["config:read"]}))[
        "createApiToken"
    ]
    token, token_id = made["token"], made["apiToken"]["id"]
    as_token = graph_of(app, f"Bearer {token}")
    assert (await as_token("query { me { actor } }"))["me"]["actor"].startswith("token:ci")
    listed = await owner.post("/graphql", json={"query": "{ apiTokens { nodes { id prefix } } }"})
    assert token_id in listed.text
    assert token not in listed.text
    revoked = await graph(
        f'mutation {{ revokeApiToken(id: "{token_id}") {{ ... on RevokedApiToken {{ id }} }} }}'
    )
    assert revoked["revokeApiToken"] == {"id": token_id}
    refused = await anonymous.post(
        "/graphql", json={"query": "{ me { actor } }"}, headers={"authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    again = await graph(f'mutation {{ revokeApiToken(id: "nope") {{ {PROBLEM} }} }}')
    assert again["revokeApiToken"]["__typename"] == "NotFoundProblem"

    deleted = await graph(
        f'mutation {{ deleteAdminUser(id: "{user["id"]}") {{ ... on DeletedAdminUser {{ id }} }} }}'
    )
    assert deleted["deleteAdminUser"] == {"id": user["id"]}

    # The caller's own password: the current one is required; then it changes.
    change = f"""mutation($current: String!, $new: String!) {{
      changeOwnPassword(currentPassword: $current, newPassword: $new) {{
        __typename ... on PasswordChanged {{ apiTokensRevoked sessionsEnded }}
        {PROBLEM} {VALIDATION}
      }}
    }}"""
    wrong = (await graph(change, current="not it", new="a new long passphrase"))[
        "changeOwnPassword"
    ]
    assert wrong["__typename"] == "ValidationProblem"
    assert wrong["errors"][0]["pointer"] == "#/current_password"
    weak_new = (await graph(change, current=PASSWORD, new="short"))["changeOwnPassword"]
    assert weak_new["__typename"] == "ValidationProblem"
    assert weak_new["errors"][0]["pointer"] == "#/new_password"
    changed = (await graph(change, current=PASSWORD, new="a new long passphrase"))[
        "changeOwnPassword"
    ]
    assert changed["__typename"] == "PasswordChanged"

    # Logout ends the session of a refresh token.
    login = await anonymous.post(
        "/admin/v1/auth/login",
        json={"email": "owner-0@example.com", "password": "a new long passphrase"},
    )
    assert login.status_code == 200, login.text
    refresh = login.json()["refresh_token"]
    ended = await graph(
        "mutation($t: String!) { logout(refreshToken: $t) { ... on LoggedOut { ended } } }",
        t=refresh,
    )
    assert ended["logout"] == {"ended": True}
    after = await anonymous.post("/admin/v1/auth/refresh", json={"refresh_token": refresh})
    assert after.status_code == 401


# ---------------------------------------------------------------------------- tenancy and RBAC


async def test_an_organization_limited_admin_sees_and_touches_only_their_organization(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    await _created(owner, "/admin/v1/consumers", {"username": "g-app", "organization": "globex"})
    await _created(owner, "/admin/v1/consumers", {"username": "a-app", "organization": "acme"})
    g_key = await _created(owner, "/admin/v1/consumers/g-app/keys", {"name": "g"})
    a_key = await _created(owner, "/admin/v1/consumers/a-app/keys", {"name": "a"})
    g_client = await _created(owner, "/admin/v1/consumers/g-app/oauth-clients", {"name": "g"})
    globex_op = await client_for(Role.OPERATOR, orgs["globex"])
    g_token = await _created(
        globex_op, "/admin/v1/tokens", {"name": "g", "scopes": ["config:read"]}
    )
    g_user = (await globex_op.get("/admin/v1/auth/me")).json()["user_id"]

    acme = graph_of(app, await client_for(Role.ADMIN, orgs["acme"]))
    seen = await acme(
        f'query {{ apiKeys {{ nodes {{ id }} }} apiKey(id: "{g_key["id"]}") {{ id }} '
        f'oauthClient(clientId: "{g_client["client_id"]}") {{ name }} '
        f"adminUsers {{ nodes {{ id organizationId }} }} "
        f'adminUser(id: "{g_user}") {{ id }} apiTokens {{ nodes {{ id }} }} }}'
    )
    assert seen["apiKeys"]["nodes"] == [{"id": a_key["id"]}]
    assert (seen["apiKey"], seen["oauthClient"], seen["adminUser"]) == (None, None, None)
    assert {u["organizationId"] for u in seen["adminUsers"]["nodes"]} == {orgs["acme"]}
    assert g_token["id"] not in {t["id"] for t in seen["apiTokens"]["nodes"]}
    for query in (
        'consumerApiKeys(consumer: "g-app") { nodes { id } }',
        'consumerOAuthClients(consumer: "g-app") { nodes { clientId } }',
        f'apiKeyQuotaUsage(id: "{g_key["id"]}") {{ plan }}',
        'consumerQuotaUsage(consumer: "g-app") { plan }',
    ):
        assert code_of(await errors_of(acme, f"query {{ {query} }}")) == "NOT_FOUND", query

    for mutation in (
        f'revokeApiKey(id: "{g_key["id"]}", reason: "x")',
        f'suspendApiKey(id: "{g_key["id"]}", reason: "x")',
        f'rotateApiKey(id: "{g_key["id"]}")',
        f'updateApiKey(id: "{g_key["id"]}", patch: {{name: "x"}})',
        'createApiKey(consumer: "g-app", input: {name: "x"})',
        f'rotateOAuthClientSecret(clientId: "{g_client["client_id"]}")',
        f'deleteOAuthClient(clientId: "{g_client["client_id"]}")',
        'createOAuthClient(consumer: "g-app", input: {name: "x"})',
        f'updateAdminUser(id: "{g_user}", patch: {{disabled: true}})',
        f'deleteAdminUser(id: "{g_user}")',
        f'revokeApiToken(id: "{g_token["id"]}")',
    ):
        answer = await acme(f"mutation {{ m: {mutation} {{ {PROBLEM} }} }}")
        assert answer["m"]["__typename"] == "NotFoundProblem", (mutation, answer)
    other_org = await acme(
        'mutation($org: String) { createAdminUser(input: {email: "x@example.com", '
        f'password: "{PASSWORD}", role: "viewer", organizationId: $org}}) {{ {PROBLEM} }} }}',
        org=orgs["globex"],
    )
    assert other_org["createAdminUser"]["__typename"] == "ForbiddenProblem"
    signing = await acme(f"mutation {{ rotateSigningKey {{ {PROBLEM} }} }}")
    assert signing["rotateSigningKey"]["__typename"] == "ForbiddenProblem"
    # Nothing of globex changed.
    assert (await owner.get(f"/admin/v1/keys/{g_key['id']}")).json()["state"] == "active"
    assert (await owner.get(f"/admin/v1/oauth-clients/{g_client['client_id']}")).status_code == 200
    tokens = (await owner.get("/admin/v1/tokens")).json()["items"]
    assert next(t for t in tokens if t["id"] == g_token["id"])["revoked_at"] is None


async def test_a_viewer_is_refused_writes_and_restricted_reads(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    await _created(owner, "/admin/v1/consumers", {"username": "app"})
    key = await _created(owner, "/admin/v1/consumers/app/keys", {"name": "k"})
    viewer = graph_of(app, await client_for(Role.VIEWER))
    forbidden = "... on ForbiddenProblem { status requiredPermission }"
    for mutation, permission in (
        ('createApiKey(consumer: "app", input: {name: "x"})', "credentials:write"),
        (f'revokeApiKey(id: "{key["id"]}", reason: "x")', "credentials:write"),
        ('importApiKeys(csv: "consumer,name\\r\\napp,x\\r\\n")', "credentials:write"),
        ('createOAuthClient(consumer: "app", input: {name: "x"})', "credentials:write"),
        ("rotateSigningKey", "credentials:write"),
        ('createOrganization(name: "x")', "orgs:write"),
        (
            'createAdminUser(input: {email: "a@b.c", password: "long enough pw", role: "viewer"})',
            "admins:write",
        ),
        ('createApiToken(input: {name: "x", scopes: ["config:read"]})', "tokens:write"),
    ):
        answer = await viewer(f"mutation {{ m: {mutation} {{ __typename {forbidden} }} }}")
        assert answer["m"] == {
            "__typename": "ForbiddenProblem",
            "status": 403,
            "requiredPermission": permission,
        }, mutation
    for query in ("adminUsers { nodes { id } }", "apiTokens { nodes { id } }"):
        errors = await errors_of(viewer, f"query {{ {query} }}")
        assert code_of(errors) == "FORBIDDEN", query
    # What a viewer may read, they read.
    readable = await viewer(f'query {{ apiKey(id: "{key["id"]}") {{ name }} me {{ role }} }}')
    assert readable == {"apiKey": {"name": "k"}, "me": {"role": "viewer"}}
    assert (await owner.get(f"/admin/v1/keys/{key['id']}")).json()["state"] == "active"
