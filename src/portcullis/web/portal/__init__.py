"""The developer portal (`/portal/`): pages for API consumers, signed in as developers."""
