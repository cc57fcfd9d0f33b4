"""Worker processes: one per actor instance (private; started by the supervisor)."""
