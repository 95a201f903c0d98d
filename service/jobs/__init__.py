"""/jobs behind one interface, kept in this process (local.py: one machine, no other service) or
shared by every replica (shared.py: records in Redis, bytes in an S3-compatible store, and
runner.py pulling the shared queue into this replica's pipeline under its own admission)."""
