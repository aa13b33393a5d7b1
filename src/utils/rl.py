"""GRPO's plumbing for notebook 06: which problems to train on, the prompt data set TRL reads, resumable
checkpoints, the training curves, and held-out scoring by greedy decoding and by a vote.

The notebook itself shows the library calls (`GRPOConfig`, `GRPOTrainer`, the reward functions of
`utils.rewards`, the adapter loaded with peft); this module keeps the bookkeeping out of its cells.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from utils.answers import normalize_for_competition
from utils.data import Problem
from utils.evaluation import EvalResult, problem_modes
from utils.prompts import INSTRUCTIONS, chat_prompt

# ------------------------------------------------------------------------------------------ the problems


def training_problems(root_output_dir: str | Path, sources: str = "embedded") -> list[Problem]:
    """Notebook 01's training split as problems (one per training example: its text, answer, the mode it
    is trained in), from `sources` ("all" or comma-separated names). Embedded problems get their template
    (`metadata["group"]`), other sources their name, so that weak groups can be picked."""
    from utils.io import read_jsonl

    path = Path(root_output_dir) / "01_data_prep" / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 01 first")
    wanted = None if sources.strip() == "all" else {s.strip() for s in sources.split(",")}
    templates = _embedded_templates()
    problems = []
    for row in read_jsonl(path):
        if wanted is not None and row["source"] not in wanted:
            continue
        text = row["messages"][0]["content"].removesuffix("\n" + INSTRUCTIONS[row["mode"]])
        problem_id = row["id"].removesuffix("-" + row["mode"])
        group = templates.get(problem_id, row.get("kind", row["source"]))
        meta = {"kind": row.get("kind", row["source"]), "mode": row["mode"], "group": group}
        problems.append(
            Problem(id=problem_id, source=row["source"], problem=text, answer=row["answer"], metadata=meta)
        )
    return problems


def _embedded_templates() -> dict[str, str]:
    """Embedded training problem id -> the template that generated it (notebook 01's defaults)."""
    from utils.prep import PrepConfig
    from utils.synthetic import generate_problems

    config = PrepConfig()
    problems = generate_problems(config.n_embedded_train, config.seed, config.compute_share, "train")
    return {p.id: p.metadata["template"] for p in problems}


def group_of(problem: Problem) -> str:
    """The finest known group of a problem: its template (embedded), else its kind or source."""
    meta = problem.metadata
    return meta.get("group") or meta.get("template") or meta.get("kind") or problem.source


def sampling_room(
    model, tokenizer, rows: list[dict], samples: int, temperature: float, max_new_tokens: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """What GRPO would see on these prompt rows, per group: greedy accuracy, pass@1 (the mean accuracy of
    `samples` completions at `temperature`), pass@G (the share of problems some completion solves), and
    the share of groups with mixed rewards (the only ones with a gradient). RL can raise greedy accuracy
    where pass@G is well above it: the right answer is there to be reinforced."""
    import torch

    from utils.generation import GenerationConfig, sample_reasoning
    from utils.rewards import correctness_reward

    prompts = [r["prompt"] for r in rows]
    greedy = sample_reasoning(model, tokenizer, prompts, GenerationConfig(max_new_tokens=max_new_tokens))
    torch.manual_seed(seed)
    sampled = sample_reasoning(
        model,
        tokenizer,
        prompts,
        GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature),
        samples,
    )
    stats = defaultdict(lambda: defaultdict(list))
    for row, (g,), group in zip(rows, greedy, sampled, strict=True):
        kwargs = {"answer": [row["answer"]] * (samples + 1), "competition": row["competition"]}
        rewards = correctness_reward(None, [g.text] + [s.text for s in group], **kwargs)
        mean = sum(rewards[1:]) / samples
        for key in (row["group"], "all"):
            s = stats[key]
            s["greedy"].append(rewards[0])
            s["pass@1"].append(mean)
            s[f"pass@{samples}"].append(float(mean > 0))
            s["mixed groups"].append(float(0 < mean < 1))
    return {
        k: {m: sum(v) / len(v) for m, v in s.items()} | {"problems": len(s["greedy"])}
        for k, s in stats.items()
    }


def groups_with_room(room: dict[str, dict[str, float]], n: int) -> list[str]:
    """The `n` groups of a `sampling_room` table where sampling finds the most right answers that greedy
    decoding misses (pass@G minus greedy accuracy; ties by name, so the choice is deterministic)."""
    top = next(k for k in next(iter(room.values())) if k.startswith("pass@") and k != "pass@1")
    gaps = {g: s[top] - s["greedy"] for g, s in room.items() if g != "all"}
    return [g for g, _ in sorted(gaps.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# ------------------------------------------------------------------------------------------ the data set


def prompt_rows(tokenizer, problems: list[Problem], competition: str = "aimo3") -> list[dict]:
    """TRL's prompt-only rows: the chat prompt in each problem's trained mode, and the columns the reward
    functions read (`answer`, `mode`, `competition`), plus `kind` and `group` for the logs."""
    rows = []
    for p, mode in zip(problems, problem_modes(problems, "auto"), strict=True):
        rows.append(
            {
                "prompt": chat_prompt(tokenizer, f"{p.problem.strip()}\n{INSTRUCTIONS[mode]}"),
                "answer": normalize_for_competition(p.answer, "raw"),
                "mode": mode,
                "competition": competition,
                "kind": p.metadata.get("kind", p.source),
                "group": group_of(p),
            }
        )
    return rows


def with_tool_output(model, tokenizer, rows: list[dict], max_new_tokens: int = 64) -> list[dict]:
    """Tool-integrated rows (`mode` "tools") continued by the model's own program and the sandbox's real
    output: the prompt then ends where the model reads the output back, and the completion GRPO samples is
    the model's answer to it. During sampling nothing would run the code (TRL's own tool calling needs a
    chat template with tool calls), so this is how the policy learns from real outputs. Other rows are
    returned as they are."""
    from utils.generation import OUTPUT_OPEN, GenerationConfig, sample_with_tools

    idx = [i for i, r in enumerate(rows) if r["mode"] == "tools"]
    config = GenerationConfig(max_new_tokens=max_new_tokens, max_code_rounds=1)
    samples = sample_with_tools(model, tokenizer, [rows[i]["prompt"] for i in idx], config) if idx else []
    out = [dict(r) for r in rows]
    for i, (sample,) in zip(idx, samples, strict=True):
        text = sample.text
        opened = text.find(OUTPUT_OPEN)
        closed = text.find("\n```\n", opened + len(OUTPUT_OPEN)) if opened >= 0 else -1
        if sample.code_runs and closed >= 0:  # else no program ran: the row stays a plain prompt
            out[i]["prompt"] = rows[i]["prompt"] + text[: closed + len("\n```\n")]
    return out


# ------------------------------------------------------------------------------------------ the curves


@dataclass
class Curves:
    """Per logged step: the mean reward, the KL to the start (the reference adapter), the mean
    completion length in tokens, and each reward function's mean."""

    steps: list
    reward: list
    kl: list
    length: list
    per_reward: dict


def curves(log_history: list[dict]) -> Curves:
    rows = [h for h in log_history if "reward" in h]
    names = sorted({k for h in rows for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    return Curves(
        steps=[h["step"] for h in rows],
        reward=[h["reward"] for h in rows],
        kl=[h.get("kl", float("nan")) for h in rows],
        length=[h.get("completions/mean_length", float("nan")) for h in rows],
        per_reward={n.split("/")[1]: [h.get(n, float("nan")) for h in rows] for n in names},
    )


def plot_curves(c: Curves, path: str | Path | None = None, title: str = "GRPO"):
    """Reward (and each reward function), KL to the start, and completion length against the step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(c.steps, c.reward, marker=".", label="total")
    for name, values in c.per_reward.items():
        axes[0].plot(c.steps, values, alpha=0.7, label=name.replace("_reward", ""))
    axes[0].set(xlabel="step", ylabel="mean reward", title="Reward")
    axes[0].legend(fontsize=7)
    axes[1].plot(c.steps, c.kl, marker=".", color="tab:red")
    axes[1].set(xlabel="step", ylabel="KL", title="KL to the SFT adapter")
    axes[2].plot(c.steps, c.length, marker=".", color="tab:green")
    axes[2].set(xlabel="step", ylabel="tokens", title="Completion length")
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


# ------------------------------------------------------------------------------------------ scoring


def vote_accuracy(
    model,
    tokenizer,
    problems: list[Problem],
    samples: int = 8,
    temperature: float = 0.7,
    max_new_tokens: int = 64,
    competition: str = "aimo3",
    seed: int = 0,
) -> EvalResult:
    """Majority-vote accuracy (self-consistency, `utils.solver`) with each problem prompted in its trained
    mode, as `utils.evaluation.evaluate(..., "auto")` does for greedy decoding."""
    from utils.solver import Solver, SolverConfig, score_solutions

    modes = problem_modes(problems, "auto")
    solutions = [None] * len(problems)
    for mode in sorted(set(modes)):
        idx = [i for i, m in enumerate(modes) if m == mode]
        config = SolverConfig(
            mode=mode,
            samples=samples,
            wave_size=max(1, samples // 2),  # a vote already decided after half the samples stops there
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            competition=competition,
            seed=seed,
        )
        solver = Solver(model, tokenizer, config)
        for i, s in zip(idx, solver.solve_batch([problems[i].problem for i in idx]), strict=True):
            solutions[i] = s
    return score_solutions(problems, solutions, competition)


# ------------------------------------------------------------------------------------------ training


@dataclass
class GrpoResult:
    """A GRPO run: where the final adapter is, how far it went, how long it took, and its logs."""

    output_dir: str
    steps: int
    seconds: float
    peak_memory_mb: float
    memory_kind: str
    resumed_from: str | None
    log_history: list


def run_key(args, rows: list[dict], adapter: str | Path) -> str:
    """What a GRPO checkpoint depends on: the recipe (every `GRPOConfig` field), the prompt rows and the
    starting adapter's weights. Only a run with the same key resumes it."""
    from utils.io import fingerprint

    weights = Path(adapter) / "adapter_model.safetensors"
    recipe = {k: v for k, v in args.to_dict().items() if k not in ("output_dir", "logging_dir")}
    start = fingerprint(weights.read_bytes().hex()) if weights.is_file() else str(adapter)
    return fingerprint({"recipe": recipe, "rows": fingerprint(rows, 64), "adapter": start})


def _finished(trainer, checkpoint: str) -> bool:
    """Whether a checkpoint is the run's last step (`Trainer.train` resumed from it would train one more)."""
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    return state.global_step >= trainer.args.max_steps


def _load_finished(trainer, checkpoint: str) -> None:
    """A finished run's result: the trained adapter's weights and the trainer state (its logs)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    weights = load_file(str(Path(checkpoint) / "adapter_model.safetensors"))
    set_peft_model_state_dict(trainer.model, weights, adapter_name="default")
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))


def train_grpo(trainer, key: str) -> GrpoResult:
    """`trainer.train()`, resumed from the last checkpoint of the same run (`key`, see `run_key`) in the
    trainer's output folder; then the trained adapter alone (not TRL's frozen "ref" copy) is saved to
    `output_dir/final` with the tokenizer. Logs go to `log_history`, not to stdout."""
    import shutil

    from transformers.trainer_callback import PrinterCallback

    from utils.generation import decoding_threads
    from utils.io import atomic_write_json
    from utils.profiling import measure
    from utils.training import resumable_checkpoint

    output_dir = Path(trainer.args.output_dir)
    trainer.remove_callback(PrinterCallback)
    resume = resumable_checkpoint(output_dir, key)
    model = trainer.model
    # A small model samples (most of GRPO's time) faster on one CPU thread: see utils.generation.
    with measure(next(model.parameters()).device) as m, decoding_threads(model):
        if resume and _finished(trainer, resume):
            _load_finished(trainer, resume)
        else:
            trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    model.save_pretrained(str(final), selected_adapters=["default"])
    trainer.processing_class.save_pretrained(str(final))
    result = GrpoResult(
        output_dir=str(final),
        steps=trainer.state.global_step,
        seconds=m.seconds,
        peak_memory_mb=m.peak_memory_mb,
        memory_kind=m.memory_kind,
        resumed_from=resume,
        log_history=trainer.state.log_history,
    )
    atomic_write_json(output_dir / "grpo.json", result.__dict__)
    model.eval()
    return result
