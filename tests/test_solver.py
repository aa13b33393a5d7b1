"""The solver: voting with early stop, per-problem seeding, the deadline, fallbacks; and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_generation import ScriptedLM, byte_tokenizer, script, tool_writer

import utils.solver as solver_module
from utils.generation import Sample
from utils.solver import (
    Solver,
    SolverConfig,
    budget_schedule,
    build_solver,
    load_submission_model,
    local_problems_csv,
    read_answer,
    sample_answer,
    score_solutions,
    submission_model,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def boxed(answer: str):
    return script(lambda done: f" The answer is \\boxed{{{answer}}}.")


def random_digit(done: str, context: str):
    """Boxes one digit drawn uniformly: the vote depends on the sampling seed."""
    target = " \\boxed{"
    if len(done) < len(target):
        return target[len(done)]
    return list("0123456789") if len(done) == len(target) else ("}" if not done.endswith("}") else None)


class FakeSampler:
    """Stands in for `sample_reasoning`: hands out scripted answers, one wave per call."""

    def __init__(self, answers, seconds=0.0, fail_on_call=None):
        self.answers, self.seconds, self.fail_on_call = list(answers), seconds, fail_on_call
        self.waves = []

    def __call__(self, model, tokenizer, prompts, config, n_samples=1, deadline=None):
        if self.fail_on_call == len(self.waves):
            raise RuntimeError("CUDA out of memory")
        time.sleep(self.seconds)
        self.waves.append(n_samples)
        wave, self.answers = self.answers[:n_samples], self.answers[n_samples:]
        return [[Sample(text=f"\\boxed{{{a}}}" if a is not None else "no idea") for a in wave]]


def fake_solver(tok, monkeypatch, sampler, **config):
    monkeypatch.setattr(solver_module, "sample_reasoning", sampler)
    return Solver(ScriptedLM(tok, boxed("0")), tok, SolverConfig(mode="reasoning", **config))


# ---------------------------------------------------------------------------------------------- voting


def test_vote_stops_once_no_remaining_samples_could_change_it(tok, monkeypatch):
    sampler = FakeSampler([7, 7, 7, 7, 7, 3, 7, 7, 7, 7, 1, 1] + [1] * 4)
    solution = fake_solver(tok, monkeypatch, sampler, samples=16, wave_size=4).solve("p")
    # after 8 samples 7 leads 7 to 1 with 8 left: 1 + 8 > 7, go on; after 12, 9 to 2 with 4 left: stop
    assert sampler.waves == [4, 4, 4] and solution.samples == 12 and solution.stopped_early
    assert solution.answer == 7 and solution.votes == {7: 9, 3: 1, 1: 2}


def test_min_votes_stops_as_soon_as_enough_samples_agree(tok, monkeypatch):
    sampler = FakeSampler([5, 9, 5, 5, 5, 9, 9, 9])
    solution = fake_solver(tok, monkeypatch, sampler, samples=8, wave_size=2, min_votes=3).solve("p")
    assert sampler.waves == [2, 2] and solution.answer == 5 and solution.stopped_early


def test_all_samples_are_drawn_when_the_vote_stays_open(tok, monkeypatch):
    sampler = FakeSampler([1, 2, 3, 4, 5, 6])
    solution = fake_solver(tok, monkeypatch, sampler, samples=6, wave_size=4).solve("p")
    assert sampler.waves == [4, 2] and not solution.stopped_early and solution.samples == 6
    assert solution.answer == 1  # a tie: the answer that reached the top count first


def test_ties_and_competition_ranges(tok, monkeypatch):
    sampler = FakeSampler([5, 7, 7, 5])
    assert fake_solver(tok, monkeypatch, sampler, samples=4, wave_size=4).solve("p").answer == 7
    # AIMO 2 scores answers mod 1000: 1079 and 79 are one vote; AIMO 3 drops out-of-range answers
    sampler = FakeSampler([1079, 79, 5, 5, 123456, 123456])
    solution = fake_solver(tok, monkeypatch, sampler, samples=6, competition="aimo2").solve("p")
    assert solution.answer == 79 and solution.votes == {79: 2, 5: 2, 456: 2}
    sampler = FakeSampler([123456, 123456, 5])
    solution = fake_solver(tok, monkeypatch, sampler, samples=3, competition="aimo3").solve("p")
    assert solution.answer == 5 and solution.answers == [None, None, 5]
    assert read_answer("so \\boxed{-1}", "aimo1") == 999 and read_answer("nothing", "aimo3") is None


def test_fallback_when_no_sample_parses(tok, monkeypatch):
    sampler = FakeSampler([None] * 4)
    solution = fake_solver(tok, monkeypatch, sampler, samples=4, fallback=42).solve("p")
    assert solution.answer == 42 and solution.votes == {} and solution.samples == 4


def test_a_failing_wave_keeps_the_votes_already_in_but_a_first_failure_raises(tok, monkeypatch):
    sampler = FakeSampler([3, 3, 1, 1], fail_on_call=1)
    solution = fake_solver(tok, monkeypatch, sampler, samples=8, wave_size=2).solve("p")
    assert solution.answer == 3 and solution.samples == 2 and "out of memory" in solution.error
    with pytest.raises(RuntimeError, match="out of memory"):
        fake_solver(tok, monkeypatch, FakeSampler([3], fail_on_call=0), samples=2).solve("p")


# ---------------------------------------------------------------------------------------------- deadline


def test_a_deadline_in_the_past_answers_the_fallback_at_once(tok):
    model = ScriptedLM(tok, boxed("12"))
    solver = Solver(model, tok, SolverConfig(mode="tools", samples=4, fallback=0))
    start = time.monotonic()
    solution = solver.solve("What is 2 + 10?", deadline=start - 1)
    assert model.calls == 0 and time.monotonic() - start < 0.5
    assert solution.answer == 0 and solution.samples == 0 and solution.timed_out


def test_no_wave_is_started_that_the_last_one_shows_cannot_finish(tok, monkeypatch):
    sampler = FakeSampler([1, 2, 3, 4, 5, 6], seconds=0.3)
    solver = fake_solver(tok, monkeypatch, sampler, samples=6, wave_size=2)
    start = time.monotonic()
    solution = solver.solve("p", deadline=start + 0.45)  # room for one 0.3 s wave, not two
    assert sampler.waves == [2] and solution.timed_out and solution.samples == 2
    assert time.monotonic() - start < 0.6  # one 0.3 s wave and the bookkeeping


def test_a_deadline_cuts_a_long_generation_and_the_answer_is_still_an_int(tok):
    model = ScriptedLM(tok, lambda done, _: "1", delay=0.01)  # babbles: 2000 tokens would take > 20 s
    solver = Solver(model, tok, SolverConfig(mode="reasoning", samples=2, max_new_tokens=2000))
    start = time.monotonic()
    answer = solver("p", deadline=start + 0.5)
    assert isinstance(answer, int) and time.monotonic() - start < 1.5


class StallingLM(ScriptedLM):
    """A model whose generate hangs (until `release` is set) on the calls numbered in `stall_on`: a stall
    inside generate, where no stopping criterion ever runs."""

    def __init__(self, tokenizer, policy, stall_on=(0,)):
        super().__init__(tokenizer, policy)
        self.stall_on, self.generate_calls = set(stall_on), 0
        self.release = threading.Event()

    def generate(self, *args, **kwargs):
        call, self.generate_calls = self.generate_calls, self.generate_calls + 1
        if call in self.stall_on:
            self.release.wait(60)
        return super().generate(*args, **kwargs)


def test_a_first_call_that_stalls_answers_at_the_deadline_plus_grace_and_blocks_no_later_problem(tok):
    model = StallingLM(tok, boxed("42"), stall_on=(0,))

    def loader():
        time.sleep(0.3)  # the model loads inside the first call
        return model, tok

    solver = Solver(loader=loader, config=SolverConfig(mode="reasoning", samples=1, fallback=0, grace_s=0.5))
    try:
        start = time.monotonic()
        first = solver.solve("p", deadline=start + 1.0)  # the stall would last 60 s
        assert time.monotonic() - start < 1.0 + 0.5 + 0.5
        assert first.answer == 0 and first.samples == 0 and first.timed_out and "stalled" in first.error
        start = time.monotonic()
        assert solver("q", deadline=start + 5.0) == 42  # the stuck worker still hangs: this one is not held
        assert time.monotonic() - start < 5.0
    finally:
        model.release.set()


def test_a_stalled_first_generation_in_a_submission_run_costs_its_share_not_the_run(
    tok, tmp_path, monkeypatch
):
    """The run of the finding: the first call's generate stalls (here for 60 s) on a 10 s budget."""
    from utils.submission import run_submission

    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    problems = tmp_path / "problems.csv"
    problems.write_text("id,problem\nfirst,Stall here\nsecond,Then answer\n")
    model = StallingLM(tok, boxed("42"), stall_on=(0,))
    config = SolverConfig(mode="reasoning", samples=1, grace_s=0.5)
    try:
        start = time.monotonic()
        result = run_submission(
            problems_csv=problems,
            competition="aimo3",
            out_dir=tmp_path,
            time_budget_s=10,
            solver_factory=lambda: Solver(model, tok, config),
            seed=0,
        )
        elapsed = time.monotonic() - start
    finally:
        model.release.set()
    first, second = sorted(result.records, key=lambda r: r.seconds, reverse=True)
    assert first.answer == 0 and first.seconds < first.allotted + 0.5 + 0.5  # deadline + grace + slack
    assert second.answer == 42 and second.error is None
    assert elapsed < 10


