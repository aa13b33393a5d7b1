"""Batched generation: many samples per call, and tool-integrated reasoning (code run in the sandbox).

Tool-integrated reasoning follows ToRA and the AIMO 1 winner: generation stops where the model opens
an output block, the last ```python block runs in the sandbox, its (truncated) output is appended as
an ```output block, and generation continues, up to a number of code rounds.

Every function takes an optional `deadline` (a `time.monotonic()` time). It holds inside a generate
call (a stopping criterion checked at every token), between calls, and for the code runs, so that a
caller's time budget is never overrun by more than one decoding step.

What decodes is a transformers model or another engine behind `utils.engines.Engine` (vLLM): the
loop, the code rounds and the deadline here are the same for both.
"""

from __future__ import annotations

import contextlib
import math
import re
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from utils.engines import Engine

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
OUTPUT_OPEN = "```output"
MIN_CODE_SECONDS = 0.2  # below this much time left, a code run is not started


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
    code_workers: int = 4  # sandbox runs in parallel (each is its own process)
    # Score each sample by the log-probability the model gave its own tokens (for confidence-weighted
    # votes). Off by default: it keeps every step's logits, batch x vocabulary floats per new token.
    scores: bool = False
    # A sample's later code blocks see its earlier blocks' variables, as in a notebook (AIMO 3's winners
    # ran persistent kernels): each run replays the sample's earlier blocks, silenced, before the new one.
    persistent_state: bool = False


@dataclass
class Sample:
    """One generated completion, with what its code rounds ran."""

    text: str
    code_runs: list = field(default_factory=list)
    new_tokens: int = 0
    timed_out: bool = False  # the deadline cut it short
    logprob: float = 0.0  # sum of the log-probabilities of the model's own tokens (with `scores`)
    scored_tokens: int = 0  # tokens in `logprob` (code output fed back is not the model's: not scored)

    @property
    def confidence(self) -> float | None:
        """The geometric mean of the model's probabilities for its own tokens, in (0, 1]; None unscored."""
        return math.exp(self.logprob / self.scored_tokens) if self.scored_tokens else None


class _Deadline:
    """A stopping criterion: every sequence stops once `deadline` (a `time.monotonic()` time) passes, so
    a time budget holds inside a long generate call, not only between calls."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def __call__(self, input_ids, scores, **kwargs):
        done = time.monotonic() >= self.deadline
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def past(deadline: float | None) -> bool:
    """Whether `deadline` (a `time.monotonic()` time, or None for no deadline) has passed."""
    return deadline is not None and time.monotonic() >= deadline


def _generate_kwargs(tokenizer, config: GenerationConfig, stop_strings, deadline) -> dict:
    kwargs = dict(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.temperature > 0,
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.temperature > 0:
        kwargs.update(temperature=config.temperature, top_p=config.top_p)
    else:  # unset the model's sampling defaults, which would only warn under greedy decoding
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=tokenizer)
    if config.scores:  # raw logits, not the warped scores: top-p would set unchosen tokens to -inf
        kwargs.update(output_logits=True, return_dict_in_generate=True)
    if deadline is not None:
        from transformers import StoppingCriteriaList

        kwargs.update(stopping_criteria=StoppingCriteriaList([_Deadline(deadline)]))
    return kwargs


# Below this size a CPU decodes on one thread. A decoding step multiplies a few rows by small matrices, and
# waking a second OpenMP thread for each product costs more than it saves once idle threads sleep (the
# series sets OMP_WAIT_POLICY=PASSIVE, see utils/__init__.py): the generation benchmark's 32 answers from
# the tuned tiny model took 1.5 s on two threads and 0.31 s on one.
ONE_THREAD_DECODING_PARAMETERS = 100_000_000


@contextlib.contextmanager
def decoding_threads(model):
    """One torch thread while a small model decodes on a CPU; the thread count is restored afterwards."""
    device = _device_of(model)
    small = sum(p.numel() for p in model.parameters()) < ONE_THREAD_DECODING_PARAMETERS
    if device.type != "cpu" or not small:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _encode(model, tokenizer, chunk: list[str], max_new_tokens: int):
    """Left-padded ids; a prompt that would overflow the model's context keeps its last tokens (cut here
    rather than through the tokenizer's truncation side, which training code shares)."""
    enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if (
        isinstance(limit, int)
        and limit > max_new_tokens
        and enc["input_ids"].shape[1] > limit - max_new_tokens
    ):
        keep = limit - max_new_tokens
        enc["input_ids"], enc["attention_mask"] = (
            enc["input_ids"][:, -keep:],
            enc["attention_mask"][:, -keep:],
        )
    return enc


