"""Typed records for tests that drive the journal directly."""
from __future__ import annotations

from certbot_wazo.records import Phase, Transaction

# An undo log's record for a transaction that changes files only (nothing to restart or probe).
RECORD = Transaction(phase=Phase.INSTALLING, hostname="wazo.example.test", generation="legacy",
                     update_config=False, restarts=[], gentle=[], endpoints=[], previous_leaf=b"",
                     new_leaf=b"")
