"""Smoke tests of `make bench`: every benchmark runs at a tiny size and returns the fields the README reads.

No timing is asserted (the machine is shared); the tests check that both sides ran on the same work, that
the figures are the ones the result layout promises, and that the README is the one the JSON generates.
A random tiny Llama stands in for the embedded model: speed code does not depend on the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the benchmarks package lives at the repository root

import benchmarks.bench_training as bench_training_module  # noqa: E402
from benchmarks import RESULTS_DIR, common, report, run  # noqa: E402
from benchmarks.bench_generation import GenerationBench, bench_generation  # noqa: E402
from benchmarks.bench_sandbox import SandboxBench, bench_sandbox  # noqa: E402
from benchmarks.bench_series import SeriesBench, bench_series  # noqa: E402
from benchmarks.bench_training import TrainingBench, bench_training  # noqa: E402

ROW_FIELDS = {"metric", "unit", "project", "baseline", "ratio"}
MACHINE_FIELDS = {"cpu_count", "torch", "device", "load_average_1min", "date_utc"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: OpenMP threads that spin-wait crawl when other processes share the cores (tests time nothing)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> str:
    """A one-layer Llama with the project's tokenizer and random weights, saved like the embedded model."""
    from transformers import LlamaForCausalLM

    from utils.modeling import TinyModelConfig, tiny_llama_config, train_tokenizer
    from utils.synthetic import arithmetic_facts, problem_statements

    # Problem texts in the corpus give examples about as long in tokens as the embedded model's.
    corpus = arithmetic_facts(copies=1, n_big_products=50) + problem_statements(n=300)
    tokenizer = train_tokenizer(corpus, vocab_size=640)
    config = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = LlamaForCausalLM(tiny_llama_config(config, tokenizer))
    path = tmp_path_factory.mktemp("random-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def check_result(result: dict, name: str, n_rows: int) -> None:
    assert result["benchmark"] == name
    assert MACHINE_FIELDS <= result["machine"].keys()
    assert len(result["rows"]) == n_rows and all(r.keys() == ROW_FIELDS for r in result["rows"])
    json.dumps(result)  # what save() writes must serialize


TINY_TRAINING = dict(problems=200, warmup=1, steps_per_repeat=1, repeats=2, rounds=1, strategies=())


@pytest.mark.slow
def test_training_bench_compares_packed_with_padded_on_real_tokens(random_model):
    result = bench_training(TrainingBench(model=random_model, **TINY_TRAINING), isolate=False)
    check_result(result, "training", 5)
    strategy = bench_training_module.project_strategy()  # the project's
    assert result["settings"]["sides"] == ["padded", f"packed-{strategy}"]
    packed, padded = result["raw"]["sides"][f"packed-{strategy}"], result["raw"]["sides"]["padded"]
    assert (packed["packing"], padded["packing"], packed["packing_strategy"]) == (True, False, strategy)
    from utils.prep import modes_for
    from utils.synthetic import generate_problems

    examples = sum(len(modes_for(p)) for p in generate_problems(200, seed=0, split="train"))
    assert packed["examples"] == padded["examples"] == examples  # the same data on both sides
    for side in (packed, padded):
        assert [(r["steps"], len(r["blocks"])) for r in side["runs"]] == [(3, 2)]
        assert side["tokens_per_second"] > 0 and side["peak_memory_mb"] > 0
    # Packed rows are filled to max_length; padded rows hold one example: more real tokens per step.
    assert packed["real_tokens_per_step"] > 1.3 * padded["real_tokens_per_step"]
    assert result["rows"][0]["ratio"] == pytest.approx(
        packed["tokens_per_second"] / padded["tokens_per_second"], rel=1e-3
    )
    assert result["bar"]["target"] == 1.5 and result["bar"]["holds"] in (True, False)
    assert 0 < padded["padding"]["padding_share"] < 1 and padded["padding"]["padding_ceiling"] > 1


def test_padding_estimate_of_padded_batches():
    from benchmarks.bench_training import padding_estimate

    def chars(texts, add_special_tokens=False):  # one token per character
        return {"input_ids": [list(t) for t in texts]}

    same = [{"prompt": "ab", "completion": "cd"}] * 8
    assert padding_estimate(chars, same, 4, 256)["padding_share"] == 0
    # Lengths 1 and 3 in every batch of two (sampled without replacement): 4 real tokens of 6.
    mixed = [{"prompt": "a", "completion": ""}, {"prompt": "abc", "completion": ""}]
    estimate = padding_estimate(chars, mixed, 2, 256)
    assert estimate["padding_share"] == pytest.approx(1 / 3)
    assert estimate["padding_ceiling"] == pytest.approx(1.5)
    cut = padding_estimate(chars, mixed, 2, 2)  # lengths cut at max_length
    assert cut["example_tokens_min_mean_max"] == [1, 1.5, 2]


def test_training_sides_are_padded_or_a_trl_packing_strategy():
    from benchmarks.bench_training import side_names, side_packing

    assert side_packing("padded") == (False, None) and side_packing("packed-wrapped") == (True, "wrapped")
    with pytest.raises(ValueError, match="packed-<bfd"):
        side_packing("packed-zigzag")
    project = f"packed-{bench_training_module.project_strategy()}"
    names = side_names(TrainingBench(strategies=("wrapped", "bfd")))
    assert names[:2] == ["padded", project] and sorted(names[1:]) == ["packed-bfd", "packed-wrapped"]


@pytest.mark.slow
def test_the_training_worker_writes_one_sides_figures_as_json(random_model, tmp_path):
    # What each isolated process runs (`train_side_isolated` starts it with these arguments).
    config = json.dumps(asdict(TrainingBench(model=random_model, **TINY_TRAINING)))
    out = tmp_path / "side.json"
    assert (
        bench_training_module.main(["--side", "packed-wrapped", "--out", str(out), "--config", config]) == 0
    )
    side = json.loads(out.read_text())
    assert (
        side["side"] == "packed-wrapped"
        and side["packing_strategy"] == "wrapped"
        and side["steps"] == 3
        and len(side["blocks"]) == 2
    )
    before = side["memory_before_training_mb"]
    assert before > 0 and side["peak_memory_mb"] >= before


def test_generation_bench_draws_the_same_number_of_answers_both_ways(random_model):
    bench = GenerationBench(model=random_model, problems=2, samples=4, repeats=2, max_new_tokens=4)
    result = bench_generation(bench)
    check_result(result, "generation", 4)
    for side in ("batched", "sequential"):
        repeats = result["raw"][side]["repeats"]
        assert len(repeats) == 2 and all(r["answers"] == 2 * 4 for r in repeats)
        assert all(0 <= r["new_tokens"] <= 2 * 4 * 4 for r in repeats)
    assert result["settings"]["model_used"] and result["bar"]["target"] == 3.0


def test_generation_auto_model_is_notebook_02s_adapter_or_the_embedded_one():
    from benchmarks.bench_generation import resolve_model

    adapter = REPO / "outputs" / "02_lora_sft" / "adapter" / "final"
    expected = str(adapter) if (adapter / "adapter_config.json").is_file() else "tiny"
    assert resolve_model("auto") == expected and resolve_model("some/folder") == "some/folder"


def test_sandbox_bench_times_both_ways_to_run_a_snippet():
    result = bench_sandbox(SandboxBench(calls=2, repeats=2, warmup=1))
    check_result(result, "sandbox", 2)
    rate, ms = result["rows"]
    assert rate["project"] > 0 and rate["baseline"] > 0
    assert ms["project"] == pytest.approx(1000 / rate["project"], rel=1e-3)
    assert result["raw"]["overhead_ms_per_execution"] == pytest.approx(
        ms["project"] - ms["baseline"], abs=0.01
    )
    assert [len(r) for r in result["raw"]["repeats"].values()] == [2, 2]


NOTEBOOK = """\
# %% tags=["parameters"]
OUTPUT_DIR = "outputs"

# %%
from pathlib import Path
{body}
"""


def test_series_runs_notebooks_in_order_and_stops_at_the_first_failure(tmp_path):
    bodies = {
        "01_write": "Path(OUTPUT_DIR).mkdir(parents=True, exist_ok=True); (Path(OUTPUT_DIR) / 'a.txt').write_text('1')",
        # Passes its assert only if 01 ran first with the same OUTPUT_DIR; then fails on purpose.
        "02_read_then_fail": "assert (Path(OUTPUT_DIR) / 'a.txt').read_text() == '1'\nraise RuntimeError('deliberate')",
        "03_never": "print('not reached')",
    }
    for name, body in bodies.items():
        (tmp_path / f"{name}.py").write_text(NOTEBOOK.format(body=textwrap.dedent(body)))
    result = bench_series(SeriesBench(notebooks_dir=str(tmp_path), timeout_s=120))
    runs = result["raw"]["notebooks"]
    assert [r["notebook"] for r in runs] == ["01_write", "02_read_then_fail"]
    assert runs[0]["status"] == "ok" and runs[1]["status"].startswith("failed")
    assert "RuntimeError: deliberate" in runs[1]["error_tail"]
    assert not result["raw"]["complete"] and result["bar"]["holds"] is None
    assert result["rows"][-1]["project"] == pytest.approx(result["raw"]["total_seconds"], rel=1e-3)
    assert not (REPO / "notebooks" / "a.txt").exists()  # OUTPUT_DIR went to a temporary folder


def test_timed_repeats_alternate_which_side_goes_first():
    order = []
    sides = {name: (lambda name=name: order.append(name) or {"n": 1}) for name in ("a", "b")}
    runs = common.timed_repeats(sides, repeats=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert all(len(rs) == 3 and all(r["seconds"] >= 0 and r["n"] == 1 for r in rs) for rs in runs.values())


def test_bars_ratios_and_the_selection_of_benchmarks():
    assert common.bar("x", 1.6, 1.5)["holds"] is True and common.bar("x", 1.4, 1.5)["holds"] is False
    assert common.bar("minutes", 16, 15, higher_is_better=False)["holds"] is False
    assert common.bar("x", None, 1.5)["holds"] is None
    assert common.row("m", 3.0, 0.0)["ratio"] is None and common.row("m", 3.0, 2.0)["ratio"] == 1.5
    assert run.selected(None, "series") == ["training", "generation", "sandbox", "engines"]
    assert run.selected("series,training", None) == ["training", "series"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run.selected("trainig", None)


def test_readme_is_generated_from_the_results_and_names_the_gpu(tmp_path):
    sandbox = bench_sandbox(SandboxBench(calls=1, repeats=1, warmup=1))
    common.save(sandbox, tmp_path)
    (tmp_path / "gpu_7b.json").write_text((RESULTS_DIR / "gpu_7b.json").read_text())
    text = report.render_readme(tmp_path)
    assert common.fmt(sandbox["rows"][0]["project"]) in text
    assert "NVIDIA H100 80GB HBM3" in text and "**2.93x**" in text  # the H100 sampling speed-up
    assert "Not run yet: `python -m benchmarks.run --only training`" in text
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        report.load_results(tmp_path)


def test_the_committed_readme_is_the_one_the_results_generate():
    readme = REPO / "benchmarks" / "README.md"
    assert readme.read_text() == report.render_readme(RESULTS_DIR), "run `python -m benchmarks.report`"


def test_real_data_padding_reads_notebook_01s_rows_and_names_what_is_missing(tiny_tokenizer, tmp_path):
    from benchmarks.bench_training import real_data_padding

    def row(i: int, source: str, words: int) -> dict:
        messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "word " * words}]
        return {"id": f"{source}-{i}", "source": source, "mode": "reasoning", "messages": messages}

    folder = tmp_path / "01_data_prep"
    folder.mkdir()
    rows = [row(i, "gsm8k", 5 if i % 2 else 200) for i in range(40)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "validation.jsonl").write_text("")
    found = real_data_padding(tiny_tokenizer, 16, 4096, outputs=tmp_path)
    assert found["gsm8k"]["padding_share"] > 0.3  # short and long rows in one batch: mostly padding
    assert "no training examples" in found["math"]["missing"]
    lines = report._real_padding_lines(found)
    assert "gsm8k" in lines[-1] and "math" not in lines[-1]
    assert real_data_padding(tiny_tokenizer, 16, 4096, outputs=tmp_path / "nowhere")["gsm8k"]["missing"]


@pytest.mark.slow
def test_gpu_check_runs_its_notebooks_on_whatever_device_there_is(tmp_path):
    """The GPU check's CPU mode: the script a lent GPU runs is always ready (benchmarks/gpu_check.py)."""
    out = tmp_path / "gpu_series.json"
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--tiny", "--only", "7b-t4-recipe", "--out", str(out),
           "--work", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    notebooks = result["runs"]["7b-t4-recipe"]
    assert set(notebooks) == {"02_lora_sft", "04_quantized_inference", "05_submission", "06_grpo"}
    assert all(v["error"] is None and v["wall_s"] > 0 for v in notebooks.values()), notebooks
    for source in ("gsm8k", "math"):
        packing = result["packing"][source]
        assert (
            packing["real_tokens"] < packing["padded_tokens"]
            and packing["speedup_packed_restart_vs_padded"] > 0
        )


def test_gpu_grpo_measures_trl_grpo_steps_on_whatever_device_there_is(tmp_path):
    """The GRPO memory/speed script's CPU mode: TRL's GRPOTrainer on a random tiny config, QLoRA and 16-bit."""
    out = tmp_path / "gpu_grpo.json"
    cmd = [sys.executable, "benchmarks/gpu_grpo.py", "--tiny", "--out", str(out), "--work", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"qlora", "bf16"}
    for measured in runs.values():
        assert (
            len(measured["step_seconds"]) == measured["steps"] + 1
            and measured["median_step_s_after_warmup"] > 0
        )
        assert measured["mean_completion_tokens"] > 0 and measured["logged"]["completions/mean_length"] > 0