def test_a_stall_after_some_waves_answers_from_their_votes(tok):
    model = StallingLM(tok, boxed("7"), stall_on=(1,))
    solver = Solver(model, tok, SolverConfig(mode="reasoning", samples=6, wave_size=2, grace_s=0.2))
    try:
        start = time.monotonic()
        solution = solver.solve("p", deadline=start + 0.8)
        assert time.monotonic() - start < 0.8 + 0.2 + 0.5
        assert solution.answer == 7 and solution.votes == {7: 2} and solution.samples == 2
        assert solution.timed_out and "2 sample(s)" in solution.error
        batch = solver.solve_batch(["a", "b"], deadline=time.monotonic() + 5)  # calls 2+ do not stall
        assert [s.answer for s in batch] == [7, 7] and not any(s.error for s in batch)
    finally:
        model.release.set()
    with pytest.raises(ValueError, match="grace_s"):
        SolverConfig(grace_s=-1)


# ---------------------------------------------------------------------------------------------- seeding


def test_each_problem_gets_the_same_samples_whatever_came_before(tok):
    solver = Solver(
        ScriptedLM(tok, random_digit), tok, SolverConfig(mode="reasoning", samples=8, temperature=1.0)
    )
    alone = solver.solve("problem A")
    solver.solve("problem B")
    after_b = solver.solve("problem A")
    assert alone.outputs == after_b.outputs and alone.answer == after_b.answer
    assert len(set(alone.answers)) > 2  # the samples do vary
    other_seed = solver.with_config(seed=1).solve("problem A")
    assert other_seed.outputs != alone.outputs
    assert solver.solve("problem B").outputs != alone.outputs


