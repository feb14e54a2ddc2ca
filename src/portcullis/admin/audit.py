"""Moved to `portcullis.services.audit` (the control-plane service layer); re-exported here
for the admin modules and tests that still import it from the HTTP layer."""

from portcullis.services.audit import *  # noqa: F403
