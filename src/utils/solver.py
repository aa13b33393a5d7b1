"""The solver: many samples per problem, answers voted on, inside a deadline.

As the AIMO winners did: sample in batched waves, read each sample's answer, majority-vote, stop early
once the vote cannot change (or enough samples agree), and always answer (a fallback when nothing
parses). Sampling is seeded per problem, so a run is reproducible whatever order problems come in.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from utils.answers import extract_answer, majority_vote, normalize_for_competition, vote_is_decided
from utils.generation import GenerationConfig, sample_reasoning, sample_with_tools
from utils.prompts import build_prompt


@dataclass
class SolverConfig:
    """How to solve: prompt mode, samples, decoding, code rounds, early stop, answer range."""

    mode: str = "tools"  # "reasoning" or "tools"
    samples: int = 8
    wave_size: int = 8  # samples per batched generate call
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 96
    max_code_rounds: int = 2
    code_timeout: float = 5.0
    min_votes: int | None = None  # stop once this many samples agree (None: only when the vote is decided)
    competition: str = "aimo3"
    fallback: int = 0
    seed: int = 0

    def generation(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature if self.samples > 1 else 0.0,
                                top_p=self.top_p, batch_size=self.wave_size, max_code_rounds=self.max_code_rounds,
                                code_timeout=self.code_timeout)


@dataclass
class Solution:
    answer: int
    votes: dict
    samples: int
    seconds: float
    outputs: list = field(default_factory=list)
    stopped_early: bool = False
    timed_out: bool = False


class Solver:
    """`solver(problem, deadline) -> int`: the interface `utils.submission` drives."""

    def __init__(self, model, tokenizer, config: SolverConfig | None = None):
        self.model, self.tokenizer, self.config = model, tokenizer, config or SolverConfig()

    def __call__(self, problem: str, deadline: float | None = None) -> int:
        return self.solve(problem, deadline).answer

    def solve(self, problem: str, deadline: float | None = None) -> Solution:
        cfg, start = self.config, time.monotonic()
        _seed_for(problem, cfg.seed)
        prompt = build_prompt(self.tokenizer, problem, cfg.mode)
        sampler = sample_with_tools if cfg.mode == "tools" else sample_reasoning
        answers, outputs, stopped_early, timed_out = [], [], False, False
        while len(answers) < cfg.samples:
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            n = min(cfg.wave_size, cfg.samples - len(answers))
            wave = sampler(self.model, self.tokenizer, [prompt], cfg.generation(), n_samples=n, deadline=deadline)[0]
            for sample in wave:
                outputs.append(sample.text)
                answers.append(normalize_for_competition(extract_answer(sample.text), cfg.competition))
            vote = majority_vote(answers, fallback=cfg.fallback)
            if len(answers) < cfg.samples and vote_is_decided(vote, cfg.samples - len(answers), cfg.min_votes):
                stopped_early = True
                break
        vote = majority_vote(answers, fallback=cfg.fallback)
        return Solution(answer=vote.answer, votes=dict(vote.counts), samples=len(answers),
                        seconds=time.monotonic() - start, outputs=outputs, stopped_early=stopped_early,
                        timed_out=timed_out)


def _seed_for(problem: str, seed: int) -> None:
    digest = hashlib.sha256(f"{seed}:{problem}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "big") % 2**63)


def build_solver(model: str, mode: str = "tools", samples: int = 8, seed: int = 0, quantization: str = "none",
                 competition: str = "aimo3", **overrides) -> Solver:
    """Load `model` (a name, folder, Kaggle Model, or a saved adapter folder) and wrap it in a Solver."""
    from utils.modeling import load_model

    loaded, tokenizer = load_model(model, quantization)
    config = SolverConfig(mode=mode, samples=samples, seed=seed, competition=competition, **overrides)
    return Solver(loaded, tokenizer, config)
