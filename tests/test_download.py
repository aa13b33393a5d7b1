"""`make data`: the hub's sets land in MANIFEST.md's layout, and without a hub it fails cleanly in one line."""

from __future__ import annotations

from utils import download
from utils.io import read_jsonl


def fake_hub(spec):
    """Two rows per set, with the hub copies' own field names."""
    rows = {
        "openai/gsm8k": {"question": "Q?", "answer": "1+1 = <<1+1=2>>2\n#### 2"},
        "EleutherAI/hendrycks_math": {
            "problem": "P",
            "level": "Level 1",
            "type": "Number Theory",
            "solution": "$\\boxed{3}$",
        },
        "HuggingFaceH4/MATH-500": {
            "problem": "P",
            "solution": "S",
            "answer": "3",
            "subject": "Algebra",
            "level": 1,
            "unique_id": "test/algebra/1.json",
        },
        "gneubig/aime-1983-2024": {
            "ID": "1983-1",
            "Year": 1983,
            "Problem Number": 1,
            "Question": "Q",
            "Answer": 60,
            "Part": None,
        },
        "opencompass/AIME2025": {"question": "Q", "answer": "70"},
        "AI-MO/aimo-validation-aime": {"id": 0, "problem": "P", "solution": "S", "answer": 5, "url": "u"},
        "AI-MO/aimo-validation-amc": {"id": 0, "problem": "P", "answer": 5.0, "url": "u"},
    }[spec.repo]
    return [spec.row(dict(rows), i) for i in range(2)]


def test_downloaded_sets_take_the_manifest_layout_and_fields(tmp_path):
    counts = download.download(tmp_path, fetch=fake_hub)
    assert counts["aime/aime_2025.jsonl"] == 4  # AIME 2025 I and II joined
    assert set(read_jsonl(tmp_path / "gsm8k/train.jsonl")[0]) == {"question", "answer"}
    math = read_jsonl(tmp_path / "math/train.jsonl")
    assert set(math[0]) == {"problem", "level", "type", "solution", "unique_id"}
    assert [r["unique_id"] for r in math] == ["train/number_theory/0.json", "train/number_theory/1.json"]
    aime = read_jsonl(tmp_path / "aime/aime_1983_2024.jsonl")[0]
    assert aime == {
        "id": "1983-1",
        "year": "1983",
        "problem number": "1",
        "problem": "Q",
        "answer": "60",
        "part": "",
    }


def test_without_a_hub_it_says_so_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "hub_reachable", lambda *a, **k: False)
    assert download.main(["--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no hub reachable" in err
    assert not (tmp_path / "data").exists()
