"""CLI command groups; `portcullis.cli` mounts each module's typer app."""
