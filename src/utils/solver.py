"""The solver: many samples per problem, answers voted on, inside a deadline.

As the AIMO winners did: sample in batched waves, read each sample's answer, majority-vote, stop early
once the vote cannot change (or enough samples agree), and always answer (a fallback when nothing
parses). Sampling is seeded per problem, so a run is reproducible whatever order problems come in.
A wave is not started when the last one shows it could not finish before the deadline: the time it
would waste flows to the problems still to come (see `utils.budget.TimeBudget`).

A deadline holds even when generation stalls where no stopping criterion runs: with a deadline, the
sampling runs in a worker thread, and `config.grace_s` after the deadline the solver answers from the
samples it has (the fallback when none) and abandons the worker (see `utils.watchdog`). A later problem
starts its own worker, so it is never blocked by a stuck one; while that one still runs, the two share
the device (and the global torch seed), so the later problem's samples may differ from a clean run's.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.answers import (
    COMPETITION_RANGES,
    extract_answer,
    majority_vote,
    normalize_for_competition,
    vote_is_decided,
)
from utils.engines import check_engine
from utils.generation import GenerationConfig, Sample, past, sample_reasoning, sample_with_tools
from utils.prompts import MODES, build_prompt
from utils.quantization import CHOICE_FILE
from utils.watchdog import call_until

log = logging.getLogger(__name__)
ANSWER_SOURCES = ("boxed", "program")
# "mixed": each wave is half reasoning samples, half tool samples (AIMO 2's second place ran 7 + 8), so the
# vote can take whichever style the model handles on this problem, with no label saying which it is.
SOLVER_MODES = (*MODES, "mixed")


@dataclass(frozen=True)
class SolverConfig:
    """How to solve: prompt mode, samples, decoding, code rounds, early stop, answer range."""

    mode: str = "tools"  # "reasoning", "tools" or "mixed" (half of each wave in each)
    samples: int = 8
    wave_size: int = 8  # samples drawn per problem before the vote is checked
    batch_size: int = 64  # most sequences in one generate call (solve_batch packs many problems' waves)
    temperature: float = 0.7  # used when samples > 1; a single sample is greedy
    top_p: float = 0.95
    max_new_tokens: int = 96
    max_code_rounds: int = 2
    code_timeout: float = 5.0
    min_votes: int | None = None  # stop once this many samples agree (None: only when the vote is decided)
    competition: str = "aimo3"  # the answer range: mod 1000 (aimo1, aimo2) or 0..99999 (aimo3)
    fallback: int = 0  # the answer when no sample's answer parses
    seed: int = 0
    # Where a sample's answer is read: "boxed", its final answer; "program", the integer its last program
    # printed, when it ran and printed one (a small model may compute right and copy the result wrong)
    answer_from: str = "boxed"
    # Seconds past the deadline before a stalled generation is abandoned: time for the last decoding step
    # and the vote of a generation that honours its deadline (utils.submission waits longer, 3 s).
    grace_s: float = 2.0
    # Weight each sample's vote by its confidence (the geometric mean probability of its own tokens), so
    # that among disagreeing samples the ones the model was sure of count more.
    weighted: bool = False
    # A sample's later code blocks see its earlier blocks' variables (see GenerationConfig.persistent_state).
    persistent_state: bool = False
    # A tool sample whose final answer differs from the integer its last program printed votes with weight
    # 0: the program does not back it (the model miscopied the output, or its code computed something else).
    program_check: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SOLVER_MODES:
            raise ValueError(f"SolverConfig.mode: expected one of {SOLVER_MODES}, got {self.mode!r}")
        for name in ("samples", "wave_size", "batch_size", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SolverConfig.{name}: expected an int >= 1, got {getattr(self, name)!r}")
        if self.competition not in COMPETITION_RANGES:
            raise ValueError(
                f"SolverConfig.competition: expected one of {sorted(COMPETITION_RANGES)}, "
                f"got {self.competition!r}"
            )
        if self.answer_from not in ANSWER_SOURCES:
            raise ValueError(
                f"SolverConfig.answer_from: expected one of {ANSWER_SOURCES}, got {self.answer_from!r}"
            )
        if self.min_votes is not None and self.min_votes < 1:
            raise ValueError(f"SolverConfig.min_votes: expected None or an int >= 1, got {self.min_votes!r}")
        if not 0 <= self.grace_s < float("inf"):
            raise ValueError(f"SolverConfig.grace_s: expected seconds >= 0, got {self.grace_s!r}")

    def generation(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature if self.samples > 1 else 0.0,
            top_p=self.top_p,
            batch_size=self.batch_size,
            max_code_rounds=self.max_code_rounds,
            code_timeout=self.code_timeout,
            scores=self.weighted,
            persistent_state=self.persistent_state,
        )


@dataclass
class Solution:
    """One problem's answer and how it was reached."""

    answer: int
    votes: dict  # answer -> samples that gave it (first-seen order)
    samples: int  # samples drawn
    seconds: float
    outputs: list = field(default_factory=list)  # every sample's text
    answers: list = field(default_factory=list)  # every sample's normalized answer (None: unparsed)
    weights: list = field(default_factory=list)  # every sample's vote weight (1.0 unless weighted)
    confidences: list = field(default_factory=list)  # every sample's confidence (None: not scored)
    stopped_early: bool = False  # the vote was decided before all samples were drawn
    timed_out: bool = False  # the deadline cut sampling short
    error: str | None = None  # a wave failed; the answer is the vote of the samples drawn before it