# ---------------------------------------------------------------------------------------------- real tool use


def test_tools_mode_runs_code_and_votes_on_its_output(tok):
    solver = Solver(
        ScriptedLM(tok, script(tool_writer)),
        tok,
        SolverConfig(mode="tools", samples=4, wave_size=2, max_new_tokens=200),
    )
    solution = solver.solve("What is 123 * 45?")
    assert (
        solution.answer == 5535 and solution.votes == {5535: 2} and solution.stopped_early
    )  # 2 to 0, 2 left
    reasoning = solver.with_config(max_code_rounds=0).solve("What is 123 * 45?")
    assert reasoning.answer == 9999  # without running the code, the invented output wins


def test_answers_can_be_read_from_the_program_output(tok):
    def miscopies(done: str) -> str:  # runs the right program, then boxes a wrong copy of its output
        return tool_writer(done).replace("\\boxed{5535}", "\\boxed{5555}")

    solver = Solver(
        ScriptedLM(tok, script(miscopies)), tok, SolverConfig(mode="tools", samples=1, max_new_tokens=200)
    )
    assert solver("What is 123 * 45?") == 5555
    assert solver.with_config(answer_from="program")("What is 123 * 45?") == 5535
    no_code = Sample(text="\\boxed{7}")
    failed = Sample(text="\\boxed{8}", code_runs=[{"code": "x", "stdout": "", "error": "NameError: x"}])
    assert sample_answer(no_code, "aimo3", "program") == 7 and sample_answer(failed, "aimo3", "program") == 8
    assert (
        sample_answer(Sample(text="", code_runs=[{"stdout": "1234\n", "error": None}]), "aimo2", "program")
        == 234
    )


