"""Backup, one area: the dump into storage (steps, stream), its verification by a restore, the run's
backup state and the destructive-step gate (state), the catalog and contents of stored backups, restoring
them (restore, restore_safety) and the ``backups``/``restore`` commands (cli)."""
