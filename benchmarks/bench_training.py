"""Training: LoRA fine-tuning on packed rows (the project's GPU recipe) against plain padded batches.

Every side is `utils.training.train_sft` with one `SFTConfig` (batch 16, max_length 256, loss on answers
only) and one `LoraConfig` (r=16, alpha=32, dropout 0.05, all-linear), on the same model and the same embedded
examples; only the packing differs: `padded` (packing off), `packed-<strategy>` for TRL's packing strategies.
The project's side packs with notebook 02's strategy, TRL's default `"bfd"` (notebook 02 packs on a GPU
only). Each run trains in a fresh process, so that its peak memory is its own (a second run in the same
process would reuse the first one's freed heap). Throughput counts real (non-padding) tokens: the first
`warmup` steps of a run are dropped, the following steps are cut into `repeats` blocks of `steps_per_repeat`,
and the median block's tokens per second is reported. The sides run `rounds` times, in reversed order every
other round: a load that drifts while other processes share the machine then weighs on all sides alike.

    python -m benchmarks.bench_training --side packed-bfd   # one run of one side, its figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from benchmarks import REPO
from benchmarks.common import bar, make_result, median, row, rss_mb, timed_repeats

BASELINE = "padded"
STRATEGIES = ("bfd", "bfd_split", "wrapped")  # TRL's packing strategies
BATCH_SIZE, MAX_LENGTH = 16, 256
LORA = "r=16, alpha=32, dropout 0.05, all-linear"


@dataclass(frozen=True)
class TrainingBench:
    """Sizes of one training benchmark (the defaults take about two minutes on 2 cores)."""

    model: str = "tiny"
    problems: int = 800  # one or two examples each: enough data for every packed step
    warmup: int = 1
    steps_per_repeat: int = 3
    repeats: int = 2  # timed blocks per run
    rounds: int = 2  # runs per side
    strategies: tuple = ("wrapped",)  # packing strategies measured besides the project's
    seed: int = 0

    @property
    def max_steps(self) -> int:
        return self.warmup + self.steps_per_repeat * self.repeats


def project_strategy() -> str:
    """The packing strategy notebook 02's `SFTConfig` names: TRL's default, best-fit decreasing."""
    from trl import SFTConfig

    return SFTConfig.__dataclass_fields__["packing_strategy"].default


def side_names(bench: TrainingBench) -> list[str]:
    """The baseline, the project's packed side, then the other strategies asked for."""
    strategies = dict.fromkeys((project_strategy(), *bench.strategies))
    return [BASELINE, *(f"packed-{s}" for s in strategies)]


def side_packing(side: str) -> tuple[bool, str | None]:
    """`padded` -> (False, None); `packed-<strategy>` -> (True, strategy)."""
    if side == BASELINE:
        return False, None
    strategy = side.removeprefix("packed-")
    if not side.startswith("packed-") or strategy not in STRATEGIES:
        raise ValueError(f"side must be {BASELINE!r} or packed-<{'|'.join(STRATEGIES)}>, got {side!r}")
    return True, strategy


def embedded_rows(tokenizer, n_problems: int, seed: int = 0) -> list[dict]:
    """The embedded training examples as prompt/completion pairs, as notebook 01 and 02 make them."""
    from utils.prep import modes_for, to_example
    from utils.prompts import render_example
    from utils.synthetic import generate_problems

    problems = generate_problems(n_problems, seed=seed, split="train")
    return [render_example(tokenizer, to_example(p, mode)) for p in problems for mode in modes_for(p)]


