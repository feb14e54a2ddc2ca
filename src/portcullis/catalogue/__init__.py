"""The API catalogue: import of OpenAPI descriptions (files, inline, URLs behind the
webhook SSRF guard), their publication as clients see them through the gateway, and
breaking-change reports between versions (docs/api-products.md, "Catalogue")."""
