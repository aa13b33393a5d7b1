"""GPU memory and speed of DeepSeek-Math-7B's exact architecture, with random weights.

Speed and memory do not depend on the weights' values, and no machine here reaches a model hub, so the
model is built from its config with random bf16 weights directly on the GPU. The quantized variants go
through the real path: the random model is saved once as safetensors and reloaded with a
`BitsAndBytesConfig`, as a notebook would load the real checkpoint.

Self-contained on purpose: the GPU machine has torch, transformers, peft and (carried) bitsandbytes, but
not the project's other dependencies. Phases, most important first:

1. LoRA training step at 2048 tokens, bf16 base vs QLoRA (nf4 + double quant): peak memory, s/step.
2. Packed vs padded batches of 8 variable-length examples: real tokens per second.
3. Inference of bf16 / int8 / nf4 / fp4 / nf4+double-quant: weight memory, greedy tokens/s, peak memory.
4. Batched (one call, 8 samples) vs sequential (8 calls) sampling: answers per second.

Results are rewritten after every phase, so a run cut short still leaves what finished.
    python benchmarks/gpu_7b.py            # on the GPU machine; JSON to $OUT/gpu_7b.json
    python benchmarks/gpu_7b.py --tiny     # a tiny config on the CPU: checks the code path in seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

GIB = 1024**3
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# DeepSeek-Math-7B (base/instruct/rl share it): a Llama with full multi-head attention (no GQA).
DEEPSEEK_MATH_7B = dict(
    num_hidden_layers=30,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    vocab_size=102400,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    bos_token_id=100000,
    eos_token_id=100001,
    tie_word_embeddings=False,
)
# Tiny widths stay multiples of 128: bitsandbytes' CPU 4-bit kernel needs whole blocks.
TINY = dict(DEEPSEEK_MATH_7B, num_hidden_layers=2, hidden_size=128, num_attention_heads=4)
TINY.update(
    num_key_value_heads=4, intermediate_size=256, vocab_size=1024, bos_token_id=1022, eos_token_id=1023
)


@dataclass(frozen=True)
class Shapes:
    """Sequence sizes of every phase (the tiny ones only exercise the code)."""

    train_len: int = 2048
    warmup_steps: int = 2
    timed_steps: int = 5
    pack_n: int = 8
    pack_min: int = 128
    pack_max: int = 1024
    pack_timed_steps: int = 3
    prompt_len: int = 256
    new_tokens: int = 128
    samples: int = 8


TINY_SHAPES = Shapes(
    train_len=64, timed_steps=2, pack_min=8, pack_max=48, pack_timed_steps=2, prompt_len=16, new_tokens=8
)

# Rough H100 seconds per late phase: a phase starts only if this much time is left before the deadline.
ESTIMATE_S = {"nf4_dq": 110, "int8": 90, "nf4": 55, "fp4": 55, "generation_batched_vs_sequential": 70}


# ----------------------------------------------------------------------------- recording


class Recorder:
    """Collects results and rewrites the JSON file after every phase, so a timeout keeps what finished."""

    def __init__(self, path: Path, deadline_s: float) -> None:
        self.path, self.deadline_s, self.t0 = path, deadline_s, time.monotonic()
        self.data: dict = {"meta": {}, "phases": {}, "errors": {}, "skipped": [], "phase_wall_s": {}}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def time_left(self) -> float:
        return self.deadline_s - self.elapsed()

    def write(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")

    def run(self, name: str, fn: Callable[[], dict], estimate_s: float = 0.0) -> dict | None:
        """Run one phase; an error or a lack of time is recorded, never fatal to the later phases."""
        if self.time_left() < estimate_s:
            log(f"SKIP {name}: {self.time_left():.0f} s left, needs ~{estimate_s:.0f} s")
            self.data["skipped"].append(name)
            self.write()
            return None
        log(f"== {name} (t={self.elapsed():.0f} s)")
        t = time.monotonic()
        try:
            result = fn()
            self.data["phases"][name] = result
        except Exception as exc:  # keep going: the later phases are independent
            result = None
            self.data["errors"][name] = "".join(traceback.format_exception(exc)[-6:])
            log(f"ERROR in {name}: {exc!r}")
        self.data["phase_wall_s"][name] = round(time.monotonic() - t, 1)
        cleanup()
        self.write()
        return result


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- device helpers


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cleanup() -> None:
    """Free what the last phase left, so each phase's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def mem(prefix: str = "") -> dict:
    """Current and peak GPU memory in GiB (empty on the CPU)."""
    if not torch.cuda.is_available():
        return {}
    return {
        f"{prefix}alloc_gib": round(torch.cuda.memory_allocated() / GIB, 3),
        f"{prefix}peak_alloc_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
        f"{prefix}peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
    }


