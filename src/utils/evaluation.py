"""Accuracy on held-out problems: the same problems, the same decoding, answers read one way."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from utils.answers import extract_answer
from utils.data import Problem
from utils.generation import GenerationConfig, Sample, sample_reasoning, sample_with_tools
from utils.prompts import build_prompt


@dataclass
class EvalResult:
    """Accuracy overall and per problem kind, and every record (problem id, output, answer, correct)."""

    accuracy: float
    n: int
    by_kind: dict = field(default_factory=dict)
    records: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "by_kind": self.by_kind}

    @classmethod
    def from_records(cls, records: list[dict]) -> EvalResult:
        """Accuracy overall and per `kind` from records that each hold `kind` and `correct`."""
        per_kind = defaultdict(list)
        for r in records:
            per_kind[r["kind"]].append(r["correct"])
        n = len(records)
        accuracy = sum(r["correct"] for r in records) / n if n else 0.0
        by_kind = {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}
        return cls(accuracy=accuracy, n=n, by_kind=by_kind, records=records)


def score(problems: list[Problem], outputs: list[str]) -> EvalResult:
    """Read each output's answer with `extract_answer` and compare it with the problem's answer."""
    records = []
    for p, text in zip(problems, outputs, strict=True):
        predicted = extract_answer(text)
        correct = predicted is not None and predicted == p.answer
        records.append(
            {
                "id": p.id,
                "kind": p.metadata.get("kind", p.source),
                "answer": p.answer,
                "predicted": predicted,
                "correct": correct,
                "output": text,
            }
        )
    return EvalResult.from_records(records)


def problem_modes(problems: list[Problem], mode: str = "reasoning") -> list[str]:
    """The prompt mode of each problem: `mode` itself, or with `mode="auto"` the style each problem is
    trained in (`utils.prep.modes_for`): tool-integrated for computation-heavy problems, step-by-step
    reasoning for the rest."""
    from utils.prep import modes_for

    return [modes_for(p)[0] if mode == "auto" else mode for p in problems]


def generate_answers(
    model, tokenizer, problems: list[Problem], mode: str = "reasoning", config: GenerationConfig | None = None
) -> list[Sample]:
    """One sample per problem, each prompted in its mode (see `problem_modes`), batched per mode."""
    config = config or GenerationConfig()
    modes = problem_modes(problems, mode)
    samples: list[Sample] = [Sample(text="")] * len(problems)
    for m in sorted(set(modes)):
        idx = [i for i, pm in enumerate(modes) if pm == m]
        prompts = [build_prompt(tokenizer, problems[i].problem, m) for i in idx]
        sampler = sample_with_tools if m == "tools" else sample_reasoning
        for i, s in zip(idx, sampler(model, tokenizer, prompts, config, n_samples=1), strict=True):
            samples[i] = s[0]
    return samples


def evaluate(
    model, tokenizer, problems: list[Problem], mode: str = "reasoning", config: GenerationConfig | None = None
) -> EvalResult:
    """Greedy (by default) accuracy of `model` on `problems` in the given prompt mode (or "auto": each
    problem in the style it is trained in)."""
    return score(problems, [s.text for s in generate_answers(model, tokenizer, problems, mode, config)])


def held_out(root_output_dir, source: str = "embedded", limit: int | None = None) -> list[Problem]:
    """The first `limit` evaluation problems of `source` that notebook 01 wrote (in file order, which is
    deterministic), so that every notebook scores the same problems."""
    from pathlib import Path

    from utils.data import load_problems

    path = Path(root_output_dir) / "01_data_prep" / "evaluation.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 01 first")
    problems = [p for p in load_problems(path) if p.source == source or p.metadata.get("set") == source]
    if not problems:
        raise ValueError(f"no evaluation problems from source {source!r} in {path}")
    return problems[:limit] if limit else problems
