"""Data preparation (notebook 01): every source to one schema, filtered, deduplicated, decontaminated,
formatted as reasoning and tool-integrated examples, split deterministically, and written to disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.answers import extract_answer
from utils.data import Problem, load_all, save_problems
from utils.dedup import decontaminate, deduplicate
from utils.io import atomic_write_json, write_jsonl
from utils.prompts import solution_for, user_message
from utils.synthetic import generate_problems


@dataclass
class PrepConfig:
    """Which sets train and which evaluate, how many embedded problems, and the split's seed."""

    seed: int = 0
    n_embedded_train: int = 6000
    n_embedded_validation: int = 200
    n_embedded_eval: int = 300
    compute_share: float = 0.25
    train_sets: list = field(
        default_factory=lambda: ["tora", "gsm8k_train", "math_train"]
    )  # ToRA first: its tool-integrated copies of MATH problems win the dedup
    # AIME 1983-2024 has answers but no worked solutions: it evaluates, and never trains
    eval_sets: list = field(
        default_factory=lambda: [
            "aime",
            "gsm8k_test",
            "math500",
            "aime2025",
            "aimo_val_aime",
            "aimo_val_amc",
            "aimo1_train",
            "aimo2_reference",
        ]
    )
    validation_share: float = 0.02
    decontamination_ngram: int = 13


@dataclass
class PrepResult:
    train: list  # examples: dicts with id, source, mode, messages, answer
    validation: list
    evaluation: list  # Problems
    stages: list  # one row per (source, stage) count
    raw_counts: dict
    decontamination: dict
    files: dict

    def counts(self) -> dict:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "evaluation": len(self.evaluation),
        }


def to_example(problem: Problem, mode: str) -> dict:
    """A training example as chat messages, independent of any tokenizer: notebook 02 renders it with
    the chosen model's chat template."""
    return {
        "id": f"{problem.id}-{mode}",
        "source": problem.source,
        "mode": mode,
        "kind": problem.metadata.get("kind", problem.source),
        "answer": problem.answer,
        "messages": [
            {"role": "user", "content": user_message(problem.problem, mode)},
            {"role": "assistant", "content": solution_for(problem, mode)},
        ],
    }


def has_target(problem: Problem) -> bool:
    """A problem trains only with a worked solution, in each of its modes, whose final answer reads as its own
    (`extract_answer`, as every score is read): a target that ends elsewhere would teach the wrong format."""
    for mode in modes_for(problem):
        target = solution_for(problem, mode)
        if target is None or extract_answer(target) != problem.answer:
            return False
    return True


def modes_for(problem: Problem) -> list[str]:
    """The prompt style a problem is trained in: tool-integrated for problems that need computation
    (the embedded `compute` kind, ToRA's examples), step-by-step reasoning for the rest."""
    if problem.source == "tora" or problem.metadata.get("kind") == "compute":
        return ["tools"]
    return ["reasoning"]


def _rank(problem_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from the id and the seed: the same on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _in_validation(problem_id: str, share: float, seed: int) -> bool:
    return _rank(problem_id, seed) < share


def prepare(config: PrepConfig, data_dir: str | Path | None, out_dir: str | Path) -> PrepResult:
    """Run every stage and write `train.jsonl`, `validation.jsonl`, `evaluation.jsonl`, `report.json`."""
    out_dir = Path(out_dir)
    stages: list[dict] = []

    def stage(source: str, name: str, problems: list) -> list:
        stages.append({"source": source, "stage": name, "count": len(problems)})
        return problems

    emb_train = generate_problems(config.n_embedded_train, config.seed, config.compute_share, "train")
    emb_val = generate_problems(config.n_embedded_validation, config.seed, config.compute_share, "validation")
    emb_eval = generate_problems(config.n_embedded_eval, config.seed, config.compute_share, "eval")
    stage("embedded", "generated (train)", emb_train)

    raw = load_all(data_dir) if data_dir else {}
    raw_counts = {name: len(ps) for name, ps in raw.items()}
    eval_problems = {"embedded_eval": emb_eval}
    for name in config.eval_sets:
        if name in raw:
            eval_problems[name] = [p for p in stage(name, "raw", raw[name]) if p.answer is not None]
            stage(name, "integer answer", eval_problems[name])

    train_pool: list[Problem] = []
    for name in config.train_sets:
        if name not in raw:
            continue
        ps = stage(name, "raw", raw[name])
        ps = stage(name, "integer answer", [p for p in ps if p.answer is not None])
        ps = stage(name, "worked solution ending in its answer", [p for p in ps if has_target(p)])
        for p in ps:
            p.metadata["set"] = name
        ps, _ = deduplicate(ps)
        train_pool += stage(name, "deduplicated", ps)

    # Embedded problems are generated, so copies across splits are real duplicates: remove them too.
    train_pool, _ = deduplicate(train_pool + emb_train)
    train_pool, decon = decontaminate(
        train_pool, eval_problems | {"embedded_validation": emb_val}, ngram=config.decontamination_ngram
    )
    for name in ["embedded", *[n for n in config.train_sets if n in raw]]:
        stage(
            name,
            "deduplicated + decontaminated",
            [p for p in train_pool if p.metadata.get("set", "embedded") == name],
        )

    real_val = [
        p
        for p in train_pool
        if p.source != "embedded" and _in_validation(p.id, config.validation_share, config.seed)
    ]
    val_ids = {p.id for p in real_val}
    train_problems = [p for p in train_pool if p.id not in val_ids]
    train = [to_example(p, m) for p in train_problems for m in modes_for(p)]
    # Mixed in a seeded order, so that any prefix of the validation rows draws from every training source.
    val_problems = sorted(emb_val + real_val, key=lambda p: _rank(p.id, config.seed))
    validation = [to_example(p, m) for p in val_problems for m in modes_for(p)]
    evaluation = [p for ps in eval_problems.values() for p in ps]

    files = {
        "train": str(write_jsonl(out_dir / "train.jsonl", train)),
        "validation": str(write_jsonl(out_dir / "validation.jsonl", validation)),
        "evaluation": str(save_problems(out_dir / "evaluation.jsonl", evaluation)),
    }
    result = PrepResult(train, validation, evaluation, stages, raw_counts, decon.to_dict(), files)
    atomic_write_json(
        out_dir / "report.json",
        {
            "config": asdict(config),
            "stages": stages,
            "raw_counts": raw_counts,
            "decontamination": decon.to_dict(),
            "counts": result.counts(),
        },
    )
    return result