class _Ballot:
    """One problem's samples and votes as its waves arrive."""

    def __init__(self, config: SolverConfig):
        self.config = config
        self.outputs: list[str] = []
        self.answers: list[int | None] = []
        self.weights: list[float] = []
        self.confidences: list[float | None] = []
        self.timed_out = False
        self.stopped_early = False
        self.error: str | None = None
        self.lock = threading.Lock()  # an abandoned worker may still add while the caller reads

    @property
    def left(self) -> int:
        return self.config.samples - len(self.answers)

    def add(self, wave: Sequence[Sample]) -> None:
        answers = [sample_answer(s, self.config.competition, self.config.answer_from) for s in wave]
        with self.lock:
            for sample, answer in zip(wave, answers, strict=True):
                self.outputs.append(sample.text)
                self.answers.append(answer)
                self.weights.append(sample_weight(sample, answer, self.config))
                self.confidences.append(sample.confidence)
                self.timed_out |= sample.timed_out
            vote = self.vote()
            if self.left > 0 and vote_is_decided(vote, self.left, self.config.min_votes):
                self.stopped_early = True

    def vote(self):
        weights = self.weights if self.config.weighted or self.config.program_check else None
        return majority_vote(self.answers, fallback=self.config.fallback, weights=weights)

    @property
    def open(self) -> bool:
        return self.left > 0 and not (self.stopped_early or self.timed_out or self.error)

    def solution(self, seconds: float) -> Solution:
        with self.lock:  # copies: an abandoned worker must not change a solution already returned
            vote = self.vote()
            return Solution(
                answer=vote.answer,
                votes=dict(vote.counts),
                samples=len(self.answers),
                seconds=seconds,
                outputs=list(self.outputs),
                answers=list(self.answers),
                weights=list(self.weights),
                confidences=list(self.confidences),
                stopped_early=self.stopped_early,
                timed_out=self.timed_out,
                error=self.error,
            )

    def abandon(self, grace_s: float) -> None:
        """The worker stalled past the deadline and grace: the vote is closed on what came in."""
        with self.lock:
            self.timed_out = True
            self.error = (
                f"generation stalled: still running {grace_s:g} s past the deadline; "
                f"answered from the {len(self.answers)} sample(s) drawn before it"
            )


def read_answer(text: str, competition: str) -> int | None:
    """A sample's answer as the competition would score it (None: no answer, or out of range)."""
    return normalize_for_competition(extract_answer(text), competition)


