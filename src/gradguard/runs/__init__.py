"""Stage 2: runs -- the Run read back, the SQLite store, its background writer, the run log."""
