"""Store tests: every test runs against SQLite and PostgreSQL (see conftest.py)."""
