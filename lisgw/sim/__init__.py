"""Simulator engines for analyzers and the HIS (issue 6)."""
