"""GRPO at 7B scale: peak GPU memory and step time of TRL's `GRPOTrainer` on DeepSeek-Math-7B's architecture.

Notebook 06's recipes for Kaggle (recipes/*/06_grpo.yaml) promise that GRPO with a LoRA adapter fits a T4 with a
4-bit base and an H100 with a bf16 one. This measures it: the model is DeepSeek-Math-7B's exact config with random
weights (no hub is reachable; speed and memory do not depend on the values), saved once and reloaded through
`BitsAndBytesConfig` for QLoRA, as notebook 06 loads the real checkpoint. Random weights almost never emit the end
token, so every completion runs to `max_completion_length`: the worst case a recipe must fit.

Two runs, each a few optimizer steps after one warm-up step:
1. `qlora`: nf4 + double quant base, `prepare_model_for_kbit_training`, LoRA r=16 on every linear layer, a group of
   8 completions per step (the 2xT4 recipe's shape), gradient checkpointing;
2. `bf16`: the bf16 base with the same adapter, two groups of 8 per step (the H100 recipe's shape).
Each records the median step seconds, the completion tokens per second, and CUDA's peak allocated/reserved memory,
with TRL's own logged metrics. Results are rewritten after each run.

    python benchmarks/gpu_grpo.py --out $OUT/gpu_grpo.json     # on the GPU machine (wheels: benchmarks/GPU.md)
    python benchmarks/gpu_grpo.py --tiny --out /tmp/grpo.json  # the code path on a CPU in about a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from benchmarks.gpu_7b import TINY, build_random_model, environment, quant_configs  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT_WORDS = 60  # about 100 tokens: a competition problem's length in the embedded tokenizer


def prompts(n: int) -> list[str]:
    """Distinct word problems of the embedded task's shape."""
    words = "a train leaves at noon and travels at a steady speed how many kilometres does it cover".split()
    return [
        f"Problem {i}: " + " ".join(words[(i + j) % len(words)] for j in range(PROMPT_WORDS))
        for i in range(n)
    ]


def length_reward(completions, **kwargs) -> list[float]:
    """Any reward that differs within a group gives a non-zero advantage, so the backward pass does real work."""
    return [float(len(str(c)) % 7) for c in completions]


class StepTimer:
    """Wall time of each optimizer step, the device synchronised at both ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                _sync()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                _sync()
                timer.seconds.append(time.perf_counter() - timer._start)

        return _Callback()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_base(path: Path, quantized: bool, device: str):
    """The saved random model: reloaded in 4 bits (QLoRA) or in bf16."""
    from transformers import AutoModelForCausalLM

    kwargs = {"quantization_config": quant_configs()["nf4_dq"]} if quantized else {}
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        device_map={"": 0 if device == "cuda" else "cpu"},
        attn_implementation="sdpa",
        **kwargs,
    )
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def grpo_run(path: Path, tokenizer, quantized: bool, shape: dict, device: str, work: Path) -> dict:
    """A few GRPO steps with TRL's trainer; step time, throughput and peak memory."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig, GRPOTrainer

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = load_base(path, quantized, device)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    loaded_gib = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
    completions_per_step = shape["groups_per_step"] * shape["num_generations"]
    args = GRPOConfig(
        output_dir=str(work / "grpo"),
        max_steps=shape["steps"] + 1,
        num_generations=shape["num_generations"],
        per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1,
        max_completion_length=shape["completion_tokens"],
        temperature=0.8,
        learning_rate=2e-6,
        beta=0.04,
        loss_type="dapo",
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        activation_checkpointing=True,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    data = Dataset.from_list([{"prompt": p} for p in prompts(completions_per_step * (shape["steps"] + 2))])
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[length_reward],
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[timer.callback()],
    )
    trainer.train()
    timed = timer.seconds[1:] or timer.seconds  # the first step pays for kernel selection and caches
    step_s = statistics.median(timed)
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    mean_length = statistics.mean(h["completions/mean_length"] for h in logs) if logs else None
    out = {
        "base": "nf4 + double quant (QLoRA)" if quantized else "bf16",
        **shape,
        "completions_per_step": completions_per_step,
        "step_seconds": [round(s, 2) for s in timer.seconds],
        "median_step_s_after_warmup": round(step_s, 2),
        "mean_completion_tokens": round(mean_length, 1) if mean_length else None,
        "completion_tokens_per_s": round(completions_per_step * mean_length / step_s, 1)
        if mean_length
        else None,
        "logged": logs[-1] if logs else None,
    }
    if device == "cuda":
        out |= {
            "allocated_after_load_gib": round(loaded_gib, 2),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        }
    del trainer, model
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny widths, few tokens: the code path on a CPU")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_grpo.json")
    ap.add_argument("--work", type=Path, default=Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"))
    ap.add_argument("--only", choices=["qlora", "bf16"], action="append", default=[])
    args = ap.parse_args(argv)
    from utils.memory import KNOWN_ARCHITECTURES
    from utils.modeling import load_tokenizer, tiny_model_path

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.work / "aimo_gpu_grpo"
    tokenizer = load_tokenizer(str(tiny_model_path()))
    config = dict(TINY if args.tiny else KNOWN_ARCHITECTURES["deepseek-math-7b"][1])
    config |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    start = time.monotonic()
    model = build_random_model(config, device)
    model.save_pretrained(work / "random_7b", safe_serialization=True)
    del model
    result = {"environment": environment(device), "save_s": round(time.monotonic() - start, 1), "runs": {}}
    steps = 1 if args.tiny else 2
    tokens = 16 if args.tiny else 512
    shapes = {
        "qlora": {"num_generations": 8, "groups_per_step": 1, "completion_tokens": tokens, "steps": steps},
        "bf16": {"num_generations": 8, "groups_per_step": 2, "completion_tokens": tokens, "steps": steps},
    }
    for name, shape in shapes.items():
        if args.only and name not in args.only:
            continue
        t = time.monotonic()
        try:
            result["runs"][name] = grpo_run(
                work / "random_7b", tokenizer, name == "qlora", shape, device, work
            )
        except Exception as exc:  # recorded; the next run still goes
            result["runs"][name] = {"error": "".join(traceback.format_exception(exc)[-4:])}
        result["runs"][name]["wall_s"] = round(time.monotonic() - t, 1)
        print(name, json.dumps(result["runs"][name]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 1 if any("error" in r for r in result["runs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
