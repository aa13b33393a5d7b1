"""GRPO on a LoRA adapter (notebook 06): it continues the adapter it is given, checkpoints, and a run killed
part way resumes from its last checkpoint to the same adapter as an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from utils.rl import prompt_rows, run_key, train_grpo
from utils.training import last_checkpoint

pytestmark = pytest.mark.slow

RECIPE = dict(
    max_steps=4,
    save_steps=2,
    num_generations=4,
    per_device_train_batch_size=8,
    max_completion_length=12,
    learning_rate=5e-3,
    beta=0.04,
    temperature=1.0,
    logging_steps=1,
)


def digits_reward(prompts, completions, **kwargs) -> list[float]:
    """A reward that varies within every group even for an untrained model, so that every step moves it."""
    return [float(sum(c.isdigit() for c in text)) for text in completions]


def start_adapter(tiny_model, folder: Path) -> Path:
    """A LoRA adapter to continue (as notebook 06 continues notebook 02's), with non-zero weights."""
    from peft import LoraConfig, get_peft_model

    from utils.modeling import load_model

    model, _ = load_model(str(tiny_model))
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    peft.save_pretrained(str(folder))
    return folder


def grpo_trainer(adapter: Path, out_dir: Path, callbacks=(), **changes):
    """A `GRPOTrainer` continuing `adapter` with the test recipe (`changes` override it), and its prompt rows."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    from utils.modeling import adapter_base, load_model
    from utils.rewards import boxed_format_reward, correctness_reward
    from utils.synthetic import generate_problems

    base, tokenizer = load_model(adapter_base(str(adapter)))
    policy = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    rows = prompt_rows(tokenizer, generate_problems(12, split="test"))  # 4 steps use 8: part of an epoch
    args = GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        activation_checkpointing=False,
        **(RECIPE | changes),
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[correctness_reward, boxed_format_reward, digits_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    return trainer, rows


def train(adapter: Path, out_dir: Path, callbacks=(), **changes):
    trainer, rows = grpo_trainer(adapter, out_dir, callbacks, **changes)
    return train_grpo(trainer, run_key(trainer.args, rows, adapter))


KILLER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from transformers import TrainerCallback
    import test_grpo as t

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                os._exit(9)  # a Kaggle session dying: no cleanup, no final save

    t.train(Path({adapter!r}), Path({out!r}), callbacks=(Kill(),))
""")


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    return start_adapter(tiny_model, tmp_path_factory.mktemp("start") / "adapter")


