"""The GPU check: notebooks 02 (QLoRA), 04, 05 and 06 run on CUDA, with no network, and their time and memory recorded.

Three runs of the notebooks' own cells (read from their jupytext sources and executed in this process, so that
CUDA's peak memory is measured per notebook, and no Jupyter stack is needed on the machine):
1. `embedded`: the embedded tiny model with the notebooks' defaults, 02 and 06 in QLoRA (4-bit);
2. `7b-t4-recipe`: a random-weight checkpoint with DeepSeek-Math-7B's exact config, at the 2xT4 recipe's values
   with the steps, problems and tokens cut short;
3. `7b-t4-recipe-fp16`: the same with `AIMO_NO_BF16=1`, the fp16 path a T4 takes.
Then packed against padded training steps on example lengths drawn from GSM8K's and MATH's training rows
(`benchmarks/data/real_lengths.json`, written here by `--write-lengths` from notebook 01's output).
Everything goes to `benchmarks/results/gpu_series.json` (or `--out`); an error in one notebook is recorded and
the next one runs.

    python benchmarks/gpu_check.py                   # on the GPU machine (see benchmarks/GPU.md for the wheels)
    python benchmarks/gpu_check.py --tiny            # the code path on a CPU: what the tests run
    python benchmarks/gpu_check.py --write-lengths   # here, after notebook 01 ran with the public data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
LENGTHS_FILE = REPO / "benchmarks" / "data" / "real_lengths.json"
NOTEBOOKS = ("01_data_prep", "02_lora_sft", "04_quantized_inference", "05_submission", "06_grpo")
SHORT = {  # every run cut to minutes: what is checked is the path, not the result
    "02_lora_sft": {
        "MAX_STEPS": 2,
        "SAVE_STEPS": 1,
        "EVAL_LIMIT": 2,
        "MAX_NEW_TOKENS": 16,
        "WARMUP_STEPS": 0,
    },
    "04_quantized_inference": {"EVAL_LIMIT": 2, "MAX_NEW_TOKENS": 16},
    "05_submission": {"EVAL_LIMIT": 2, "SAMPLES": 2, "WAVE_SIZE": 2, "MAX_NEW_TOKENS": 16, "TIME_BUDGET": 60},
    "06_grpo": {
        "EVAL_LIMIT": 2,
        "PROBE_PROBLEMS": 8,
        "GRPO_PROBLEMS": 8,
        "NUM_GENERATIONS": 2,
        "PROMPTS_PER_STEP": 1,
        "GRAD_ACCUM": 1,
        "MAX_STEPS": 1,
        "SAVE_STEPS": 1,
        "MAX_COMPLETION_LENGTH": 16,
        "MAX_NEW_TOKENS": 16,
        "VOTE_SAMPLES": 2,
    },
}


def code_cells(notebook: str) -> list[tuple[bool, str]]:
    """A jupytext percent-format notebook's code cells, as (is the parameters cell, source)."""
    text = (REPO / "notebooks" / f"{notebook}.py").read_text(encoding="utf-8")
    cells = []
    for chunk in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        if "[markdown]" not in header:
            cells.append(('"parameters"' in header, body))
    return cells


def run_notebook(notebook: str, params: dict, device_sync) -> dict:
    """Execute the notebook's cells with `params` after its parameters cell; wall time and peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    namespace: dict = {"__name__": "__main__"}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start, error = time.monotonic(), None
    with _cwd(REPO / "notebooks"):
        try:
            for is_parameters, source in code_cells(notebook):
                exec(compile(source, f"{notebook}.py", "exec"), namespace)  # noqa: S102 - our own notebooks
                if is_parameters:
                    namespace.update(params)
        except Exception as exc:  # recorded; the next notebook still runs
            error = "".join(traceback.format_exception(exc)[-4:])
    device_sync()
    result = {"wall_s": round(time.monotonic() - start, 1), "error": error}
    if torch.cuda.is_available():
        result["cuda_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["cuda_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    return result


@contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def random_checkpoint(folder: Path, tiny: bool) -> str:
    """DeepSeek-Math-7B's config with random weights (tiny widths with --tiny), saved with the embedded tokenizer."""
    import torch

    from benchmarks.gpu_7b import TINY, build_random_model
    from utils.memory import KNOWN_ARCHITECTURES
    from utils.modeling import load_tokenizer, tiny_model_path

    tokenizer = load_tokenizer(str(tiny_model_path()))
    config = dict(TINY if tiny else KNOWN_ARCHITECTURES["deepseek-math-7b"][1])
    config |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    model = build_random_model(config, "cuda" if torch.cuda.is_available() else "cpu")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    return str(folder)


