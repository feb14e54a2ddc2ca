"""The web face of Portcullis: the admin dashboard (`/dashboard/`) and the developer
portal (`/portal/`), server-rendered (Jinja2) with htmx partials, served by the control
plane (docs/web.md, docs/decisions/033-web-front-end.md).

Like `admin/`, a face: pages parse a form, call a service (`portcullis.services`) with
an `Operation` of the session's principal, and render. No SQL here (import-linter
contract "web-without-sql"), no business rule.
"""
