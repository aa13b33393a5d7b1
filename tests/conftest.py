"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import utils  # noqa: F401  (first: its CPU settings must be in place before torch loads)

REPO = Path(__file__).resolve().parents[1]
REQUIRE_DATA = "AIMO_REQUIRE_DATA"  # set by .ci/run: there, missing data fails the real-data tests
_skipped_for_data: list[str] = []


def _data_path() -> Path:
    path = Path(os.environ.get("DATA_DIR") or REPO.parent / "shared" / "data")
    return path if path.is_absolute() else REPO / path


def _no_data_message(path: Path) -> str:
    return (
        f"real-data tests skipped: no public data sets at {path}. Put them there (`make data` downloads "
        "them where a hub is reachable; layout in MANIFEST.md) or set DATA_DIR."
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of public data sets: $DATA_DIR (relative to the repository), else `<repo>/../shared/data`.

    Missing, the real-data tests are skipped on a user's clone (with one summary line saying where the data
    goes), and fail in CI, where `AIMO_REQUIRE_DATA` is set so that they cannot pass by being skipped.
    """
    path = _data_path()
    if not path.is_dir():
        if os.environ.get(REQUIRE_DATA):
            pytest.fail(f"data folder {path} not found and {REQUIRE_DATA} is set", pytrace=False)
        _skipped_for_data.append(str(path))
        pytest.skip(_no_data_message(path))
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    if _skipped_for_data:
        count = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(f"{_no_data_message(_data_path())} ({count} skipped)", yellow=True)


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
