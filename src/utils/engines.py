"""Generation engines: what decodes the solver's samples, behind one seam.

`"hf"` is a transformers model (`utils.generation` drives its `generate`, batch by batch); `"vllm"` is a
vLLM engine (`utils.engine_vllm`: continuous batching, paged KV cache, LoRA adapters served as requests).
Everything above the seam stays the same whichever engine decodes: the tool-integrated loop, the votes,
the per-problem seeds and the deadline. An engine receives whole batches of prompts from
`utils.generation.generate_scored` and returns, per prompt, (text, new tokens, summed log-probability).

vLLM is imported only when ENGINE is "vllm": the project's own environment has no vLLM.
"""

from __future__ import annotations

import abc

ENGINES = ("hf", "vllm")


class Engine(abc.ABC):
    """A decoder that takes the place of a transformers model in `utils.generation`'s functions."""

    @abc.abstractmethod
    def generate_scored(
        self, tokenizer, prompts: list[str], config, stop_strings: list[str] | None, deadline: float | None
    ) -> list[tuple[str, int, float]]:
        """Complete every prompt once: (text, new tokens, summed token log-probability or 0.0) per prompt,
        with `utils.generation.generate_scored`'s contract (stop strings kept in the text, the deadline
        held inside generation, empty completions for work not started before it)."""


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"ENGINE: expected one of {ENGINES}, got {engine!r}")
    return engine
