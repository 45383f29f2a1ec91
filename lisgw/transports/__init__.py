"""Twisted adapters over the sans-IO cores: TCP, serial, MLLP (issue 6)."""