def test_solve_batch_matches_solve_on_deterministic_problems(tok):
    def per_problem(done: str, context: str):
        target = " \\boxed{" + ("11" if "first" in context else "22") + "}."
        return target[len(done)] if len(done) < len(target) else None

    solver = Solver(ScriptedLM(tok, per_problem), tok, SolverConfig(mode="reasoning", samples=6, wave_size=2))
    batch = solver.solve_batch(["the first", "the second", "the first again"])
    assert [s.answer for s in batch] == [11, 22, 11] == [solver("the first"), solver("the second"), 11]
    assert all(s.samples == 4 and s.stopped_early for s in batch)  # 4 to 0 with 2 left: decided


def test_score_solutions_counts_by_kind_and_never_credits_a_fallback():
    problems = [
        SimpleNamespace(id=str(i), answer=a, source="embedded", metadata={"kind": k})
        for i, (a, k) in enumerate([(5, "mental"), (0, "compute"), (1234, "compute")])
    ]
    solutions = [
        solver_module.Solution(answer=a, votes=v, samples=1, seconds=0.0)
        for a, v in [(5, {5: 1}), (0, {}), (234, {234: 1})]
    ]
    assert score_solutions(problems, solutions, "aimo3").by_kind == {"compute": 0.0, "mental": 1.0}
    assert score_solutions(problems, solutions, "aimo2").by_kind == {"compute": 0.5, "mental": 1.0}


def test_lazy_solver_loads_once_on_first_use_and_shares_the_model(tok, monkeypatch):
    loads = []

    def load_model(name, quantization):
        loads.append((name, quantization))
        return ScriptedLM(tok, boxed("4")), tok

    monkeypatch.setattr("utils.modeling.load_model", load_model)
    solver = build_solver("some/model", mode="reasoning", samples=2, lazy=True, wave_size=2)
    greedy = solver.with_config(samples=1)
    assert loads == []
    assert greedy("p") == 4 and solver.loaded() is solver and solver("p") == 4
    assert loads == [("some/model", "none")] and greedy.model is solver.model
    with pytest.raises(ValueError, match="mode"):
        SolverConfig(mode="chat")
    with pytest.raises(ValueError, match="competition"):
        SolverConfig(competition="aimo4")


# ---------------------------------------------------------------------------------------------- notebook helpers


def test_submission_model_prefers_notebook_04_then_02_then_the_base(tmp_path):
    assert submission_model("tiny", "auto", tmp_path) == "tiny"
    adapter = tmp_path / "02_lora_sft" / "adapter" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    assert submission_model("tiny", "auto", tmp_path) == str(adapter)
    (tmp_path / "04_quantized_inference").mkdir()
    (tmp_path / "04_quantized_inference" / "choice.json").write_text("{}")
    assert submission_model("tiny", "auto", tmp_path) == str(tmp_path / "04_quantized_inference")
    assert submission_model("tiny", "", tmp_path) == "tiny" and submission_model("m", "/a", tmp_path) == "/a"


