"""Moved to `portcullis.services.config_editor` (the control-plane service layer); re-exported here
for the admin modules and tests that still import it from the HTTP layer."""

from portcullis.services.config_editor import *  # noqa: F403
