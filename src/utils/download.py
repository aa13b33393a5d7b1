"""`make data`: the public data sets from the Hugging Face hub, written in the layout of ../shared/data's MANIFEST.

`python -m utils.download --out DATA_DIR` fetches each set with `datasets`, renames its fields to the ones the
MANIFEST lists (what `utils.data`'s loaders read), and writes JSON Lines atomically. Where no hub is reachable
it says so in one line and exits 2 without writing anything. The Kaggle competition files come from Kaggle
(`kaggle competitions download -c <competition>`, after accepting its rules), and ToRA's examples from
microsoft/ToRA's repository: this command names them and leaves them to the user.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from utils.io import write_jsonl

HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class HubSet:
    """One file of the layout: where it comes from on the hub and how its rows map to the MANIFEST's fields."""

    path: str  # inside DATA_DIR
    repo: str
    config: str | None
    split: str
    row: Callable[[dict, int], dict]


def _math_row(split: str) -> Callable[[dict, int], dict]:
    def row(r: dict, i: int) -> dict:  # the hub copy lacks the original file names: number them per split
        subject = r["type"].lower().replace(" & ", "_").replace(" ", "_")
        return {k: r[k] for k in ("problem", "level", "type", "solution")} | {
            "unique_id": f"{split}/{subject}/{i}.json"
        }

    return row


HUB_SETS = [
    HubSet("gsm8k/train.jsonl", "openai/gsm8k", "main", "train", lambda r, i: {k: r[k] for k in ("question", "answer")}),
    HubSet("gsm8k/test.jsonl", "openai/gsm8k", "main", "test", lambda r, i: {k: r[k] for k in ("question", "answer")}),
    HubSet("math/train.jsonl", "EleutherAI/hendrycks_math", None, "train", _math_row("train")),
    HubSet("math/test.jsonl", "EleutherAI/hendrycks_math", None, "test", _math_row("test")),
    HubSet("math/math500.jsonl", "HuggingFaceH4/MATH-500", None, "test", lambda r, i: dict(r)),
    HubSet(
        "aime/aime_1983_2024.jsonl", "gneubig/aime-1983-2024", None, "train",
        lambda r, i: {"id": r["ID"], "year": str(r["Year"]), "problem number": str(r["Problem Number"]),
                      "problem": r["Question"], "answer": str(r["Answer"]), "part": r.get("Part") or ""},
    ),
    HubSet("aime/aime_2025.jsonl", "opencompass/AIME2025", "AIME2025-I", "test",
           lambda r, i: {"question": r["question"], "answer": str(r["answer"])}),
    HubSet("aime/aime_2025.jsonl", "opencompass/AIME2025", "AIME2025-II", "test",
           lambda r, i: {"question": r["question"], "answer": str(r["answer"])}),
    HubSet("aimo_validation/aime.jsonl", "AI-MO/aimo-validation-aime", None, "train", lambda r, i: dict(r)),
    HubSet("aimo_validation/amc.jsonl", "AI-MO/aimo-validation-amc", None, "train", lambda r, i: dict(r)),
]  # fmt: skip
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")  # fmt: skip
BY_HAND = {
    "kaggle/aimo1, kaggle/aimo2": "kaggle competitions download -c ai-mathematical-olympiad-prize (and "
    "-progress-prize-2), after accepting each competition's rules",
    "tir/tora_examples.jsonl": "microsoft/ToRA's repository (data/tora/ examples), see MANIFEST.md",
}


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def rows_of(spec: HubSet) -> Iterable[dict]:
    from datasets import load_dataset

    configs = MATH_SUBJECTS if spec.repo == "EleutherAI/hendrycks_math" else [spec.config]
    i = 0
    for config in configs:
        for r in load_dataset(spec.repo, config, split=spec.split):
            yield spec.row(r, i)
            i += 1


def download(out: Path, fetch: Callable[[HubSet], Iterable[dict]] = rows_of) -> dict[str, int]:
    """Every hub set into `out`; files that several specs feed (AIME 2025 I and II) are joined."""
    by_path: dict[str, list[dict]] = {}
    for spec in HUB_SETS:
        by_path.setdefault(spec.path, []).extend(fetch(spec))
    for path, rows in by_path.items():
        write_jsonl(out / path, rows)
    return {path: len(rows) for path, rows in by_path.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="DATA_DIR to fill")
    args = parser.parse_args(argv)
    if not hub_reachable():
        print(
            f"error: no hub reachable ({HUB_HOST}:443): make data needs the network. Copy the public sets into "
            f"{args.out} by hand instead, in the layout of MANIFEST.md.",
            file=sys.stderr,
        )
        return 2
    counts = download(args.out)
    for path, n in counts.items():
        print(f"{args.out / path}: {n} records")
    for what, how in BY_HAND.items():
        print(f"not downloaded, {what}: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