def sample_answer(sample: Sample, competition: str, answer_from: str = "boxed") -> int | None:
    """A sample's vote: its final answer, or with `answer_from="program"` what its last program printed
    (when that program ran without error and printed an integer; else its final answer)."""
    if answer_from == "program" and sample.code_runs and not sample.code_runs[-1].get("error"):
        printed = extract_answer(sample.code_runs[-1].get("stdout") or "")
        if printed is not None:
            return normalize_for_competition(printed, competition)
    return read_answer(sample.text, competition)


def sample_weight(sample: Sample, answer: int | None, config: SolverConfig) -> float:
    """A sample's vote weight: with `config.weighted` its confidence (1.0 when it was not scored, e.g. cut
    by the deadline), else 1.0; with `config.program_check`, 0.0 when its last program printed another integer."""
    if config.program_check and answer is not None:
        printed = sample_answer(sample, config.competition, "program")
        if sample.code_runs and printed != read_answer(sample.text, config.competition):
            return 0.0
    confidence = sample.confidence if config.weighted else None
    return 1.0 if confidence is None else confidence


def seed_for_problem(problem: str, seed: int) -> int:
    """Seed torch from the problem's text and the run's seed: the same problem gets the same samples
    whatever came before it (Kaggle serves problems in a random order)."""
    digest = hashlib.sha256(f"{seed}:{problem}".encode()).digest()
    value = int.from_bytes(digest[:8], "big") % 2**63
    torch.manual_seed(value)
    return value