def test_a_notebook_04_folder_loads_through_its_choice(tmp_path, monkeypatch):
    calls = []
    fake = SimpleNamespace(
        load_choice=lambda folder: calls.append(folder) or ("model", "tokenizer", "choice")
    )
    monkeypatch.setitem(sys.modules, "utils.quantization", fake)
    (tmp_path / "choice.json").write_text("{}")
    assert load_submission_model(str(tmp_path), "nf4") == ("model", "tokenizer") and calls == [str(tmp_path)]


def test_local_problems_for_each_competition(data_dir, tmp_path, monkeypatch):
    from utils.gateway import read_problems
    from utils.synthetic import generate_problems

    assert local_problems_csv(data_dir, "aimo1") == data_dir / "kaggle/aimo1/train.csv"
    assert (
        local_problems_csv(data_dir, "aimo3") == data_dir / "kaggle/aimo2/reference.csv"
    )  # AIMO 3's: absent
    monkeypatch.setattr("utils.paths.KAGGLE_INPUT", tmp_path / "no-kaggle")
    problems = generate_problems(3, split="csv")
    written = local_problems_csv(None, "aimo2", problems, tmp_path)
    assert [(r.id, r.problem, r.answer) for r in read_problems(written)] == [
        (p.id, p.problem, p.answer) for p in problems
    ]
    with pytest.raises(FileNotFoundError, match="no problems for a local aimo2 run"):
        local_problems_csv(tmp_path / "missing", "aimo2")