def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    stop_strings: list[str] | None = None,
    deadline: float | None = None,
) -> list[tuple[str, int]]:
    """Complete every prompt once, in batches; returns (text, number of new tokens) per prompt.

    Prompts are left-padded so that all of a batch continues from the same position. Batches are not
    started once `deadline` (a `time.monotonic()` time) has passed: their completions stay empty.
    """
    return [
        (text, n) for text, n, _ in generate_scored(model, tokenizer, prompts, config, stop_strings, deadline)
    ]


def generate_scored(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    stop_strings: list[str] | None = None,
    deadline: float | None = None,
) -> list[tuple[str, int, float]]:
    """`generate_texts` plus each completion's summed token log-probability (0.0 unless `config.scores`).

    `model` is a transformers model or a `utils.engines.Engine` (vLLM), which takes the whole batch itself."""
    if isinstance(model, Engine):
        return model.generate_scored(tokenizer, prompts, config, stop_strings, deadline)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    results: list[tuple[str, int, float]] = []
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        if past(deadline):
            results.extend(("", 0, 0.0) for _ in chunk)
            continue
        enc = _encode(model, tokenizer, chunk, config.max_new_tokens).to(_device_of(model))
        with torch.inference_mode(), decoding_threads(model):
            out = model.generate(**enc, **_generate_kwargs(tokenizer, config, stop_strings, deadline))
        sequences = out.sequences if config.scores else out
        new = sequences[:, enc["input_ids"].shape[1] :]
        kept = new != tokenizer.pad_token_id
        logprobs = _token_logprobs(out.logits, new, kept) if config.scores else torch.zeros(len(new))
        for row, mask, logprob in zip(new, kept, logprobs, strict=True):
            results.append((tokenizer.decode(row, skip_special_tokens=True), int(mask.sum()), float(logprob)))
    return results


