"""Service tree: analyzer links, HIS bridge, outbox dispatcher (issue 6)."""