def environment(device: str) -> dict:
    """Versions and card, to say where each number came from."""
    import peft
    import transformers

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    env |= {"transformers": transformers.__version__, "peft": peft.__version__, "device": device}
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:
        env["bitsandbytes"] = f"unavailable: {exc!r}"
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_total_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        env["nvidia_smi"] = nvidia_smi()
    return env


def nvidia_smi() -> str:
    """Read-only query of the card's driver, clocks and power limit (settings are never changed)."""
    query = "name,driver_version,clocks.max.sm,power.limit,memory.total"
    try:
        cmd = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as exc:
        return f"unavailable: {exc!r}"


# ----------------------------------------------------------------------------- models


def build_random_model(cfg_kwargs: dict, device: str) -> torch.nn.Module:
    """The architecture with random bf16 weights, created directly on `device` (no CPU copy)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**cfg_kwargs)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    param = next(model.parameters())
    if param.device.type != torch.device(device).type:  # a transformers version that ignores the context
        log(f"model built on {param.device}; moving to {device}")
        model.to(device)
    model.generation_config.pad_token_id = cfg.eos_token_id
    return model


def save_dir(min_free_gib: float) -> Path:
    """RAM-backed /dev/shm when it has room (faster saves and loads), else /tmp."""
    for base in ("/dev/shm", "/tmp"):
        if os.path.isdir(base) and shutil.disk_usage(base).free / GIB > min_free_gib:
            return Path(base) / "ds_math_7b_random"
    return Path("/tmp/ds_math_7b_random")


def quant_configs() -> dict:
    """The bitsandbytes variants, in the order they are measured after the nf4 + double-quant one."""
    from transformers import BitsAndBytesConfig

    def q4(kind: str, double: bool) -> BitsAndBytesConfig:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=kind,
            bnb_4bit_use_double_quant=double,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )

    return {
        "nf4_dq": q4("nf4", True),
        "int8": BitsAndBytesConfig(load_in_8bit=True),
        "nf4": q4("nf4", False),
        "fp4": q4("fp4", False),
    }


def load_quantized(path: Path, qconfig, device: str) -> tuple[torch.nn.Module, float]:
    """Reload the saved random model through bitsandbytes; returns the model and the load seconds."""
    from transformers import AutoModelForCausalLM

    t = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=qconfig,
        device_map={"": 0 if device == "cuda" else "cpu"},
        dtype=torch.bfloat16,
        attn_implementation="sdpa",
    )
    sync()
    model.generation_config.pad_token_id = model.config.eos_token_id
    return model.eval(), time.monotonic() - t


def add_lora(model: torch.nn.Module) -> torch.nn.Module:
    """LoRA r=16, alpha=32 on every linear layer of the blocks (the series' default)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, cfg)


def enable_checkpointing(model: torch.nn.Module) -> None:
    # Non-reentrant: no input-grad hook needed, and the same setting for the bf16 and the 4-bit base.
    # The old name works on transformers 5.17 (GPU machine) and 5.24 (here), where it only warns.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


# ----------------------------------------------------------------------------- inputs


def random_tokens(n: int, vocab_limit: int, gen: torch.Generator) -> torch.Tensor:
    """Ordinary (non-special) token ids; never all zeros, which could time faster than real data."""
    return torch.randint(0, vocab_limit, (n,), generator=gen)


def padded_batch(seqs: list[torch.Tensor], pad_id: int, device: str) -> dict:
    """Right-padded to the longest example; pad positions masked out of attention and loss."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    labels = ids.masked_fill(mask == 0, -100)
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def packed_batch(seqs: list[torch.Tensor], device: str, restart_positions: bool) -> dict:
    """One row of all examples. With restarting position_ids transformers builds a block-diagonal mask
    (each example sees only itself); without, it is plain causal concatenation."""
    ids = torch.cat(seqs)[None]
    labels = ids.clone()
    starts = torch.tensor([0] + [len(s) for s in seqs[:-1]]).cumsum(0)
    labels[0, starts] = -100  # never predict an example's first token from the previous example
    batch = {"input_ids": ids, "labels": labels}
    if restart_positions:
        batch["position_ids"] = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- measurements


def time_train(model: torch.nn.Module, batch: dict, warmup: int, steps: int) -> dict:
    """AdamW on the trainable (LoRA) parameters; seconds per full step after `warmup` untimed steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    reset_peak()
    times, losses = [], []
    for i in range(warmup + steps):
        sync()
        t = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        losses.append(round(float(loss.detach()), 4))
    out = {
        "s_per_step_median": round(statistics.median(times), 4),
        "s_per_step_all": [round(x, 4) for x in times],
    }
    # Recorded, not raised: a non-finite loss from random weights would not change the timing.
    out["finite_losses"] = bool(torch.isfinite(torch.tensor(losses)).all())
    out |= {
        "losses": losses,
        "trainable_params": sum(p.numel() for p in params),
        "lora_dtype": str(params[0].dtype),
    }
    return out | mem()


def train_phase(model: torch.nn.Module, tokens: int, shapes: Shapes, vocab_limit: int, device: str) -> dict:
    """Phase 1: one sequence of `train_len` tokens per step."""
    gen = torch.Generator().manual_seed(0)
    ids = random_tokens(tokens, vocab_limit, gen)[None].to(device)
    result = time_train(model, {"input_ids": ids, "labels": ids}, shapes.warmup_steps, shapes.timed_steps)
    result["tokens_per_s"] = round(tokens / result["s_per_step_median"], 1)
    result["seq_len"], result["batch"] = tokens, 1
    return result


def packing_phase(
    model: torch.nn.Module,
    shapes: Shapes,
    vocab_limit: int,
    pad_id: int,
    device: str,
    lengths: list | None = None,
) -> dict:
    """Phase 2: the same 8 examples padded to the longest vs packed into one row; real tokens/s. `lengths`:
    the examples' lengths (default: uniform in shapes.pack_min..pack_max)."""
    gen = torch.Generator().manual_seed(1)
    if lengths is None:
        lengths = torch.randint(
            shapes.pack_min, shapes.pack_max + 1, (shapes.pack_n,), generator=gen
        ).tolist()
    seqs = [random_tokens(n, vocab_limit, gen) for n in lengths]
    real = sum(lengths)
    variants = {
        "padded": padded_batch(seqs, pad_id, device),
        "packed_restart_positions": packed_batch(seqs, device, restart_positions=True),
        "packed_concat": packed_batch(seqs, device, restart_positions=False),
    }
    out: dict = {"lengths": lengths, "real_tokens": real, "padded_tokens": len(seqs) * max(lengths)}
    for name, batch in variants.items():
        r = time_train(model, batch, warmup=1, steps=shapes.pack_timed_steps)
        r["real_tokens_per_s"] = round(real / r["s_per_step_median"], 1)
        out[name] = r
        log(f"  {name}: {r['s_per_step_median']:.3f} s/step, {r['real_tokens_per_s']:.0f} real tok/s")
    base = out["padded"]["real_tokens_per_s"]
    out["speedup_packed_restart_vs_padded"] = round(
        out["packed_restart_positions"]["real_tokens_per_s"] / base, 3
    )
    out["speedup_packed_concat_vs_padded"] = round(out["packed_concat"]["real_tokens_per_s"] / base, 3)
    out |= packing_isolation(model, seqs[:2], device)
    return out


@torch.no_grad()
def packing_isolation(model: torch.nn.Module, seqs: list[torch.Tensor], device: str) -> dict:
    """Relative difference between the 2nd example's logits packed after the 1st and run alone, with
    restarting positions (the block-diagonal mask) and, as the reference for a leak, plain concatenation."""
    model.eval()
    alone = model(input_ids=seqs[1][None].to(device)).logits[0].float()
    out = {}
    for key, restart in (("packing_isolation_rel_err", True), ("packing_leak_reference_rel_err", False)):
        packed = packed_batch(seqs, device, restart_positions=restart)
        packed.pop("labels")
        both = model(**packed).logits[0, len(seqs[0]) :].float()
        out[key] = round(float((both - alone).norm() / alone.norm()), 5)
    return out


def time_generate(
    model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, **kwargs
) -> tuple[float, int]:
    """Seconds for one generate call that must produce exactly `new_tokens` tokens per sequence."""
    attn = torch.ones_like(prompt)
    sync()
    t = time.perf_counter()
    out = model.generate(
        input_ids=prompt,
        attention_mask=attn,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        use_cache=True,
        **kwargs,
    )
    sync()
    seconds = time.perf_counter() - t
    made = out.shape[-1] - prompt.shape[-1]
    if made != new_tokens:
        raise RuntimeError(f"generate made {made} tokens, expected {new_tokens}")
    return seconds, out.shape[0]


def prompt_ids(shapes: Shapes, vocab_limit: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return random_tokens(shapes.prompt_len, vocab_limit, gen)[None].to(device)


def inference_phase(model: torch.nn.Module, shapes: Shapes, vocab_limit: int, device: str) -> dict:
    """Phase 3: resident weights, then greedy batch-1 generation speed and its peak memory."""
    out = {"footprint_gib": round(model.get_memory_footprint() / GIB, 3)} | mem("weights_")
    prompt = prompt_ids(shapes, vocab_limit, device)
    # Warm-up at the full length: every KV length is a new shape, and a first call per shape can cost
    # far more (the 2026-11-26 run warmed up with 8 tokens and timed bf16 at 17.6 tok/s, later 45.6).
    time_generate(model, prompt, shapes.new_tokens, do_sample=False)
    reset_peak()
    seconds, _ = time_generate(model, prompt, shapes.new_tokens, do_sample=False)
    out |= {"gen_seconds": round(seconds, 3), "tokens_per_s": round(shapes.new_tokens / seconds, 2)}
    out |= {"prompt_len": shapes.prompt_len, "new_tokens": shapes.new_tokens} | mem("gen_")
    log(f"  {out['footprint_gib']:.2f} GiB weights, {out['tokens_per_s']:.1f} tok/s")
    return out


def sampling_phase(model: torch.nn.Module, shapes: Shapes, vocab_limit: int, device: str) -> dict:
    """Phase 4: `samples` answers to one prompt from one batched call vs as many sequential calls."""
    prompt = prompt_ids(shapes, vocab_limit, device)
    kw = {"do_sample": True, "temperature": 0.7, "top_p": 0.95}
    # Full-length warm-ups of both shapes (batch `samples` and batch 1), as in inference_phase.
    time_generate(model, prompt, shapes.new_tokens, num_return_sequences=shapes.samples, **kw)
    time_generate(model, prompt, shapes.new_tokens, **kw)
    torch.manual_seed(0)
    reset_peak()
    batched_s, n = time_generate(model, prompt, shapes.new_tokens, num_return_sequences=shapes.samples, **kw)
    if n != shapes.samples:
        raise RuntimeError(f"batched generate returned {n} sequences, expected {shapes.samples}")
    out = {"batched_seconds": round(batched_s, 3)} | mem("batched_")
    seq_calls = [time_generate(model, prompt, shapes.new_tokens, **kw)[0] for _ in range(shapes.samples)]
    seq_s = sum(seq_calls)
    out["sequential_call_seconds"] = [round(x, 3) for x in seq_calls]
    out |= {"sequential_seconds": round(seq_s, 3), "samples": shapes.samples, "new_tokens": shapes.new_tokens}
    out["batched_answers_per_s"] = round(shapes.samples / batched_s, 3)
    out["sequential_answers_per_s"] = round(shapes.samples / seq_s, 3)
    out["speedup_batched_vs_sequential"] = round(seq_s / batched_s, 2)
    log(f"  batched {batched_s:.2f} s vs sequential {seq_s:.2f} s for {shapes.samples} answers")
    return out


# ----------------------------------------------------------------------------- orchestration


def qlora_train(model: torch.nn.Module, shapes: Shapes, vocab_limit: int, device: str) -> dict:
    """Phase 1b on an already loaded nf4 + double-quant model: the standard QLoRA preparation."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    model.config.use_cache = False
    peft_model = add_lora(model)
    try:
        return train_phase(peft_model, shapes.train_len, shapes, vocab_limit, device)
    finally:
        del peft_model


def ratios(phases: dict) -> dict:
    """QLoRA vs bf16 LoRA, as QLoRA / bf16, for every figure both runs have (no memory on the CPU)."""
    a, b = phases.get("train_lora_bf16") or {}, phases.get("train_qlora_nf4_dq") or {}
    keys = ("peak_alloc_gib", "peak_reserved_gib", "s_per_step_median", "tokens_per_s")
    return {f"qlora_over_bf16_{k}": round(b[k] / a[k], 3) for k in keys if a.get(k) and b.get(k)}


def bf16_phases(
    rec: Recorder, model: torch.nn.Module, shapes: Shapes, vocab_limit: int, device: str, pad: int
):
    """Phases 1a, 2 and 3 (bf16) on the model built in place; returns the bare model, in eval mode."""
    enable_checkpointing(model)
    peft_model = add_lora(model)
    train = partial(train_phase, peft_model, shapes.train_len, shapes, vocab_limit, device)
    rec.run("train_lora_bf16", train)
    rec.run("packed_vs_padded", partial(packing_phase, peft_model, shapes, vocab_limit, pad, device))
    model = peft_model.unload()
    del peft_model
    model.gradient_checkpointing_disable()
    model.config.use_cache = True
    cleanup()
    rec.run("infer_bf16", lambda: inference_phase(model.eval(), shapes, vocab_limit, device))
    return model


def quantized_phases(rec: Recorder, path: Path, shapes: Shapes, vocab_limit: int, device: str) -> None:
    """Phase 1b on nf4 + double quant (after its inference figures), then the other quantized loads."""
    for name, qconfig in quant_configs().items():
        estimate = ESTIMATE_S[name] if device == "cuda" else 0
        holder: dict = {}

        def infer(name=name, qconfig=qconfig, holder=holder) -> dict:
            holder["model"], load_s = load_quantized(path, qconfig, device)
            return {"load_s": round(load_s, 1)} | inference_phase(
                holder["model"], shapes, vocab_limit, device
            )

        rec.run(f"infer_{name}", infer, estimate)
        if name == "nf4_dq" and "model" in holder:
            rec.run(
                "train_qlora_nf4_dq",
                lambda h=holder: qlora_train(h.pop("model"), shapes, vocab_limit, device),
            )
            rec.data["phases"]["ratios_qlora_vs_bf16"] = ratios(rec.data["phases"])
            log(f"  ratios: {rec.data['phases']['ratios_qlora_vs_bf16']}")
        holder.clear()
        cleanup()
        rec.write()


def save_checkpoint(model: torch.nn.Module, path: Path) -> dict:
    """The random bf16 model as safetensors, for the quantized loads to read like a real checkpoint."""
    t = time.monotonic()
    model.save_pretrained(path, max_shard_size="5GB")
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return {"save_s": round(time.monotonic() - t, 1), "dir": str(path), "size_gib": round(size / GIB, 2)}


def main(argv: list[str] | None = None) -> int:
    """Run every phase that fits before the deadline; returns 0 when no phase raised."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config on the CPU: checks the code path")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu_7b.json")
    ap.add_argument("--deadline-s", type=float, default=430.0, help="skip late phases past this many seconds")
    args = ap.parse_args(argv)

    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    # bitsandbytes logs one line per int8 matmul (bf16 inputs cast to fp16) and a CPU-kernel notice.
    for name in ("bitsandbytes.autograd._functions", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    cfg, shapes = (TINY, TINY_SHAPES) if args.tiny else (DEEPSEEK_MATH_7B, Shapes())
    vocab_limit, pad = min(cfg["bos_token_id"], cfg["vocab_size"]), cfg["eos_token_id"]
    rec = Recorder(args.out, args.deadline_s)
    rec.data["meta"] = {
        "env": environment(device),
        "config": cfg,
        "shapes": asdict(shapes),
        "tiny": args.tiny,
    }
    rec.data["meta"]["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log(json.dumps(rec.data["meta"]["env"]))

    t = time.monotonic()
    model = build_random_model(cfg, device)
    sync()
    rec.data["meta"]["build_s"] = round(time.monotonic() - t, 1)
    rec.data["meta"]["params"] = sum(p.numel() for p in model.parameters())
    rec.write()
    log(f"built {rec.data['meta']['params'] / 1e9:.2f} B params in {rec.data['meta']['build_s']} s")

    model = bf16_phases(rec, model, shapes, vocab_limit, device, pad)
    model.to("cpu")  # kept in host memory for phase 4, out of the quantized phases' GPU peaks
    cleanup()
    path = save_dir(min_free_gib=40 if device == "cuda" else 0.1)
    if rec.run("save_random_checkpoint", partial(save_checkpoint, model, path)):
        quantized_phases(rec, path, shapes, vocab_limit, device)

    def sampling() -> dict:
        model.to(device)
        return sampling_phase(model.eval(), shapes, vocab_limit, device)

    rec.run(
        "generation_batched_vs_sequential",
        sampling,
        ESTIMATE_S["generation_batched_vs_sequential"] * (device == "cuda"),
    )
    shutil.rmtree(path, ignore_errors=True)
    rec.write()
    log(summary(rec.data))
    return 1 if rec.data["errors"] else 0


def summary(data: dict) -> str:
    """A short table for the end of the output (the reply shows only its tail)."""
    p = data["phases"]
    lines = [f"--- summary ({data['meta']['env'].get('gpu', 'cpu')}, {data['meta']['elapsed_s']} s)"]
    for k in ("train_lora_bf16", "train_qlora_nf4_dq"):
        if k in p:
            r = p[k]
            lines.append(
                f"{k}: {r['s_per_step_median']} s/step {r['tokens_per_s']} tok/s peak {r.get('peak_alloc_gib')} GiB"
            )
    if p.get("ratios_qlora_vs_bf16"):
        lines.append(f"ratios: {p['ratios_qlora_vs_bf16']}")
    if "packed_vs_padded" in p:
        r = p["packed_vs_padded"]
        lines.append(
            f"packing: restart x{r['speedup_packed_restart_vs_padded']} concat x{r['speedup_packed_concat_vs_padded']}"
            f" isolation_err {r['packing_isolation_rel_err']}"
        )
    for k in ("bf16", "nf4_dq", "int8", "nf4", "fp4"):
        if f"infer_{k}" in p:
            r = p[f"infer_{k}"]
            lines.append(
                f"infer {k}: {r['footprint_gib']} GiB {r['tokens_per_s']} tok/s gen peak {r.get('gen_peak_alloc_gib')}"
            )
    if "generation_batched_vs_sequential" in p:
        r = p["generation_batched_vs_sequential"]
        lines.append(
            f"sampling: batched x{r['speedup_batched_vs_sequential']} ({r['batched_answers_per_s']} answers/s)"
        )
    lines.append(f"errors: {list(data['errors'])} skipped: {data['skipped']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