def _token_logprobs(step_logits: tuple, tokens: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of its generated tokens (padding after a row ended excluded)."""
    logits = torch.stack(step_logits, dim=1).float()[:, : tokens.shape[1]]  # batch x steps x vocab
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, : logits.shape[1], None]).squeeze(-1)
    return (chosen * kept[:, : logits.shape[1]]).sum(dim=1)


def sample_reasoning(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    n_samples: int = 1,
    deadline: float | None = None,
) -> list[list[Sample]]:
    """`n_samples` completions of every prompt, all prompts and samples batched together."""
    flat = [p for p in prompts for _ in range(n_samples)]
    outs = generate_scored(model, tokenizer, flat, config, deadline=deadline)
    cut = past(deadline)
    scored = config.scores
    samples = [
        Sample(text=t, new_tokens=n, timed_out=cut, logprob=lp, scored_tokens=n if scored else 0)
        for t, n, lp in outs
    ]
    return _regroup(samples, len(prompts), n_samples)


def _regroup(samples: list[Sample], n_prompts: int, n_samples: int) -> list[list[Sample]]:
    return [samples[i * n_samples : (i + 1) * n_samples] for i in range(n_prompts)]


def last_code_block(text: str) -> str | None:
    """The last complete ```python block of `text`, or None."""
    blocks = CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def pending_code(text: str) -> str | None:
    """The code to run when `text` stops at an opened output block, else None."""
    return last_code_block(text) if text.rstrip().endswith(OUTPUT_OPEN) else None


def format_output(stdout: str, error: str | None, max_chars: int) -> str:
    """What the model reads back: stdout (and the error line, if any), cut to `max_chars`."""
    shown = (stdout + (error or "")).strip()
    return shown[:max_chars] + (" ..." if len(shown) > max_chars else "")


def _sandbox_runner(config: GenerationConfig, deadline: float | None) -> Callable:
    from utils.sandbox import run_python

    def run_code(code: str):
        # A code run never outlives the deadline: its timeout shrinks to the time left.
        timeout = config.code_timeout
        if deadline is not None:
            timeout = min(timeout, max(MIN_CODE_SECONDS, deadline - time.monotonic()))
        return run_python(code, timeout=timeout, max_output_chars=config.max_output_chars)

    return run_code


def _run_all(codes: list[str], run_code: Callable, workers: int) -> dict[str, object]:
    """Run each distinct snippet once (samples often write the same code), several at a time."""
    unique = list(dict.fromkeys(codes))
    if workers <= 1 or len(unique) == 1:
        return {c: run_code(c) for c in unique}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        return dict(zip(unique, pool.map(run_code, unique), strict=True))


def sample_with_tools(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    n_samples: int = 1,
    deadline: float | None = None,
    run_code: Callable | None = None,
) -> list[list[Sample]]:
    """Tool-integrated reasoning: generate until an output block opens, run the code, feed back, go on.

    Every unfinished sample of every prompt advances together in one batched call per round. `run_code`
    (code -> an object with `.stdout` and `.error`) defaults to `utils.sandbox.run_python`.
    """
    run_code = run_code or _sandbox_runner(config, deadline)
    flat_prompts = [p for p in prompts for _ in range(n_samples)]
    samples = [Sample(text="") for _ in flat_prompts]
    active = list(range(len(samples)))
    for round_ in range(config.max_code_rounds + 1):
        if not active:
            break
        if past(deadline):
            for i in active:
                samples[i].timed_out = True
            break
        stops = [OUTPUT_OPEN] if round_ < config.max_code_rounds else None
        outs = generate_scored(
            model,
            tokenizer,
            [flat_prompts[i] + samples[i].text for i in active],
            config,
            stop_strings=stops,
            deadline=deadline,
        )
        cut = past(deadline)
        for i, (text, n, logprob) in zip(active, outs, strict=True):
            samples[i].text += text
            samples[i].new_tokens += n
            samples[i].timed_out |= cut
            if config.scores:
                samples[i].logprob += logprob
                samples[i].scored_tokens += n
        waiting = {i: code for i in active if (code := pending_code(samples[i].text)) is not None}
        active = _feed_outputs(samples, waiting, run_code, config, deadline)
    return _regroup(samples, len(prompts), n_samples)


def _feed_outputs(
    samples: list[Sample],
    waiting: dict[int, str],
    run_code: Callable,
    config: GenerationConfig,
    deadline: float | None,
) -> list[int]:
    """Run the waiting samples' code and append each output block; returns the samples that go on."""
    if not waiting:
        return []
    if deadline is not None and deadline - time.monotonic() < MIN_CODE_SECONDS:
        for i in waiting:
            samples[i].timed_out = True
        return []
    programs = {i: _program(samples[i], code, config.persistent_state) for i, code in waiting.items()}
    results = _run_all(list(programs.values()), run_code, config.code_workers)
    for i, code in waiting.items():
        result = results[programs[i]]
        samples[i].code_runs.append({"code": code, "stdout": result.stdout, "error": result.error})
        # The model may or may not have written the newline after "```output": normalize it away.
        shown = format_output(result.stdout, result.error, config.max_output_chars)
        samples[i].text = samples[i].text.rstrip() + "\n" + shown + "\n```\n"
    return list(waiting)


# Earlier blocks are replayed with their output swallowed (only the new block's output is fed back) and their
# errors ignored: a block that failed half-way keeps, as in a kernel, what it defined before the error.
_REPLAY_HEAD = "import contextlib as _replay_ctx, io as _replay_io\nwith _replay_ctx.redirect_stdout(_replay_io.StringIO()):\n"
_REPLAY_BLOCK = "    try:\n{body}\n    except Exception:\n        pass\n"


def stateful_program(earlier_blocks: list[str], code: str) -> str:
    """One program that runs `code` after `earlier_blocks` have set up their variables, silently.

    Persistent state without a persistent process: the sandbox runs every program in a fresh interpreter,
    so the state is rebuilt by replaying. A replayed block runs again (its cost and side effects repeat).
    """
    if not earlier_blocks:
        return code
    replays = "".join(
        _REPLAY_BLOCK.format(body=textwrap.indent(block.strip("\n") or "pass", " " * 8))
        for block in earlier_blocks
    )
    return _REPLAY_HEAD + replays + code


def _program(sample: Sample, code: str, persistent_state: bool) -> str:
    """What runs for `sample`'s new block: the block alone, or replayed after its earlier blocks that compile
    (one with a syntax error would make the whole program fail to compile)."""
    if not persistent_state:
        return code
    return stateful_program([run["code"] for run in sample.code_runs if _compiles(run["code"])], code)


def _compiles(code: str) -> bool:
    try:
        compile(code, "<block>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True
