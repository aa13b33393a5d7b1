"""Batched generation and the tool loop, on a real `generate` driven by a scripted model.

`ScriptedLM` is a transformers causal LM whose next token is chosen by a Python policy on the text so
far, so the real `model.generate` runs (left padding, stop strings, stopping criteria, sampling) while
the test decides what the "model" writes. `test_solver.py` imports these helpers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import CausalLMOutputWithPast

from utils.generation import (
    GenerationConfig,
    format_output,
    generate_texts,
    last_code_block,
    pending_code,
    sample_reasoning,
    sample_with_tools,
)
from utils.prompts import DEEPSEEK_CHAT_TEMPLATE, build_prompt

# ---------------------------------------------------------------------------------------------- helpers


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (byte-level BPE without merges), DeepSeek's chat template."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<bos>", "<eos>", "<pad>", *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.chat_template = DEEPSEEK_CHAT_TEMPLATE
    return fast


Policy = Callable[[str, str], "str | list[str] | None"]


class ScriptedLM(LlamaForCausalLM):
    """`policy(completion so far, whole context)` gives the next character, a list of equally likely
    ones, or None (EOS). `prompts` records what each generate call started from, `calls` the forward
    passes, `max_input` the longest context the model ran on."""

    def __init__(self, tokenizer, policy: Policy, max_positions: int = 100_000, delay: float = 0.0):
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=1,
            max_position_embeddings=max_positions,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        super().__init__(config)
        self.tok, self.policy, self.delay = tokenizer, policy, delay
        self.generation_config.use_cache = False  # the policy reads the whole text at every step
        self.calls, self.prompts, self.max_input = 0, [], 0

    def _id(self, char: str) -> int:
        return self.tok.convert_tokens_to_ids(self.tok.tokenize(char))[0]

    def _texts(self, input_ids, attention_mask) -> list[str]:
        rows = (
            input_ids
            if attention_mask is None
            else [r[m.bool()] for r, m in zip(input_ids, attention_mask, strict=True)]
        )
        self.max_input = max([self.max_input, *(len(r) for r in rows)])
        return [self.tok.decode(r, skip_special_tokens=True) for r in rows]

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        self.prompts.append(self._texts(input_ids, attention_mask))
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        logits = torch.full((input_ids.shape[0], 1, self.config.vocab_size), -1e4)  # generate reads the last
        for b, text in enumerate(self._texts(input_ids, attention_mask)):
            nxt = self.policy(text.split("Assistant:")[-1], text)
            for c in [None] if nxt is None else [nxt] if isinstance(nxt, str) else nxt:
                logits[b, -1, self.tok.eos_token_id if c is None else self._id(c)] = 0.0
        return CausalLMOutputWithPast(logits=logits)


def script(full: Callable[[str], str]) -> Policy:
    """A policy that writes `full(completion)` (which must extend the completion so far), then EOS."""

    def policy(done: str, context: str = ""):
        target = full(done)
        assert target.startswith(done), f"the script cannot continue {done!r}"
        return target[len(done)] if len(done) < len(target) else None

    return policy


HALLUCINATED = " ```python\nprint(123 * 45)\n```\n```output\n9999\n```\nThe answer is \\boxed{9999}."


def tool_writer(done: str) -> str:
    """Writes code for 123 * 45; once an output block is filled in, boxes what it says. Left to itself
    (no stop at the output block) it invents the output: 9999."""
    m = re.search(r"```output\n(.*?)\n```\n", done, re.S)
    if m:
        return done[: m.end()] + f"The answer is \\boxed{{{m.group(1)}}}."
    return HALLUCINATED


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def prompt(tok, problem="What is 123 * 45?", mode="tools"):
    return build_prompt(tok, problem, mode)


# ---------------------------------------------------------------------------------------------- tool loop


def test_tool_loop_runs_the_code_and_continues_from_its_output(tok):
    model = ScriptedLM(tok, script(tool_writer))
    [[sample]] = sample_with_tools(model, tok, [prompt(tok)], GenerationConfig(max_new_tokens=200))
    assert sample.text == (
        " ```python\nprint(123 * 45)\n```\n```output\n5535\n```\nThe answer is \\boxed{5535}."
    )
    assert sample.code_runs == [{"code": "print(123 * 45)\n", "stdout": "5535\n", "error": None}]
    # the second call continued from the prompt plus the code and its real output
    assert len(model.prompts) == 2 and model.prompts[1][0].endswith("```output\n5535\n```\n")
    assert not sample.timed_out and 0 < sample.new_tokens < len(sample.text)


def test_without_code_rounds_the_model_invents_the_output(tok):
    model = ScriptedLM(tok, script(tool_writer))
    [[sample]] = sample_with_tools(
        model, tok, [prompt(tok)], GenerationConfig(max_new_tokens=200, max_code_rounds=0)
    )
    assert sample.text == HALLUCINATED and sample.code_runs == []


def test_code_errors_are_fed_back_and_rounds_stop_at_the_depth_limit(tok):
    def always_code(done: str) -> str:  # writes a failing program after every fed-back error, forever
        fed = list(re.finditer(r"```output\n[^`]*Error[^`]*\n```\n", done))
        return (done[: fed[-1].end()] if fed else "") + " ```python\n1/0\n```\n```output\nnever read\n```\n"

    runs = []

    def run_code(code):
        runs.append(code)
        from utils.sandbox import run_python

        return run_python(code, timeout=5)

    model = ScriptedLM(tok, script(always_code))
    config = GenerationConfig(max_new_tokens=40, max_code_rounds=3)
    [[sample]] = sample_with_tools(model, tok, [prompt(tok)], config, run_code=run_code)
    assert len(runs) == 3 and len(sample.code_runs) == 3
    assert all("ZeroDivisionError" in r["error"] for r in sample.code_runs)
    assert sample.text.count("ZeroDivisionError") == 3  # each error shown to the model
    assert "never read" in sample.text  # the 4th round ran without a stop and was not executed


def test_every_sample_of_every_prompt_advances_in_one_batched_call_per_round(tok):
    calls = []

    def run_code(code):
        calls.append(code)
        from types import SimpleNamespace

        return SimpleNamespace(stdout="5535\n", error=None)

    model = ScriptedLM(tok, script(tool_writer))
    outs = sample_with_tools(
        model,
        tok,
        [prompt(tok), prompt(tok, "Same?")],
        GenerationConfig(max_new_tokens=200),
        n_samples=3,
        run_code=run_code,
    )
    assert [len(o) for o in outs] == [3, 3]
    assert all(s.text.endswith("\\boxed{5535}.") for o in outs for s in o)
    assert calls == ["print(123 * 45)\n"]  # six samples wrote the same code: it ran once


def test_output_block_formatting():
    text = " ```python\nx = 2\nprint(x)\n```\n```output\n"
    assert pending_code(text) == "x = 2\nprint(x)\n"
    assert pending_code(text.rstrip()) == "x = 2\nprint(x)\n"
    assert pending_code(" ```python\nx\n```\n") is None  # no output block opened: nothing to run
    assert last_code_block("```python\na\n```\n```python\nb\n```") == "b\n"
    assert format_output("12\n", None, 200) == "12"
    assert format_output("1\n", "NameError: x", 200) == "1\nNameError: x"
    assert format_output("9" * 50, None, 10) == "9" * 10 + " ..."


# ---------------------------------------------------------------------------------------------- batching


def test_left_padded_batches_keep_each_prompt_its_own_completion(tok):
    def answer_the_number(done: str, context: str):  # boxes the number the question asks about
        target = " \\boxed{" + re.search(r"How much is (\d+)\?", context).group(1) + "}."
        return target[len(done)] if len(done) < len(target) else None

    model = ScriptedLM(tok, answer_the_number)
    numbers = (7, 1234, 56, 90001, 3)
    prompts = [prompt(tok, f"How much is {n}?" + " Think." * (n % 4), "reasoning") for n in numbers]
    outs = generate_texts(model, tok, prompts, GenerationConfig(max_new_tokens=30, batch_size=2))
    assert [t for t, _ in outs] == [f" \\boxed{{{n}}}." for n in numbers]
    assert [n for _, n in outs] == [len(t) + 1 for t, _ in outs]  # one token per byte, plus EOS
    assert [len(p) for p in model.prompts] == [2, 2, 1]


def test_a_prompt_longer_than_the_context_keeps_its_end(tok):
    model = ScriptedLM(tok, script(lambda done: " \\boxed{1}."), max_positions=120)
    [(text, _)] = generate_texts(
        model, tok, [prompt(tok, "word " * 200, "reasoning")], GenerationConfig(max_new_tokens=20)
    )
    assert text == " \\boxed{1}." and model.max_input <= 120
    assert tok.truncation_side == "right"  # cut without changing the tokenizer that training shares


def test_sampling_follows_the_seed(tok):
    model = ScriptedLM(tok, lambda done, _: list("0123456789") if done == "" else None)
    config = GenerationConfig(max_new_tokens=3, temperature=1.0)

    def draw(seed):
        torch.manual_seed(seed)
        return [s.text for s in sample_reasoning(model, tok, [prompt(tok)], config, n_samples=12)[0]]

    first, again, other = draw(0), draw(0), draw(1)
    assert first == again and first != other and len(set(first)) > 3


# ---------------------------------------------------------------------------------------------- deadline


def test_a_deadline_in_the_past_starts_no_generation(tok):
    model = ScriptedLM(tok, lambda done, _: "1")
    start = time.monotonic()
    outs = sample_with_tools(
        model,
        tok,
        [prompt(tok)] * 2,
        GenerationConfig(max_new_tokens=10_000),
        n_samples=2,
        deadline=time.monotonic() - 1,
    )
    assert model.calls == 0 and time.monotonic() - start < 0.5
    assert all(s.text == "" and s.timed_out for o in outs for s in o)
    assert (
        generate_texts(model, tok, ["a", "b"], GenerationConfig(), deadline=time.monotonic() - 1)
        == [("", 0)] * 2
    )


def test_a_deadline_stops_a_long_generation_on_time(tok):
    model = ScriptedLM(tok, lambda done, _: "1", delay=0.01)  # would babble for 10_000 steps (> 100 s)
    start = time.monotonic()
    [[sample]] = sample_reasoning(
        model, tok, [prompt(tok)], GenerationConfig(max_new_tokens=10_000), deadline=start + 0.5
    )
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 1.5, elapsed
    assert sample.timed_out and 0 < sample.new_tokens < 200 and set(sample.text) == {"1"}


def test_a_deadline_inside_a_round_cuts_the_sample_and_runs_no_code(tok):
    model = ScriptedLM(tok, script(tool_writer), delay=0.02)  # the code block takes 38 steps: > 0.76 s
    deadline = time.monotonic() + 0.3  # time to start writing, not to finish the code block

    def run_code(code):
        raise AssertionError("ran past the deadline")

    [[sample]] = sample_with_tools(
        model, tok, [prompt(tok)], GenerationConfig(max_new_tokens=200), deadline=deadline, run_code=run_code
    )
    assert sample.timed_out and "```output" not in sample.text and len(sample.text) < 30
    assert time.monotonic() - deadline < 0.5


def test_code_runs_only_with_time_left_and_never_past_the_deadline(tok, monkeypatch):
    import utils.generation as generation
    import utils.sandbox

    timeouts = []

    def fake_run_python(code, timeout, max_output_chars):
        from types import SimpleNamespace

        timeouts.append(timeout)
        return SimpleNamespace(stdout="5535\n", error=None)

    monkeypatch.setattr(utils.sandbox, "run_python", fake_run_python)
    config = GenerationConfig(max_new_tokens=200, code_timeout=30.0)
    [[sample]] = sample_with_tools(
        ScriptedLM(tok, script(tool_writer)), tok, [prompt(tok)], config, deadline=time.monotonic() + 10
    )
    assert (
        sample.text.endswith("\\boxed{5535}.") and 8 < timeouts[0] <= 10
    )  # the timeout shrank to the time left

    monkeypatch.setattr(generation, "MIN_CODE_SECONDS", 1000.0)  # now 10 s is too little time to run code
    [[sample]] = sample_with_tools(
        ScriptedLM(tok, script(tool_writer)), tok, [prompt(tok)], config, deadline=time.monotonic() + 10
    )
    assert len(timeouts) == 1 and sample.timed_out and sample.text.rstrip().endswith("```output")


# ---------------------------------------------------------------------------------------------- modes


def test_auto_mode_prompts_each_problem_in_its_trained_style(tok):
    """`evaluate(mode="auto")` (notebooks 02 and 04): compute problems get the tools prompt and their code
    runs; mental problems get the reasoning prompt. Each output stays with its own problem."""
    from utils.evaluation import evaluate, problem_modes
    from utils.prompts import INSTRUCTIONS
    from utils.synthetic import generate_problems

    def policy(done: str, context: str):
        if INSTRUCTIONS["tools"] in context:
            return script(tool_writer)(done)
        return script(lambda _: " The answer is \\boxed{7}.")(done)

    problems = generate_problems(6, seed=3, compute_share=0.5, split="test")
    kinds = [p.metadata["kind"] for p in problems]
    assert problem_modes(problems, "auto") == ["tools" if k == "compute" else "reasoning" for k in kinds]
    assert problem_modes(problems, "reasoning") == ["reasoning"] * 6
    result = evaluate(ScriptedLM(tok, policy), tok, problems, "auto")
    for kind, record in zip(kinds, result.records, strict=True):
        expected = 5535 if kind == "compute" else 7  # 123 * 45, computed by the sandbox
        assert record["predicted"] == expected and ("```output\n5535" in record["output"]) == (
            kind == "compute"
        )


def test_a_small_model_decodes_on_one_cpu_thread_and_the_count_is_restored(tok):
    from utils.generation import decoding_threads

    model = ScriptedLM(tok, script(lambda _: " 1"))
    before = torch.get_num_threads()
    seen = []
    with decoding_threads(model):
        seen.append(torch.get_num_threads())
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError), decoding_threads(model):
        raise RuntimeError("generation failed")
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------- scores, state


def test_scores_give_each_sample_the_mean_probability_of_its_own_tokens(tok):
    sure = ScriptedLM(tok, script(lambda done: " \\boxed{7}."))
    config = GenerationConfig(max_new_tokens=20, scores=True)
    [[sample]] = sample_reasoning(sure, tok, [prompt(tok, mode="reasoning")], config)
    assert sample.scored_tokens == sample.new_tokens > 0 and sample.confidence == pytest.approx(1.0, abs=1e-3)
    # one of its tokens drawn among ten equally likely: the geometric mean falls by 10 ** (1 / tokens)
    torch.manual_seed(0)
    unsure = ScriptedLM(tok, lambda done, context: _one_unsure_digit(done))
    [[sample]] = sample_reasoning(
        unsure,
        tok,
        [prompt(tok, mode="reasoning")],
        GenerationConfig(max_new_tokens=20, scores=True, temperature=1.0),
    )
    assert sample.confidence == pytest.approx(0.1 ** (1 / sample.scored_tokens), rel=1e-3)
    [[unscored]] = sample_reasoning(
        sure, tok, [prompt(tok, mode="reasoning")], GenerationConfig(max_new_tokens=20)
    )
    assert unscored.confidence is None


def _one_unsure_digit(done: str):
    target = " \\boxed{"
    if len(done) < len(target):
        return target[len(done)]
    return list("0123456789") if len(done) == len(target) else ("}" if not done.endswith("}") else None)


def two_blocks(done: str) -> str:
    """Defines x in one block and uses it in the next; then boxes what the second block printed."""
    first = " ```python\nx = 6 * 7\nprint(x)\n```\n```output\n"
    second = " ```python\nprint(x + 1)\n```\n```output\n"
    outputs = list(re.finditer(r"```output\n(.*?)\n```\n", done, re.S))
    if not outputs:
        return first
    if len(outputs) == 1:
        return done[: outputs[0].end()] + second
    return done[: outputs[1].end()] + f"The answer is \\boxed{{{outputs[1].group(1).splitlines()[-1]}}}."


def test_persistent_state_lets_a_later_block_see_earlier_variables(tok):
    for persistent, shown in ((True, "43"), (False, "NameError")):
        config = GenerationConfig(max_new_tokens=80, max_code_rounds=2, persistent_state=persistent)
        [[sample]] = sample_with_tools(ScriptedLM(tok, script(two_blocks)), tok, [prompt(tok)], config)
        assert [r["code"] for r in sample.code_runs] == ["x = 6 * 7\nprint(x)\n", "print(x + 1)\n"]
        # only the new block's output is fed back: the replayed first block's "42" is silenced
        assert sample.code_runs[1]["stdout"].strip() == ("43" if persistent else "")
        assert shown in sample.text.split("```output")[-1] and sample.text.count("42") == 1


def test_a_stateful_program_replays_earlier_blocks_silently_and_survives_their_errors():
    from utils.generation import stateful_program
    from utils.sandbox import run_python

    program = stateful_program(["a = 2\nprint('noise')", "b = a * 5\n1 / 0\nc = 1"], "print(a + b)")
    result = run_python(program, timeout=5)
    assert result.error is None and result.stdout.strip() == "12"  # b was set before the block failed
    assert stateful_program([], "print(1)") == "print(1)"
