"""Shared pytest fixtures: where the shared corpus lives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = (REPO_ROOT / ".." / "shared" / "corpus").resolve()


def corpus_manifest() -> list[dict[str, Any]]:
    """The corpus manifest's file entries (see ../shared/corpus/README.md)."""
    with (CORPUS_DIR / "manifest.json").open(encoding="utf-8") as f:
        files: list[dict[str, Any]] = json.load(f)["files"]
    return files


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS_DIR / "manifest.json").is_file():
        pytest.fail(f"the shared corpus is missing: expected {CORPUS_DIR}/manifest.json")
    return CORPUS_DIR