def runs(model_7b: str, output_root: Path, tiny: bool) -> dict[str, tuple[dict, dict[str, dict]]]:
    """name -> (environment, notebook -> parameters). `tiny`: the embedded run is cut short too."""
    from utils.recipes import load_recipe

    recipe = load_recipe("deepseek-math-7b-2xt4")
    embedded = {"01_data_prep": {"DATA_DIR": ""}, "02_lora_sft": {"QUANTIZATION": "4bit"}}
    embedded |= {"04_quantized_inference": {}, "05_submission": {}, "06_grpo": {"QUANTIZATION": "4bit"}}
    if tiny:
        embedded = {nb: p | SHORT.get(nb, {}) for nb, p in embedded.items()}
    t4 = {nb: recipe.params.get(nb, {}) | SHORT[nb] for nb in SHORT}
    for nb in t4:
        t4[nb] |= {"MODEL": model_7b, "GPU": "auto"} | (
            {"TRAIN_SOURCES": "embedded", "EVAL_SOURCE": "embedded"}
        )
    t4["04_quantized_inference"] |= {"MODE": "auto", "SUBMIT_VARIANT": "nf4"}
    t4["05_submission"] |= {"COMPETITION": "aimo3"}
    out = {
        "embedded": ({}, embedded),
        "7b-t4-recipe": ({}, t4),
        "7b-t4-recipe-fp16": ({"AIMO_NO_BF16": "1"}, t4),
    }
    return {name: (env, {nb: p | {"OUTPUT_DIR": str(output_root / name)} for nb, p in nbs.items()})
            for name, (env, nbs) in out.items()}  # fmt: skip


def packing(tiny: bool) -> dict:
    """Packed against padded steps on lengths drawn from the real sets (bf16 LoRA, as gpu_7b.py's phase 2)."""
    import torch

    from benchmarks import gpu_7b
    from utils.memory import KNOWN_ARCHITECTURES

    lengths = json.loads(LENGTHS_FILE.read_text())["lengths"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = dict(gpu_7b.TINY if tiny else KNOWN_ARCHITECTURES["deepseek-math-7b"][1])
    model = gpu_7b.add_lora(gpu_7b.build_random_model(config, device))
    gpu_7b.enable_checkpointing(model)
    shapes = gpu_7b.Shapes(pack_timed_steps=1 if tiny else 3)
    rng, out = random.Random(0), {}
    for source, pool in lengths.items():
        drawn = [max(8, n // 8) if tiny else min(n, 2048) for n in rng.sample(pool, 8)]  # tiny: scaled down
        out[source] = gpu_7b.packing_phase(model, shapes, 1000, 0, device, lengths=drawn)
    return out


def write_lengths(output_dir: Path) -> Path:
    """Token lengths of notebook 01's GSM8K and MATH training rows (the embedded tokenizer: no other is here)."""
    from utils.io import atomic_write_json, read_jsonl
    from utils.modeling import load_tokenizer, tiny_model_path

    tokenizer = load_tokenizer(str(tiny_model_path()))
    rows = read_jsonl(output_dir / "01_data_prep" / "train.jsonl")
    lengths = {}
    for source in ("gsm8k", "math"):
        texts = [
            tokenizer.apply_chat_template(r["messages"], tokenize=False)
            for r in rows
            if r["source"] == source
        ]
        lengths[source] = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[:512]]
    note = "tokens of the embedded tokenizer (digit-split BPE, 1k words): longer than DeepSeek's, same shape"
    return atomic_write_json(LENGTHS_FILE, {"note": note, "lengths": lengths})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny widths on whatever device there is (the tests)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_series.json")
    ap.add_argument("--work", type=Path, default=Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"))
    ap.add_argument("--only", action="append", default=[], help="run only these runs (repeatable)")
    ap.add_argument("--write-lengths", type=Path, nargs="?", const=REPO / "outputs", default=None)
    args = ap.parse_args(argv)
    if args.write_lengths:
        print(write_lengths(args.write_lengths))
        return 0
    import torch

    from benchmarks.gpu_7b import environment
    from utils.io import atomic_write_json

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    work = args.work / "aimo_gpu_check"
    shutil.rmtree(work, ignore_errors=True)
    result = {"environment": environment("cuda" if torch.cuda.is_available() else "cpu"), "runs": {}}
    model_7b = random_checkpoint(work / "random_7b", args.tiny)
    for name, (env, notebooks) in runs(model_7b, work / "outputs", args.tiny).items():
        if args.only and name not in args.only:
            if name == "embedded":  # the other runs read its data files
                run_notebook("01_data_prep", notebooks["01_data_prep"], sync)
            continue
        os.environ.update(env)
        if name != "embedded":  # the 7B runs read the embedded run's data files
            shutil.copytree(
                work / "outputs" / "embedded" / "01_data_prep", work / "outputs" / name / "01_data_prep"
            )
        result["runs"][name] = {}
        for nb, p in notebooks.items():  # written after each notebook: a run cut short keeps what finished
            if nb in NOTEBOOKS:
                result["runs"][name][nb] = run_notebook(nb, p, sync)
                print(name, nb, json.dumps(result["runs"][name][nb]), flush=True)
                atomic_write_json(args.out, result)
        for key in env:
            os.environ.pop(key)
        print(name, json.dumps(result["runs"][name]), flush=True)
    result["packing"] = packing(args.tiny)
    atomic_write_json(args.out, result)
    errors = {
        f"{r}/{nb}": v["error"] for r, nbs in result["runs"].items() for nb, v in nbs.items() if v["error"]
    }
    for where, error in errors.items():
        print(f"ERROR {where}: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
