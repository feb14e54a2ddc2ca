"""An API version's contract as the data plane enforces it: its OpenAPI description
compiled once per snapshot into operation lookups, JSON Schema validators and mock
responses (used by the `request-validator` plugin and by mock sandboxes)."""