def test_budget_schedule_lets_unused_time_flow_to_later_problems():
    rows = budget_schedule(100, [5, 40, 5, 5, 30])
    assert rows[0]["share_s"] == 18.0 and rows[1]["share_s"] > rows[0]["share_s"]  # (100 - 10) / 5, then more
    assert rows[1]["used_s"] == rows[1]["share_s"]  # the 40 s problem is cut at its deadline
    assert rows[-1]["left_s"] >= 10.0  # the reserve is never spent


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter on the embedded model, trained for a few steps (about 10 s): enough to load and answer."""
    from peft import LoraConfig
    from trl import SFTConfig

    from utils.modeling import load_model
    from utils.prep import to_example
    from utils.prompts import render_example
    from utils.synthetic import generate_problems
    from utils.training import hardware_precision, train_sft

    model, tokenizer = load_model(str(tiny_model))
    rows = [
        render_example(tokenizer, to_example(p, m))
        for p in generate_problems(40, split="test")
        for m in ("reasoning", "tools")
    ]
    out = tmp_path_factory.mktemp("adapter")
    args = SFTConfig(
        output_dir=str(out),
        max_steps=6,
        per_device_train_batch_size=8,
        learning_rate=2e-3,
        warmup_steps=1,
        lr_scheduler_type="cosine",
        max_length=128,
        completion_only_loss=True,
        activation_checkpointing=False,
        save_steps=100,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        **hardware_precision(model),
    )
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return Path(train_sft(model, tokenizer, rows, None, args, peft_config=lora).output_dir)


@pytest.mark.slow
@pytest.mark.parametrize("competition", ["aimo1", "aimo3"])
def test_cli_answers_every_problem_in_range_within_the_budget(tiny_adapter, tmp_path, competition):
    from utils.synthetic import generate_problems

    problems = tmp_path / "problems.csv"
    with problems.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "problem", "answer"])
        for p in generate_problems(6, seed=3, compute_share=0.5, split="cli"):
            writer.writerow([p.id, p.problem, p.answer])
        writer.writerow(
            ["long", "Find the remainder when " + "a very long problem " * 60 + "is divided by 1000.", 7]
        )
    budget = 25.0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("KAGGLE_IS_COMPETITION_RERUN", None)
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "utils.submission",
            "--competition",
            competition,
            "--problems",
            str(problems),
            "--model",
            str(tiny_adapter),
            "--out",
            str(tmp_path / "out"),
            "--time-budget",
            str(budget),
            "--samples",
            "2",
            "--mode",
            "tools",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=budget + 60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (tmp_path / "out" / "submission.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["id"] for r in rows) == sorted(["long"] + [f"embedded-cli-{i:05d}" for i in range(6)])
    high = 999 if competition == "aimo1" else 99_999
    assert all(0 <= int(r["answer"]) <= high for r in rows)
    assert (
        elapsed < budget + 15
    )  # the budget, plus the interpreter's start-up before the budget's clock starts
    used = float(re.search(r"7 answers in ([\d.]+) s", proc.stdout).group(1))
    assert used <= budget  # the gateway's own count: every problem's time, the model load included


# ---------------------------------------------------------------------------------------------- weighted, mixed


def test_a_weighted_vote_lets_the_confident_minority_win_and_stops_on_weights():
    from utils.answers import majority_vote, vote_is_decided

    plain = majority_vote([5, 7, 7])
    weighted = majority_vote([5, 7, 7], weights=[0.9, 0.3, 0.3])
    assert plain.answer == 7 and weighted.answer == 5 and weighted.count == 1
    assert weighted.weights == pytest.approx({5: 0.9, 7: 0.6}) and plain.weights == {}
    assert majority_vote([None, 4], weights=[1.0, 0.0]).answer == 4  # a weight of 0 still beats nothing
    # decided once the runner-up, given weight 1 per remaining sample, cannot pass the leader
    assert not vote_is_decided(majority_vote([3, 3, 4], weights=[1.0, 0.6, 0.8]), 1)
    assert vote_is_decided(majority_vote([3, 3, 3, 4], weights=[1.0, 1.0, 1.0, 0.5]), 1)
    assert vote_is_decided(majority_vote([3, 3], weights=[0.1, 0.1]), 5, min_votes=2)
    with pytest.raises(ValueError, match="2 weights for 1 answers"):
        majority_vote([1], weights=[1.0, 1.0])


class ConfidentSampler(FakeSampler):
    """Scripted answers, each with a scripted confidence (a sample of 10 tokens)."""

    def __init__(self, answers, confidences):
        super().__init__(answers)
        self.confidences = list(confidences)

    def __call__(self, model, tokenizer, prompts, config, n_samples=1, deadline=None):
        [wave] = super().__call__(model, tokenizer, prompts, config, n_samples, deadline)
        taken, self.confidences = self.confidences[:n_samples], self.confidences[n_samples:]
        for sample, c in zip(wave, taken, strict=True):
            sample.logprob, sample.scored_tokens = 10 * math.log(c), 10
        return [wave]


def test_a_weighted_solver_votes_by_confidence(tok, monkeypatch):
    answers, confidences = [5, 7, 7], [0.9, 0.2, 0.2]
    plain = fake_solver(tok, monkeypatch, ConfidentSampler(answers, confidences), samples=3).solve("p")
    sampler = ConfidentSampler(answers, confidences)
    weighted = fake_solver(tok, monkeypatch, sampler, samples=3, weighted=True).solve("p")
    assert plain.answer == 7 and weighted.answer == 5
    assert weighted.weights == pytest.approx(confidences) and plain.weights == [1.0, 1.0, 1.0]


class PromptRecorder:
    """A sampler that answers `answer` and records the prompts and sample counts it was asked for."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, model, tokenizer, prompts, config, n_samples=1, deadline=None):
        self.calls.append((list(prompts), n_samples))
        return [[Sample(text=f"\\boxed{{{self.answer}}}") for _ in range(n_samples)] for _ in prompts]


