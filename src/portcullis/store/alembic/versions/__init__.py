"""Migration scripts; each new one sets `down_revision` to the previous head."""
