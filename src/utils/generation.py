"""Batched generation: many samples per call, and tool-integrated reasoning (code run in the sandbox).

Tool-integrated reasoning follows ToRA and the AIMO 1 winner: generation stops where the model opens
an output block, the last ```python block runs in the sandbox, its (truncated) output is appended as
an ```output block, and generation continues, up to a number of code rounds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
OUTPUT_OPEN = "```output"


@dataclass
class GenerationConfig:
    """How to sample. `temperature=0` means greedy decoding."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 64
    max_code_rounds: int = 2
    code_timeout: float = 5.0
    max_output_chars: int = 200


@dataclass
class Sample:
    """One generated completion, with what its code rounds ran."""

    text: str
    code_runs: list = field(default_factory=list)
    new_tokens: int = 0


class _Deadline:
    """A stopping criterion: every sequence stops once `deadline` (a `time.monotonic()` time) passes, so
    a time budget holds inside a long generate call, not only between calls."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def __call__(self, input_ids, scores, **kwargs):
        done = time.monotonic() > self.deadline
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def generate_texts(model, tokenizer, prompts: list[str], config: GenerationConfig,
                   stop_strings: list[str] | None = None, deadline: float | None = None) -> list[tuple[str, int]]:
    """Complete every prompt once, in batches; returns (text, number of new tokens) per prompt.

    Prompts are left-padded so that all of a batch continues from the same position. Batches are not
    started once `deadline` (a `time.monotonic()` time) has passed: their completions stay empty.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    results: list[tuple[str, int]] = []
    sampling = config.temperature > 0
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        if deadline is not None and time.monotonic() > deadline:
            results.extend(("", 0) for _ in chunk)
            continue
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(_device_of(model))
        kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
        if sampling:
            kwargs.update(temperature=config.temperature, top_p=config.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop_strings:
            kwargs.update(stop_strings=stop_strings, tokenizer=tokenizer)
        if deadline is not None:
            from transformers import StoppingCriteriaList

            kwargs.update(stopping_criteria=StoppingCriteriaList([_Deadline(deadline)]))
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        for row in new:
            n = int((row != tokenizer.pad_token_id).sum())
            results.append((tokenizer.decode(row, skip_special_tokens=True), n))
    return results


def sample_reasoning(model, tokenizer, prompts: list[str], config: GenerationConfig, n_samples: int = 1,
                     deadline: float | None = None) -> list[list[Sample]]:
    """`n_samples` completions of every prompt, all prompts and samples batched together."""
    flat = [p for p in prompts for _ in range(n_samples)]
    outs = generate_texts(model, tokenizer, flat, config, deadline=deadline)
    samples = [Sample(text=t, new_tokens=n) for t, n in outs]
    return [samples[i * n_samples : (i + 1) * n_samples] for i in range(len(prompts))]


def last_code_block(text: str) -> str | None:
    blocks = CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def sample_with_tools(model, tokenizer, prompts: list[str], config: GenerationConfig, n_samples: int = 1,
                      deadline: float | None = None, run_code=None) -> list[list[Sample]]:
    """Tool-integrated reasoning: generate until an output block opens, run the code, feed back, go on.

    Every unfinished sample of every prompt advances together in one batched call per round.
    """
    if run_code is None:
        from utils.sandbox import run_python

        def run_code(code: str):
            return run_python(code, timeout=config.code_timeout, max_output_chars=config.max_output_chars)

    flat_prompts = [p for p in prompts for _ in range(n_samples)]
    samples = [Sample(text="") for _ in flat_prompts]
    active = list(range(len(samples)))
    for round_ in range(config.max_code_rounds + 1):
        if not active or (deadline is not None and time.monotonic() > deadline):
            break
        stops = [OUTPUT_OPEN] if round_ < config.max_code_rounds else None
        outs = generate_texts(model, tokenizer, [flat_prompts[i] + samples[i].text for i in active], config,
                              stop_strings=stops, deadline=deadline)
        still = []
        for i, (text, n) in zip(active, outs):
            samples[i].text += text
            samples[i].new_tokens += n
            code = last_code_block(samples[i].text) if text.rstrip().endswith(OUTPUT_OPEN) else None
            if code is None:
                continue
            result = run_code(code)
            shown = result.stdout if not result.error else (result.stdout + result.error)
            samples[i].code_runs.append({"code": code, "stdout": result.stdout, "error": result.error})
            samples[i].text += "\n" + shown.strip()[: config.max_output_chars] + "\n```\n"
            still.append(i)
        active = still
    return [samples[i * n_samples : (i + 1) * n_samples] for i in range(len(prompts))]
