"""Client SDKs generated from an API version's published OpenAPI document by real
generators: openapi-python-client (Python) and @hey-api/openapi-ts (TypeScript)."""