def padding_estimate(tokenizer, rows: list[dict], batch_size: int, max_length: int, seed: int = 0) -> dict:
    """The expected share of padding in batches of `batch_size` random examples padded to the longest, and
    the most that removing it can gain, 1 / (1 - share): packing's ceiling from padding alone."""
    texts = [r["prompt"] + r["completion"] for r in rows]
    lengths = [min(len(ids), max_length) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rng = random.Random(seed)
    batches = [rng.sample(lengths, min(batch_size, len(lengths))) for _ in range(500)]
    real, padded = sum(sum(b) for b in batches), sum(max(b) * len(b) for b in batches)
    share = 1 - real / padded
    return {
        "example_tokens_min_mean_max": [min(lengths), sum(lengths) / len(lengths), max(lengths)],
        "padding_share": share,
        "padding_ceiling": 1 / (1 - share),
    }


REAL_SOURCES = ("gsm8k", "math")  # notebook 01's real training rows, for the padding they would carry


def real_data_padding(
    tokenizer, batch_size: int, max_length: int, seed: int = 0, outputs: Path = REPO / "outputs"
) -> dict:
    """`padding_estimate` on notebook 01's real training rows (GSM8K, MATH), where it has written them:
    what packing could gain on real data, against the embedded examples the timed runs use. A source notebook
    01 has not prepared is reported as missing, not guessed."""
    from utils.training import training_rows

    found = {}
    for source in REAL_SOURCES:
        try:
            rows, _ = training_rows(outputs, source, tokenizer)
        except (FileNotFoundError, ValueError) as exc:
            found[source] = {"missing": str(exc)}
            continue
        found[source] = padding_estimate(tokenizer, rows, batch_size, max_length, seed)
    return found


def step_clock():
    """A trainer callback that stamps the time and the real tokens seen at the end of every step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [(time.perf_counter(), state.num_input_tokens_seen)]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepClock()


def block_figures(marks: list[tuple[float, int]], bench: TrainingBench) -> list[dict]:
    """Seconds, real tokens and tokens/s of each timed block of steps (warm-up steps dropped)."""
    blocks = []
    for i in range(bench.repeats):
        start = bench.warmup + i * bench.steps_per_repeat
        end = start + bench.steps_per_repeat
        if end >= len(marks):
            raise ValueError(
                f"training stopped after {len(marks) - 1} steps; the benchmark needs {bench.max_steps}"
            )
        seconds, tokens = marks[end][0] - marks[start][0], marks[end][1] - marks[start][1]
        blocks.append({"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds})
    return blocks


def _step_token_range(marks: list[tuple[float, int]], warmup: int) -> list[int]:
    steps = [marks[i + 1][1] - marks[i][1] for i in range(warmup, len(marks) - 1)]
    return [min(steps), max(steps)]


def train_side(side: str, bench: TrainingBench) -> dict:
    """Train one side in this process; returns its throughput, memory and batch shape figures."""
    from peft import LoraConfig
    from trl import SFTConfig

    from utils.modeling import load_model, quiet_libraries
    from utils.training import hardware_precision, train_sft

    packing, strategy = side_packing(side)
    quiet_libraries()
    model, tokenizer = load_model(bench.model)
    rows = embedded_rows(tokenizer, bench.problems, bench.seed)
    clock = step_clock()
    before = rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"bench-train-{side}-") as out:
        config = SFTConfig(
            output_dir=out,
            max_steps=bench.max_steps,
            per_device_train_batch_size=BATCH_SIZE,
            learning_rate=2e-3,
            warmup_steps=20,
            lr_scheduler_type="cosine",
            max_length=MAX_LENGTH,
            packing=packing,
            packing_strategy=strategy or project_strategy(),
            completion_only_loss=True,
            activation_checkpointing=sum(p.numel() for p in model.parameters()) > 1e9,
            save_steps=bench.max_steps + 1,  # no checkpoint inside the timed steps: saving is not throughput
            seed=bench.seed,
            data_seed=bench.seed,
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            **hardware_precision(model),
        )
        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        result = train_sft(model, tokenizer, rows, None, config, peft_config=lora, callbacks=(clock,))
    blocks = block_figures(clock.marks, bench)
    timed_steps = bench.steps_per_repeat * bench.repeats
    return {
        "side": side,
        "packing": packing,
        "packing_strategy": strategy,
        "examples": len(rows),
        "batch_size": config.per_device_train_batch_size,
        "max_length": config.max_length,
        "tokens_per_second": median([b["tokens_per_second"] for b in blocks]),
        "seconds_per_step": median([b["seconds"] for b in blocks]) / bench.steps_per_repeat,
        "real_tokens_per_step": sum(b["tokens"] for b in blocks) / timed_steps,
        "timed_steps_per_block": bench.steps_per_repeat,
        "padding": padding_estimate(
            tokenizer, rows, config.per_device_train_batch_size, config.max_length, bench.seed
        ),
        # A short last batch (the data ran out) would show here as a low minimum.
        "real_tokens_per_step_min_max": _step_token_range(clock.marks, bench.warmup),
        "blocks": blocks,
        "steps": result.steps,
        "final_train_loss": result.final_train_loss,
        "whole_run_tokens_per_second": result.tokens_per_second,
        "whole_run_seconds": result.seconds,
        "peak_memory_mb": result.peak_memory_mb,
        "memory_kind": result.memory_kind,
        "memory_before_training_mb": before,
        "training_memory_mb": result.peak_memory_mb - before,
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
    }


def train_side_isolated(side: str, bench: TrainingBench, timeout_s: float = 900) -> dict:
    """`train_side` in a fresh Python process (its own heap), figures read back from a JSON file."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        out = os.path.join(tmp, "side.json")
        args = [sys.executable, "-m", "benchmarks.bench_training", "--side", side, "--out", out]
        args += ["--config", json.dumps(asdict(bench))]
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(
                f"training side {side!r} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        with open(out) as f:
            return json.load(f)


def combine(runs: list[dict]) -> dict:
    """One side's figures over all its runs: medians of every timed block, and of the runs' peak memory."""
    blocks = [b for r in runs for b in r["blocks"]]
    steps = runs[0]["timed_steps_per_block"]
    keys = ("side", "packing", "packing_strategy", "examples", "batch_size", "max_length", "padding")
    first = {k: runs[0][k] for k in (*keys, "memory_kind", "trainable_parameters", "total_parameters")}
    return first | {
        "tokens_per_second": median([b["tokens_per_second"] for b in blocks]),
        "seconds_per_step": median([b["seconds"] for b in blocks]) / steps,
        "real_tokens_per_step": sum(b["tokens"] for b in blocks) / (steps * len(blocks)),
        "peak_memory_mb": median([r["peak_memory_mb"] for r in runs]),
        "training_memory_mb": median([r["training_memory_mb"] for r in runs]),
        "runs": runs,
    }


def bench_training(bench: TrainingBench | None = None, isolate: bool = True) -> dict:
    """Padded baseline and packed sides, alternated; returns the result dict (see common)."""
    bench = bench or TrainingBench()
    run = train_side_isolated if isolate else train_side
    if bench.model == "tiny":  # build the embedded model once, before any clock starts
        from utils.modeling import tiny_model_path

        tiny_model_path(progress=False)
    names = side_names(bench)
    runs = timed_repeats({side: partial(run, side, bench) for side in names}, bench.rounds)
    real_padding = _real_padding(bench)
    sides = {side: combine(runs[side]) for side in names}
    base, proj = sides[BASELINE], sides[names[1]]
    rows = [
        row("real tokens per second", proj["tokens_per_second"], base["tokens_per_second"], "tokens/s"),
        row("seconds per step", proj["seconds_per_step"], base["seconds_per_step"], "s"),
        row("real tokens per step", proj["real_tokens_per_step"], base["real_tokens_per_step"]),
        row("peak memory", proj["peak_memory_mb"], base["peak_memory_mb"], f"MiB, {proj['memory_kind']}"),
        row("memory added by training", proj["training_memory_mb"], base["training_memory_mb"], "MiB"),
    ]
    others = {
        side: row(
            f"real tokens per second, {side}",
            sides[side]["tokens_per_second"],
            base["tokens_per_second"],
            "tokens/s",
        )
        for side in names[2:]
    }
    rows += others.values()
    settings = asdict(bench) | {
        "sides": names,
        "project_side": names[1],
        "batch_size": proj["batch_size"],
        "max_length": proj["max_length"],
        "isolated_processes": isolate,
        "lora": LORA,
    }
    return make_result(
        "training",
        f"LoRA SFT, {names[1]} (the project's packing) vs padded batches, real tokens/s",
        settings,
        rows,
        bar(f"training throughput, {names[1]} (the project's) / padded", rows[0]["ratio"], 1.5),
        sides=sides,
        real_data_padding=real_padding,
        other_bars=[
            bar(f"training throughput, {side} / padded", r["ratio"], 1.5) for side, r in others.items()
        ],
    )


def _real_padding(bench: TrainingBench) -> dict:
    from utils.modeling import load_tokenizer, resolve_model

    return real_data_padding(load_tokenizer(resolve_model(bench.model)), BATCH_SIZE, 4096, bench.seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train one side of the training benchmark; writes its figures as JSON."
    )
    ap.add_argument("--side", required=True, help=f"{BASELINE} or packed-<{'|'.join(STRATEGIES)}>")
    ap.add_argument("--config", default="{}", help="TrainingBench fields as JSON")
    ap.add_argument("--out", help="JSON file to write (default: stdout)")
    args = ap.parse_args(argv)
    text = json.dumps(train_side(args.side, TrainingBench(**json.loads(args.config))))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
