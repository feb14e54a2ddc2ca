"""basic/hmac/mtls credentials over GraphQL: the same service as REST, secrets only in
the payload that makes them, problems as data, organization scoping."""

from __future__ import annotations

import httpx
from admin_support import ClientFactory
from fastapi import FastAPI
from test_graphql_identity import PROBLEM, VALIDATION, _created, fields_of, graph_of

from portcullis.services.rbac import Role

CREATE = f"""mutation($consumer: String!, $kind: ConsumerCredentialKind!,
                      $input: CredentialCreateInput) {{
  createConsumerCredential(consumer: $consumer, kind: $kind, input: $input) {{
    __typename
    ... on ConsumerCredentialWithSecret {{
      secret credential {{ id kind keyId username match etag }}
    }}
    {PROBLEM} {VALIDATION}
  }}
}}"""


async def test_credentials_lifecycle_over_graphql(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    graph = graph_of(app, owner)
    await _created(owner, "/admin/v1/consumers", {"username": "app", "organization": "globex"})
    made = (await graph(CREATE, consumer="app", kind="HMAC"))["createConsumerCredential"]
    assert made["__typename"] == "ConsumerCredentialWithSecret"
    secret, cid = made["secret"], made["credential"]["id"]
    assert made["credential"]["keyId"].startswith("pch_")
    bad = (await graph(CREATE, consumer="app", kind="MTLS", input={"match": "cn=x"}))[
        "createConsumerCredential"
    ]
    assert bad["__typename"] == "ValidationProblem"
    assert bad["errors"][0]["pointer"] == "#/match"
    basic = (await graph(CREATE, consumer="app", kind="BASIC", input={"password": "long enough"}))[
        "createConsumerCredential"
    ]
    assert basic["secret"] is None
    assert basic["credential"]["username"] == "app"

    assert not {f for f in fields_of("ConsumerCredential") if "secret" in f.lower()}
    read = await graph(
        'query($id: String!) { consumerCredential(consumer: "app", kind: HMAC, id: $id) { id } '
        'consumerCredentials(consumer: "app", kind: HMAC) { nodes { id keyId } } }',
        id=cid,
    )
    assert read["consumerCredential"] == {"id": cid}
    assert [n["id"] for n in read["consumerCredentials"]["nodes"]] == [cid]

    rotated = (
        await graph(
            f'mutation {{ rotateConsumerCredential(consumer: "app", kind: HMAC, id: "{cid}") '
            f"{{ __typename ... on ConsumerCredentialWithSecret {{ secret }} {PROBLEM} }} }}"
        )
    )["rotateConsumerCredential"]
    assert rotated["secret"] not in (None, secret)

    # An admin of another organization: not found, as over REST.
    acme = graph_of(app, await client_for(Role.ADMIN, orgs["acme"]))
    theirs = (
        await acme(
            f'mutation {{ deleteConsumerCredential(consumer: "app", kind: HMAC, id: "{cid}") '
            f"{{ __typename {PROBLEM} }} }}"
        )
    )["deleteConsumerCredential"]
    assert theirs["__typename"] == "NotFoundProblem"
    gone = (
        await graph(
            f'mutation {{ deleteConsumerCredential(consumer: "app", kind: HMAC, id: "{cid}") '
            "{ __typename ... on DeletedConsumerCredential { id } } }"
        )
    )["deleteConsumerCredential"]
    assert gone == {"__typename": "DeletedConsumerCredential", "id": cid}