def test_mixed_mode_draws_each_wave_half_by_reasoning_half_with_tools(tok, monkeypatch):
    reasoning, tools = PromptRecorder(1), PromptRecorder(2)
    monkeypatch.setattr(solver_module, "sample_reasoning", reasoning)
    monkeypatch.setattr(solver_module, "sample_with_tools", tools)
    config = SolverConfig(mode="mixed", samples=5, wave_size=3)
    solutions = Solver(ScriptedLM(tok, boxed("0")), tok, config).solve_batch(["p", "q"])
    assert [n for _, n in reasoning.calls] == [2, 1] and [n for _, n in tools.calls] == [1, 1]
    assert all("step by step" in p for p in reasoning.calls[0][0])
    assert all("programs" in p for p in tools.calls[0][0])
    assert [s.answers for s in solutions] == [[1, 1, 2, 1, 2]] * 2  # wave by wave: reasoning, then tools
    with pytest.raises(ValueError, match="mixed"):
        SolverConfig(mode="auto")


def test_validation_problems_strip_the_instruction_and_keep_the_kind(tmp_path):
    from utils.prompts import user_message
    from utils.solver import validation_problems

    rows = [
        {"id": "v0", "source": "embedded", "kind": "compute", "answer": 731,
         "messages": [{"role": "user", "content": user_message("43 pens in 17 crates?", "tools")}]},
        {"id": "v1", "source": "gsm8k", "kind": "gsm8k", "answer": 3,
         "messages": [{"role": "user", "content": user_message("Other?", "reasoning")}]},
        {"id": "v2", "source": "embedded", "kind": "mental", "answer": 12,
         "messages": [{"role": "user", "content": user_message("5 + 4 + 3?", "reasoning")}]},
    ]  # fmt: skip
    (tmp_path / "01_data_prep").mkdir()
    (tmp_path / "01_data_prep" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    problems = validation_problems(tmp_path, "embedded")
    assert [(p.id, p.problem, p.answer, p.metadata["kind"]) for p in problems] == [
        ("v0", "43 pens in 17 crates?", 731, "compute"),
        ("v2", "5 + 4 + 3?", 12, "mental"),
    ]
    assert len(validation_problems(tmp_path, "embedded", limit=1)) == 1
    assert validation_problems(tmp_path / "absent") == []


def test_choice_diagnosis_and_two_run_score():
    from utils.evaluation import EvalResult
    from utils.solver import choose_configuration, two_run_score, vote_diagnosis

    scores, costs = {"vote": 0.60, "greedy": 0.595, "pair": 0.70}, {"vote": 8, "greedy": 1, "pair": 2}
    assert choose_configuration(scores, costs) == "pair"
    assert choose_configuration({"a": 0.5, "b": 0.5}, {"a": 8, "b": 2}) == "b"  # a tie goes to the cheaper
    assert choose_configuration(scores, costs, tolerance=0.2) == "greedy"

    def result(rows):
        return EvalResult.from_records([
            {"kind": "k", "answer": 1, "predicted": p, "correct": p == 1, "sample_answers": s, "samples": len(s)}
            for p, s in rows
        ])  # fmt: skip

    first = result([(1, [1, 1, 2, 2]), (2, [2, 2, 2, 1]), (2, [2, 2, 3, 3])])
    second = result([(1, [1]), (1, [1]), (3, [3])])
    diagnosis = vote_diagnosis(first)
    assert diagnosis["sample_accuracy"] == pytest.approx(3 / 12) and diagnosis["pass_at_k"] == pytest.approx(
        2 / 3
    )
    assert (
        diagnosis["wrong_vote_share"] == pytest.approx((3 / 4 + 2 / 4) / 2)
        and diagnosis["samples_drawn"] == 12
    )
    assert two_run_score(first, second) == pytest.approx((1 + 0.5 + 0) / 3)


# ---------------------------------------------------------------------------------------------- Kaggle's gateway

FAKE_SERVER = """
import csv
import json
import math
CALLS = []

class AIMO3InferenceServer:
    def __init__(self, predict):
        self.predict = predict

    def run_local_gateway(self, data_paths):
        import polars as pl
        [path] = data_paths
        with open(path) as f:
            for row in csv.DictReader(f):
                reply = self.predict(pl.Series("id", [row["id"]]), pl.Series("problem", [row["problem"]]))
                CALLS.append((path, reply["id"].item(), reply["answer"].item()))
"""


WORKER_THREADS = ("solver-generation", "solver", "inference-server")  # utils.watchdog's workers here


@pytest.fixture(autouse=True)
def abandoned_workers_finish():
    """A worker a stall test abandoned must end before the next test: it draws from torch's global RNG, so a
    later test's samples would depend on it (the release event lets every stalled model finish)."""
    yield
    for thread in threading.enumerate():
        if thread.name in WORKER_THREADS and thread is not threading.current_thread():
            thread.join(timeout=60)


@pytest.fixture
def no_kaggle_evaluation():
    """The fake `kaggle_evaluation` modules a test imports must not leak into later tests."""
    yield
    for name in [m for m in sys.modules if m.startswith("kaggle_evaluation")]:
        del sys.modules[name]


def test_the_dry_run_serves_predict_through_kaggles_own_local_gateway(
    tmp_path, monkeypatch, no_kaggle_evaluation
):
    from utils.solver import kaggle_dry_run
    from utils.submission import make_predict

    package = tmp_path / "kaggle_evaluation"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "aimo_3_inference_server.py").write_text(FAKE_SERVER)
    (tmp_path / "test.csv").write_text("id,problem\n000aaa,What is 1+1?\n111bbb,What is 2+2?\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.startswith("kaggle_evaluation")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    predict = make_predict(lambda id_, problem: len(problem))
    assert kaggle_dry_run(predict, "aimo3", search_dirs=[tmp_path]) == tmp_path / "test.csv"
    served = sys.modules["kaggle_evaluation.aimo_3_inference_server"].CALLS
    assert served == [(str(tmp_path / "test.csv"), "000aaa", 12), (str(tmp_path / "test.csv"), "111bbb", 12)]
    # nothing to dry-run: AIMO 1, no test.csv, no kaggle_evaluation, or a rerun (which serves for real)
    assert kaggle_dry_run(predict, "aimo1", search_dirs=[tmp_path]) is None
    assert kaggle_dry_run(predict, "aimo3", search_dirs=[tmp_path / "none"]) is None
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "test.csv").write_text("id,problem\n")
    monkeypatch.delitem(sys.modules, "kaggle_evaluation.aimo_3_inference_server")
    monkeypatch.delitem(sys.modules, "kaggle_evaluation")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    assert kaggle_dry_run(predict, "aimo3", search_dirs=[tmp_path / "bare"]) is None
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    assert kaggle_dry_run(predict, "aimo3", search_dirs=[tmp_path]) is None


