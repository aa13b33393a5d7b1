"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of public data sets: $DATA_DIR (relative to the repository), else `<repo>/../shared/data`.

    A missing folder fails the test rather than skipping it: real-data checks must not pass silently.
    """
    path = Path(os.environ.get("DATA_DIR") or REPO.parent / "shared" / "data")
    path = path if path.is_absolute() else REPO / path
    if not path.is_dir():
        pytest.fail(
            f"data folder {path} not found: set DATA_DIR to the public data sets "
            "(see ../shared/data/MANIFEST.md)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The embedded tiny model, built on first use (about 1-2 minutes) and cached in `cache/`."""
    from utils.modeling import quiet_libraries, tiny_model_path

    quiet_libraries()
    return tiny_model_path(progress=False)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from utils.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model))


@pytest.fixture
def kaggle_dir(data_dir) -> Path:
    """The Kaggle competition files of the shared data (AIMO 1-3 reference and test CSVs)."""
    path = data_dir / "kaggle"
    if not path.is_dir():
        pytest.fail(f"real data not found at {path} (see {data_dir / 'MANIFEST.md'})", pytrace=False)
    return path


@pytest.fixture
def reference(kaggle_dir) -> Path:
    """AIMO 2's ten reference problems with answers."""
    return kaggle_dir / "aimo2" / "reference.csv"


@pytest.fixture
def not_a_rerun(monkeypatch):
    """Tests of the local run: Kaggle's rerun flag must not leak in from the environment."""
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
