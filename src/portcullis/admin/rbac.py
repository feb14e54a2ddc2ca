"""Moved to `portcullis.services.rbac` (the control-plane service layer); re-exported here
for the admin modules and tests that still import it from the HTTP layer."""

from portcullis.services.rbac import *  # noqa: F403