def test_the_program_check_silences_a_tool_sample_its_program_contradicts(tok, monkeypatch):
    def tool_sample(printed: str, boxed_answer: int) -> Sample:
        return Sample(
            text=f"```python\nprint(x)\n```\n```output\n{printed}\n```\n\\boxed{{{boxed_answer}}}",
            code_runs=[{"code": "print(x)", "stdout": f"{printed}\n", "error": None}],
        )

    class ToolSampler:  # a miscopied product twice, and one sample that copied its program's output
        def __call__(self, model, tokenizer, prompts, config, n_samples=1, deadline=None):
            return [[tool_sample("3136", 3153), tool_sample("3136", 3153), tool_sample("731", 731)]]

    monkeypatch.setattr(solver_module, "sample_reasoning", ToolSampler())
    config = dict(mode="reasoning", samples=3, wave_size=3)
    plain = Solver(ScriptedLM(tok, boxed("0")), tok, SolverConfig(**config)).solve("p")
    checked = Solver(ScriptedLM(tok, boxed("0")), tok, SolverConfig(**config, program_check=True)).solve("p")
    assert plain.answer == 3153 and checked.answer == 731 and checked.weights == [0.0, 0.0, 1.0]
    # a sample whose program printed no integer, or that ran no code, keeps its vote
    assert solver_module.sample_weight(tool_sample("oops", 5), 5, SolverConfig(program_check=True)) == 1.0
    assert solver_module.sample_weight(Sample(text="\\boxed{5}"), 5, SolverConfig(program_check=True)) == 1.0
