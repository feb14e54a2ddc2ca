"""Moved to `portcullis.services.entity_kinds` (the control-plane service layer); re-exported
here for the admin modules and tests that still import it from the HTTP layer."""

from portcullis.services.entity_kinds import *  # noqa: F403