@pytest.fixture(scope="module")
def uninterrupted(adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, train(adapter, out)


def test_grpo_continues_the_given_adapter_and_saves_it_alone(adapter, uninterrupted):
    out, result = uninterrupted
    assert result.steps == 4 and result.resumed_from is None and result.seconds > 0
    logged = [h for h in result.log_history if "reward" in h]
    assert len(logged) == 4 and all("kl" in h and "completions/mean_length" in h for h in logged)
    # The KL is measured against the adapter it started from (TRL's frozen "ref" copy): zero at first.
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6) and logged[-1]["kl"] > 0
    final = Path(result.output_dir)
    assert not (final / "ref").exists() and (final / "tokenizer.json").is_file()
    start, trained = (
        load_file(adapter / "adapter_model.safetensors"),
        load_file(final / "adapter_model.safetensors"),
    )
    assert start.keys() == trained.keys()
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def test_grpo_killed_part_way_resumes_to_the_same_adapter(adapter, uninterrupted, tmp_path):
    here = Path(__file__).resolve().parent
    script = KILLER.format(
        src=str(here.parent / "src"), tests=str(here), adapter=str(adapter), out=str(tmp_path)
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert last_checkpoint(tmp_path).endswith("checkpoint-2") and not (tmp_path / "final").exists()

    resumed = train(adapter, tmp_path)
    assert resumed.resumed_from.endswith("checkpoint-2") and resumed.steps == 4
    a = load_file(Path(uninterrupted[1].output_dir) / "adapter_model.safetensors")
    b = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_rerunning_a_finished_run_trains_nothing_and_gives_its_adapter(adapter, uninterrupted, tmp_path):
    out, result = uninterrupted
    first = load_file(str(Path(result.output_dir) / "adapter_model.safetensors"))
    again = train(adapter, out)  # Trainer.train resumed at the last step would train one step more
    assert again.resumed_from.endswith("checkpoint-4") and again.steps == 4
    assert [h["reward"] for h in again.log_history if "reward" in h] == [
        h["reward"] for h in result.log_history if "reward" in h
    ]
    second = load_file(str(Path(again.output_dir) / "adapter_model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_changed_recipe_does_not_resume(adapter, uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.warns(UserWarning, match="another run"):
        result = train(adapter, out, beta=0.0)
    assert result.resumed_from is None and result.steps == 4


def test_prompt_rows_use_each_problems_trained_style(tiny_tokenizer):
    from utils.prompts import INSTRUCTIONS
    from utils.synthetic import generate_problems

    problems = generate_problems(12, split="test")
    rows = prompt_rows(tiny_tokenizer, problems, "aimo2")
    for p, row in zip(problems, rows, strict=True):
        mode = "tools" if p.metadata["kind"] == "compute" else "reasoning"
        assert row["mode"] == mode and INSTRUCTIONS[mode] in row["prompt"] and p.problem in row["prompt"]
        assert row["prompt"].endswith("Assistant:") and row["answer"] == p.answer
        assert row["competition"] == "aimo2" and row["group"] == p.metadata["template"]


def test_groups_with_room_and_curves():
    from utils.rl import curves, groups_with_room

    room = {
        g: {"greedy": gr, "pass@1": 0.1, "pass@8": pg}
        for g, gr, pg in (
            ("a", 0.9, 1.0),
            ("b", 0.5, 0.9),
            ("c", 0.6, 1.0),
            ("d", 0.2, 0.25),
            ("all", 0.0, 1.0),
        )
    }
    assert groups_with_room(room, 3) == ["b", "c", "a"]
    history = [
        {
            "step": 1,
            "reward": 0.2,
            "kl": 0.0,
            "completions/mean_length": 30.0,
            "rewards/correctness_reward/mean": 0.1,
        },
        {"step": 2, "loss": 0.5},
        {
            "step": 2,
            "reward": 0.4,
            "kl": 0.01,
            "completions/mean_length": 28.0,
            "rewards/correctness_reward/mean": 0.3,
        },
    ]
    c = curves(history)
    assert c.steps == [1, 2] and c.reward == [0.2, 0.4] and c.kl == [0.0, 0.01] and c.length == [30.0, 28.0]
    assert c.per_reward == {"correctness_reward": [0.1, 0.3]}


def test_sampling_room_counts_what_grpo_would_see(monkeypatch):
    """Greedy accuracy, pass@1, pass@G and the share of groups with mixed rewards, per group and overall."""
    import utils.generation
    from utils.generation import Sample
    from utils.rl import sampling_room

    # prompt "a": greedy wrong, 1 of 4 samples right; "b": greedy right, all 4 right; "c": nothing right
    answers = {"a": [9, 7, 1, 2, 3], "b": [5, 5, 5, 5, 5], "c": [0, 0, 0, 0, 0]}

    def fake(model, tokenizer, prompts, config, n_samples=1, deadline=None):
        pick = (lambda p: answers[p][:1]) if config.temperature == 0 else (lambda p: answers[p][1:])
        return [[Sample(text=f"\\boxed{{{v}}}") for v in pick(p)] for p in prompts]

    monkeypatch.setattr(utils.generation, "sample_reasoning", fake)
    rows = [
        {"prompt": p, "answer": a, "competition": "aimo3", "group": g}
        for p, a, g in (("a", 7, "x"), ("b", 5, "x"), ("c", 4, "y"))
    ]
    room = sampling_room(None, None, rows, samples=4, temperature=1.0, max_new_tokens=8)
    assert room["x"] == {"greedy": 0.5, "pass@1": 0.625, "pass@4": 1.0, "mixed groups": 0.5, "problems": 2}
    assert room["y"] == {"greedy": 0.0, "pass@1": 0.0, "pass@4": 0.0, "mixed groups": 0.0, "problems": 1}
    assert room["all"]["pass@4"] == 2 / 3 and room["all"]["problems"] == 3


def test_grpo_scores_completions_with_the_probabilities_it_sampled_them_from(adapter, tmp_path):
    """The policy gradient is only right if TRL's per-token log-probabilities of a sampled completion are the
    policy's own, at the sampling temperature, whatever left padding the batch gave its prompt. Notebook 06's
    account of why GRPO does not lift the tiny model rests on this: the gradient is the true one."""
    temperature = 0.7
    trainer, rows = grpo_trainer(adapter, tmp_path, temperature=temperature, max_completion_length=8)
    policy = trainer.model
    batch = trainer._generate_and_score_completions([rows[i // 4] for i in range(8)])
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    assert (prompt_mask == 0).any(), "the prompts should differ in length, so that some are padded"
    with torch.no_grad():
        trl_logps = trainer._get_per_token_logps_and_entropies(
            policy,
            torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([prompt_mask, completion_mask], 1),
            completion_ids.size(1),
        )[0]
        for i in range(len(completion_ids)):
            prompt = prompt_ids[i][prompt_mask[i].bool()]
            completion = completion_ids[i][completion_mask[i].bool()]
            logits = policy(input_ids=torch.cat([prompt, completion])[None]).logits[0, len(prompt) - 1 : -1]
            own = torch.log_softmax(logits / temperature, -1).gather(-1, completion[:, None])[:, 0]
            assert torch.allclose(trl_logps[i][completion_mask[i].bool()], own, atol=1e-4)