class Solver:
    """`solver(problem, deadline) -> int`: the interface `utils.submission` drives.

    `model` and `tokenizer` may be given, or loaded on first use by `loader() -> (model, tokenizer)`
    (so that, on a Kaggle rerun, the model loads inside the first `predict` call).
    """

    def __init__(
        self,
        model=None,
        tokenizer=None,
        config: SolverConfig | None = None,
        loader: Callable[[], tuple] | None = None,
    ):
        if model is None and loader is None:
            raise ValueError("Solver needs a model (and tokenizer) or a loader")
        self._model, self._tokenizer, self._loader = model, tokenizer, loader
        self.config = config or SolverConfig()
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ the model, loaded on first use

    def loaded(self) -> Solver:
        """Load the model now if it is not loaded yet; returns self (a `solver_factory` for run_submission)."""
        if self._model is None:
            start = time.monotonic()
            self._model, self._tokenizer = self._loader()
            self.load_seconds = time.monotonic() - start
        return self

    @property
    def model(self):
        return self.loaded()._model

    @property
    def tokenizer(self):
        return self.loaded()._tokenizer

    def with_config(self, **changes) -> Solver:
        """A solver sharing this one's model (loaded once) with some settings changed."""
        other = Solver.__new__(Solver)
        other.__dict__.update(self.__dict__)
        other.config = dataclasses.replace(self.config, **changes)
        if self._model is None:  # share the load: the other solver asks this one for the model
            other._loader = lambda: (self.model, self.tokenizer)
        return other

    # ------------------------------------------------------------------ solving

    def __call__(self, problem: str, deadline: float | None = None) -> int:
        return self.solve(problem, deadline).answer

    def solve(self, problem: str, deadline: float | None = None) -> Solution:
        """Vote over up to `config.samples` samples drawn in waves, stopping early or at `deadline`; a
        generation stalled past `deadline + config.grace_s` is abandoned (see the module's docstring)."""
        self.loaded()  # a model load is not the problem's time, and never runs on a worker left behind
        ballot = _Ballot(self.config)
        return self._watched(self._vote, (problem, ballot, deadline), [ballot], deadline)[0]

    def _vote(self, problem: str, ballot: _Ballot, deadline: float | None) -> None:
        cfg, model, tokenizer = self.config, self.model, self.tokenizer
        seed_for_problem(problem, cfg.seed)
        wave_seconds = 0.0
        while ballot.open:
            if past(deadline) or (
                ballot.answers and time.monotonic() + wave_seconds > _deadline_or_inf(deadline)
            ):
                ballot.timed_out = True  # no time for another wave like the last one
                break
            began = time.monotonic()
            try:
                wave = self._sample(model, tokenizer, [problem], min(cfg.wave_size, ballot.left), deadline)[0]
            except Exception as e:  # e.g. out of memory as contexts grow: keep the votes already in
                if not ballot.answers:
                    raise
                ballot.error = f"{type(e).__name__}: {e}"
                log.warning("a wave failed after %d samples; voting on those: %s", len(ballot.answers), e)
                break
            wave_seconds = max(wave_seconds, time.monotonic() - began)
            ballot.add(wave)

    def solve_batch(self, problems: Sequence[str], deadline: float | None = None) -> list[Solution]:
        """Solve many problems together: each wave samples every undecided problem in one batched call.

        Faster than `solve` one by one where a batch is cheap (a CPU, a GPU with memory to spare), and the
        same votes and early stops; the samples depend on the whole list (one seed for the batch).
        """
        if not problems:
            return []
        self.loaded()
        ballots = [_Ballot(self.config) for _ in problems]
        solutions = self._watched(self._vote_batch, (list(problems), ballots, deadline), ballots, deadline)
        for s in solutions:
            s.seconds /= len(problems)
        return solutions

    def _vote_batch(self, problems: list[str], ballots: list[_Ballot], deadline: float | None) -> None:
        cfg, model, tokenizer = self.config, self.model, self.tokenizer
        seed_for_problem("\n".join(problems), cfg.seed)
        while (todo := [i for i, b in enumerate(ballots) if b.open]) and not past(deadline):
            n = min(cfg.wave_size, max(ballots[i].left for i in todo))
            waves = self._sample(model, tokenizer, [problems[i] for i in todo], n, deadline)
            for i, wave in zip(todo, waves, strict=True):
                ballots[i].add(wave[: ballots[i].left])
        for b in ballots:
            b.timed_out |= b.open and past(deadline)

    def _watched(self, work: Callable, args: tuple, ballots: list[_Ballot], deadline: float | None):
        """Run `work(*args)` (it fills `ballots`); with a deadline, in a worker abandoned at deadline + grace."""
        start = time.monotonic()
        if deadline is None:  # nothing to hold it to: run here
            work(*args)
        else:
            outcome = call_until(work, args, deadline, self.config.grace_s, name="solver-generation")
            if not outcome.finished:
                log.warning("generation stalled past its deadline; answering from the samples drawn")
                for b in ballots:
                    b.abandon(self.config.grace_s)
            elif outcome.error is not None:
                raise outcome.error
        seconds = time.monotonic() - start
        return [b.solution(seconds) for b in ballots]

    def _sample(
        self, model, tokenizer, problems: list[str], n: int, deadline: float | None
    ) -> list[list[Sample]]:
        """`n` samples of every problem; in "mixed" mode the first ceil(n/2) by reasoning, the rest with tools."""
        if self.config.mode != "mixed":
            return self._sample_mode(model, tokenizer, problems, n, self.config.mode, deadline)
        reasoning = self._sample_mode(model, tokenizer, problems, (n + 1) // 2, "reasoning", deadline)
        if n // 2 == 0:
            return reasoning
        tools = self._sample_mode(model, tokenizer, problems, n // 2, "tools", deadline)
        return [r + t for r, t in zip(reasoning, tools, strict=True)]

    def _sample_mode(
        self, model, tokenizer, problems: list[str], n: int, mode: str, deadline: float | None
    ) -> list[list[Sample]]:
        sampler = sample_with_tools if mode == "tools" else sample_reasoning
        prompts = [build_prompt(tokenizer, p, mode) for p in problems]
        return sampler(model, tokenizer, prompts, self.config.generation(), n_samples=n, deadline=deadline)


def _deadline_or_inf(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline


def build_solver(
    model: str,
    mode: str = "tools",
    samples: int = 8,
    seed: int = 0,
    quantization: str = "none",
    competition: str = "aimo3",
    lazy: bool = False,
    engine: str = "hf",
    engine_options: dict | None = None,
    **overrides,
) -> Solver:
    """A Solver for `model`: a name, folder, Kaggle Model, a saved adapter folder, or notebook 04's output
    folder (its `choice.json` then names the model and its quantization, and `quantization` is ignored).

    `engine` decodes: "hf" (transformers) or "vllm" (`utils.engine_vllm`, with `engine_options`).
    `lazy=True` defers loading to the first use (or `solver.loaded()`); other keywords set `SolverConfig` fields.
    """
    check_engine(engine)
    config = SolverConfig(mode=mode, samples=samples, seed=seed, competition=competition, **overrides)
    solver = Solver(
        config=config, loader=lambda: load_submission_model(model, quantization, engine, engine_options)
    )
    return solver if lazy else solver.loaded()


def load_submission_model(
    model: str, quantization: str = "none", engine: str = "hf", engine_options: dict | None = None
) -> tuple:
    """(model, tokenizer): notebook 04's choice when `model` is a folder holding its choice file, else
    `utils.modeling.load_model(model, quantization)`. With `engine="vllm"`, (a `utils.engine_vllm.VLLMEngine`
    serving the same, tokenizer) instead; `engine_options` are its settings (the hf engine takes none).
    Where vLLM is not installed (a Kaggle kernel without the wheels dataset), it warns and decodes with
    transformers: slower, but the submission still answers."""
    if check_engine(engine) == "vllm":
        if importlib.util.find_spec("vllm") is not None:
            from utils.engine_vllm import load_vllm

            return load_vllm(model, quantization, engine_options or {})
        warnings.warn(
            "ENGINE='vllm' but vLLM is not installed here: decoding with transformers instead. On Kaggle, "
            "attach the vLLM wheels dataset (docs/KAGGLE.md); here, `make vllm` builds .venv-vllm",
            stacklevel=2,
        )
        engine_options = None
    if engine_options:
        raise ValueError(f"engine_options {sorted(engine_options)} apply to the vllm engine; hf takes none")
    if (Path(model) / CHOICE_FILE).is_file():
        from utils.quantization import load_choice

        loaded, tokenizer, _ = load_choice(model)
        return loaded, tokenizer
    from utils.modeling import load_model

    return load_model(model, quantization)


# ---------------------------------------------------------------------------------------------- notebook helpers


def score_solutions(problems: Sequence, solutions: Sequence[Solution], competition: str = "aimo3"):
    """Accuracy of the solutions' answers against the problems' (`utils.data.Problem`), overall and by kind.

    The truth is normalized like the answers (AIMO 1/2: mod 1000), so a problem scores as the competition would.
    """
    from utils.evaluation import EvalResult

    records = []
    for p, s in zip(problems, solutions, strict=True):
        truth = normalize_for_competition(p.answer, competition)
        correct = s.answer == truth and bool(s.votes)  # a fallback answer never counts as solved
        records.append(
            {
                "id": p.id,
                "kind": p.metadata.get("kind", p.source),
                "answer": p.answer,
                "predicted": s.answer,
                "correct": correct,
                "votes": s.votes,
                "samples": s.samples,
                "sample_answers": s.answers,
                "sample_weights": s.weights,
                "sample_confidences": s.confidences,
                "output": s.outputs[0] if s.outputs else "",
            }
        )
    return EvalResult.from_records(records)


def evaluate_solver(solver: Solver, problems: Sequence):
    """`solver.solve_batch` on held-out problems (`utils.data.Problem`), scored as its competition would
    (an `EvalResult`; each record also holds the samples drawn, the vote and the first sample's text)."""
    return score_solutions(
        problems, solver.solve_batch([p.problem for p in problems]), solver.config.competition
    )


def evaluation_problems(
    root_output_dir: str | os.PathLike, source: str = "embedded", limit: int | None = None
) -> list:
    """Notebook 01's held-out problems, or none on a competition rerun or when 01's output is absent
    (a submission notebook must still run to its submission then)."""
    from utils.evaluation import held_out
    from utils.gateway import is_competition_rerun

    if is_competition_rerun():
        return []
    try:
        return held_out(root_output_dir, source, limit)
    except (FileNotFoundError, ValueError) as e:
        print(f"no held-out problems to compare on ({e}); skipping the comparison")
        return []


def validation_problems(
    root_output_dir: str | os.PathLike, source: str = "embedded", limit: int | None = None
) -> list:
    """Notebook 01's validation problems of `source` (`utils.data.Problem`, with `kind` metadata), in file order.

    Chosen on these, never on the held-out ones: a configuration picked on the problems it is then scored
    on would report its luck on them as skill. Empty on a rerun or when 01's output is absent.
    """
    import json

    from utils.data import Problem
    from utils.gateway import is_competition_rerun
    from utils.prompts import INSTRUCTIONS

    path = Path(root_output_dir) / "01_data_prep" / "validation.jsonl"
    if is_competition_rerun() or not path.is_file():
        return []
    problems = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["source"] != source or row.get("answer") is None:
            continue
        question = row["messages"][0]["content"]  # the question, then the instruction of the row's mode
        for instruction in INSTRUCTIONS.values():
            question = question.removesuffix("\n" + instruction)
        problems.append(
            Problem(row["id"], source, question, answer=row["answer"], metadata={"kind": row.get("kind")})
        )
    return problems[:limit] if limit else problems


def choose_configuration(scores: dict[str, float], costs: dict[str, float], tolerance: float = 0.0) -> str:
    """The best-scoring configuration; among those within `tolerance` of the best, the cheapest (then the
    first listed). `scores` and `costs` map a name to its validation accuracy and to its samples drawn."""
    best = max(scores.values())
    near = [name for name in scores if scores[name] >= best - tolerance - 1e-12]
    return min(near, key=lambda name: (costs[name], list(scores).index(name)))


def vote_diagnosis(result) -> dict:
    """Why a vote wins or loses, from an `evaluate_solver` result's records: the accuracy of one sample
    (is sampling itself worse than greedy?), the vote's, pass@k (some sample right), and on the problems
    the vote got wrong the share of samples on its wrong answer (do errors pile up on one answer?)."""
    per_sample, any_right, wrong_share = [], [], []
    for r in result.records:
        answers = r["sample_answers"]
        right = [a == r["answer"] for a in answers]
        per_sample.extend(right)
        any_right.append(any(right))
        if not r["correct"] and answers:
            wrong_share.append(sum(a == r["predicted"] for a in answers) / len(answers))
    return {
        "sample_accuracy": _mean(per_sample),
        "vote_accuracy": result.accuracy,
        "pass_at_k": _mean(any_right),
        "wrong_vote_share": _mean(wrong_share),
        "samples_drawn": sum(r["samples"] for r in result.records),
    }


def two_run_score(first, second) -> float:
    """AIMO 3's penalized score of two runs of the private set: a problem scores 1 if both runs got it
    right, 0.5 if one did, 0 if neither (the mean of the two runs' correctness, problem by problem)."""
    pairs = zip(first.records, second.records, strict=True)
    return _mean([(a["correct"] + b["correct"]) / 2 for a, b in pairs])


def _mean(values: Sequence) -> float:
    return sum(values) / len(values) if values else 0.0


def kaggle_dry_run(predict: Callable, competition: str, search_dirs: Sequence | None = None) -> Path | None:
    """Before submitting, on Kaggle: serve `predict` through the competition's own `kaggle_evaluation` local
    gateway on its `test.csv` (the real contract, not the project's stand-in). Returns that `test.csv`, or
    None when there is nothing to run: a rerun (which serves for real), AIMO 1 (no `kaggle_evaluation`),
    or no `kaggle_evaluation` / `test.csv` attached (off Kaggle)."""
    from utils.gateway import (
        GatewayError,
        competition_spec,
        import_from_competition,
        is_competition_rerun,
        kaggle_search_dirs,
    )

    spec = competition_spec(competition)
    if is_competition_rerun() or spec.server_module is None:
        return None
    dirs = [Path(d) for d in (kaggle_search_dirs(spec) if search_dirs is None else search_dirs)]
    test_csv = next((d / "test.csv" for d in dirs if (d / "test.csv").is_file()), None)
    if test_csv is None:
        return None
    try:
        module = import_from_competition(spec.server_module, dirs)
    except (GatewayError, ImportError) as e:
        log.warning("no kaggle_evaluation to dry-run against: %s", e)
        return None
    getattr(module, spec.server_class)(predict).run_local_gateway((str(test_csv),))
    return test_csv


def write_problems_csv(problems: Sequence, path: str | os.PathLike) -> Path:
    """Problems (`utils.data.Problem`) as a Kaggle problems CSV (`id, problem, answer`), written atomically."""
    import io

    from utils.io import atomic_write_text

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["id", "problem", "answer"])
    writer.writerows([p.id, p.problem, p.answer] for p in problems)
    return atomic_write_text(path, buffer.getvalue())


KAGGLE_FILES = {
    "aimo1": "kaggle/aimo1/train.csv",
    "aimo2": "kaggle/aimo2/reference.csv",
    "aimo3": "kaggle/aimo3/reference.csv",
}


def local_problems_csv(
    data_dir: str | os.PathLike | None,
    competition: str,
    fallback: Sequence = (),
    out_dir: str | os.PathLike = ".",
) -> Path | None:
    """The problems a local run of the gateway answers, the first that exists of: the competition's public
    problems with answers in DATA_DIR (AIMO 3's absent: AIMO 2's, the same format); None when the
    competition is attached (the gateway then reads its `test.csv`, as on Kaggle); else the `fallback`
    problems written to `out_dir/problems.csv`."""
    from utils.gateway import competition_spec
    from utils.paths import find_competition_dir

    for name in (KAGGLE_FILES[competition], KAGGLE_FILES["aimo2"]):
        if data_dir and (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    if find_competition_dir(competition_spec(competition).slug):
        return None
    if not fallback:
        raise FileNotFoundError(
            f"no problems for a local {competition} run: no DATA_DIR/{KAGGLE_FILES[competition]}, "
            "no attached competition, and no fallback problems"
        )
    return write_problems_csv(fallback, Path(out_dir) / "problems.csv")


def budget_schedule(
    total_seconds: float, seconds_taken: Sequence[float], reserve_fraction: float = 0.1
) -> list[dict]:
    """How `TimeBudget` shares a budget when the problems take `seconds_taken` (a simulated clock):
    each problem's share, what it used, and what was left for the problems after it."""
    from utils.budget import TimeBudget

    now = [0.0]
    budget = TimeBudget(total_seconds, len(seconds_taken), reserve_fraction, clock=lambda: now[0])
    rows = []
    for k, took in enumerate(seconds_taken):
        share = budget.start_problem() - now[0]
        now[0] += min(took, share)
        budget.finish_problem()
        rows.append(
            {
                "problem": k + 1,
                "share_s": round(share, 1),
                "used_s": round(min(took, share), 1),
                "left_s": round(budget.seconds_left(), 1),
            }
        )
    return rows


def submission_model(model: str, adapter: str, root_output_dir: str | os.PathLike) -> str:
    """What to submit. `adapter` "auto": notebook 04's chosen model if it exists, else notebook 02's adapter,
    else the base `model` alone; "" : the base model; anything else: that folder."""
    if adapter != "auto":
        return adapter or model
    root = Path(root_output_dir)
    for folder, marker in (
        (root / "04_quantized_inference", CHOICE_FILE),
        (root / "02_lora_sft" / "adapter" / "final", "adapter_config.json"),
    ):
        if (folder / marker).is_file():
            return str(folder)
    return model
