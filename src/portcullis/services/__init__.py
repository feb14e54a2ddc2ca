"""The control-plane service layer: every operation on the gateway's resources.

One module per resource family (`keys`, `entities`, …) holds the operations:
validation, organization scoping, config edits through the store, audit and the
events the store emits with a change. The faces (the REST API in `portcullis.admin`,
the CLI in `portcullis.commands`, and the GraphQL API and portal to come) parse
their input, build an `Operation` (services/context.py) and call these; they hold
no SQL and no business rule. Nothing here imports FastAPI or Starlette: a refusal
is a `ServiceError` (services/errors.py), which each face renders its own way.
"""
