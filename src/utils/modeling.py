"""Models: the embedded tiny model (built, pretrained and cached here) and loading any causal LM.

The embedded default is a Llama (DeepSeek-Math's architecture family) small enough to train on a
2-core CPU: a byte-level BPE tokenizer with digits split one per token (as Llama and DeepSeek do),
trained on the embedded corpus, and a brief pretraining on arithmetic facts and problem statements,
so that the model knows the facts but not how to solve a word problem or answer in the chat format.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from utils.paths import find_model_dir, project_root

log = logging.getLogger(__name__)

BOS, EOS, PAD = "<|begin_of_sentence|>", "<|end_of_sentence|>", "<|pad|>"
TINY = "tiny"


@dataclass(frozen=True)
class TinyModelConfig:
    """Everything the embedded model depends on; its hash names the cache folder."""

    seed: int = 0
    vocab_size: int = 640
    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    block_size: int = 128
    batch_size: int = 32
    learning_rate: float = 3e-3
    max_steps: int = 600
    n_problem_texts: int = 3000
    version: int = 6

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# ---------------------------------------------------------------- hardware


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bf16 where the GPU supports it, fp16 on older GPUs (T4, P100), fp32 on a CPU.

    `AIMO_NO_BF16=1` makes any GPU take the T4's path (fp16): how the GPU check tests it on a newer card."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported() and not os.environ.get("AIMO_NO_BF16")
        return torch.bfloat16 if bf16 else torch.float16
    return torch.float32


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def quiet_libraries() -> None:
    """No progress bars or chatty warnings in stored notebook outputs."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    for name in ("bitsandbytes", "bitsandbytes.backends.cpu.ops", "accelerate", "peft", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---------------------------------------------------------------- the tiny tokenizer and corpus


def pretraining_corpus(config: TinyModelConfig) -> list[str]:
    """Arithmetic facts and chains (by hand and as Python with its output), problem statements (no
    solutions), copied number lists and format snippets: the model can do some arithmetic and copy numbers,
    but has never seen a word problem solved nor a question answered in the chat format.

    The copying matters: before version 6 the tuned model often wrote the right program but miscopied its
    4-digit output into the answer. Compute problems right with tools after notebook 02's recipe: 3%
    (version 4), 8% (version 5, with the Python snippets), 72% (version 6, with random-digit copy lists)."""
    from utils.synthetic import (
        arithmetic_facts,
        copy_sequences,
        expression_chains,
        format_snippets,
        problem_statements,
        program_snippets,
    )

    texts = problem_statements(config.seed, config.n_problem_texts)
    docs = (
        arithmetic_facts(seed=config.seed, copies=10)
        + expression_chains(config.seed)
        + texts
        + copy_sequences(config.seed)
        + format_snippets(config.seed)
        + program_snippets(config.seed)
    )
    random.Random(config.seed).shuffle(docs)
    return docs


TOKENIZER_FILE = project_root() / "data" / "tiny_tokenizer.json"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE, digits split one per token, DeepSeek-style special tokens and chat template.

    The `tokenizers` trainer breaks ties between equally frequent merges differently from run to run,
    so the series uses the tokenizer trained once and kept in `data/tiny_tokenizer.json` (see
    `tiny_tokenizer`); this function retrains it (`python -m utils.modeling retrain-tokenizer`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from utils.prompts import INSTRUCTIONS
    from utils.synthetic import generate_problems

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The chat words and the solution formats belong in the vocabulary too (they are fine-tuning's text).
    samples = [
        p.solution + "\n" + p.metadata["tool_solution"] for p in generate_problems(300, split="tokenizer")
    ]
    extra = ["User: ", "\n\nAssistant: ", *INSTRUCTIONS.values()] * 50 + samples
    tok.train_from_iterator(texts + extra, trainer=trainer)
    return _wrap(tok)


def tiny_tokenizer(config: TinyModelConfig):
    """The embedded model's tokenizer: the committed one (deterministic), or a fresh one if it is missing."""
    from tokenizers import Tokenizer

    if TOKENIZER_FILE.is_file():
        return _wrap(Tokenizer.from_file(str(TOKENIZER_FILE)))
    return train_tokenizer(pretraining_corpus(config), config.vocab_size)


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    from utils.prompts import DEEPSEEK_CHAT_TEMPLATE

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=4096
    )
    fast.chat_template = DEEPSEEK_CHAT_TEMPLATE
    return fast


# ---------------------------------------------------------------- the tiny model


def tiny_llama_config(config: TinyModelConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _blocks(tokenizer, docs: list[str], block_size: int) -> torch.Tensor:
    """Concatenate documents (EOS between them) and cut into fixed-length blocks: nanoGPT's way."""
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc + [tokenizer.eos_token_id])
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


def pretrain(model, tokenizer, config: TinyModelConfig, progress: bool = True) -> list[float]:
    """A plain training loop with a fixed step count (so the model is the same on every machine): AdamW, warm-up then cosine decay. Returns losses."""
    from tqdm.auto import tqdm

    blocks = _blocks(tokenizer, pretraining_corpus(config), config.block_size)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, config.max_steps // 20)
    losses = []
    model.train()
    bar = tqdm(range(config.max_steps), desc="pretraining the tiny model", disable=not progress)
    for step in bar:
        lr = (
            config.learning_rate
            * min(1.0, (step + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * step / config.max_steps))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        batch = blocks[torch.randint(len(blocks), (config.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def build_tiny_model(config: TinyModelConfig, out_dir: Path, progress: bool = True) -> Path:
    """Train the tokenizer, pretrain the model, save both (and a report) to `out_dir`."""
    from transformers import LlamaForCausalLM

    seed_everything(config.seed)
    start = time.monotonic()
    threads = torch.get_num_threads()
    # A fixed thread count keeps the float reductions, and so the model, the same on every machine.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        tokenizer = tiny_tokenizer(config)
        model = LlamaForCausalLM(tiny_llama_config(config, tokenizer))
        losses = pretrain(model, tokenizer, config, progress=progress)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": len(losses),
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "losses": losses,
        "seconds": time.monotonic() - start,
    }
    (out_dir / "pretraining.json").write_text(json.dumps(report, indent=2))
    return out_dir


def tiny_model_path(
    config: TinyModelConfig | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """The cached embedded model, built on first use (about 1-2 minutes on a 2-core CPU).

    Built in a temporary folder and renamed into place, so a crash never leaves a half-built cache.
    """
    config = config or TinyModelConfig()
    cache = Path(cache_dir or os.environ.get("AIMO_CACHE_DIR") or project_root() / "cache")
    path = cache / f"tiny-llama-{config.key()}"
    if _is_built(path):
        return path
    cache.mkdir(parents=True, exist_ok=True)
    # One builder at a time on this machine, whatever the cache folder: parallel builds on a 2-core CPU
    # slow each other down twentyfold. The others wait, then reuse the result when they share the cache.
    with open(Path(tempfile.gettempdir()) / f"aimo-tiny-llama-{config.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_built(path):
            return path
        shared = project_root() / "cache" / path.name
        if shared != path and _is_built(shared):  # the same model, already built in the project's cache
            shutil.copytree(shared, path)
            return path
        for stale in cache.glob(f".building-{config.key()}-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".building-{config.key()}-"))
        try:
            build_tiny_model(config, tmp, progress=progress)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def _is_built(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "pretraining.json").is_file()


# ---------------------------------------------------------------- loading any model


def resolve_model(name: str) -> str:
    """`tiny` → the cached embedded model; a local folder or an attached Kaggle Model → its path;
    anything else is taken as a Hugging Face hub id."""
    if name == TINY:
        return str(tiny_model_path())
    local = find_model_dir(name)
    return str(local) if local else name


QUANTIZATIONS = ("none", "8bit", "4bit", "nf4", "fp4", "nf4-dq")


def quantization_config(kind: str, compute_dtype: torch.dtype | None = None):
    """bitsandbytes settings by name: `8bit` is LLM.int8; `4bit` is QLoRA's (nf4 + double quantization);
    `nf4`, `fp4` and `nf4-dq` name the 4-bit variants notebook 04 compares. `none` → None."""
    from transformers import BitsAndBytesConfig

    if kind in ("none", "16bit", None):
        return None
    if kind not in QUANTIZATIONS:
        raise ValueError(f"QUANTIZATION must be one of {QUANTIZATIONS}, got {kind!r}")
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute_dtype = compute_dtype or pick_dtype()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="fp4" if kind == "fp4" else "nf4",
        bnb_4bit_use_double_quant=kind in ("4bit", "nf4-dq"),
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(path: str):
    """The model's tokenizer with a pad token (EOS when it has none, as for DeepSeek-Math) and a chat template."""
    from transformers import AutoTokenizer

    from utils.prompts import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def device_map_for(device: torch.device):
    """One GPU: everything on it. Several (Kaggle's 2x T4): spread the layers over all of them
    (naive model parallelism, so a model larger than one card's memory still loads)."""
    if device.type != "cuda":
        return {"": "cpu"}
    return "auto" if torch.cuda.device_count() > 1 else {"": 0}


def cpu_4bit_fallback(model) -> int:
    """Route 4-bit layers the CPU kernel cannot take to bitsandbytes' generic path; returns how many.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks each 4-bit weight at the first inference call,
    which needs out_features % 32 == 0 and in_features % blocksize == 0; the tiny model's 352-wide MLP
    fails that and would crash generate. The generic path computes the same product.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            state = module.weight.quant_state
            out_features, in_features = state.shape
            if out_features % 32 or in_features % state.blocksize:
                module.support_avx512bf16_for_cpu = False
                count += 1
    return count


def load_model(name: str, quantization: str = "none", device: str | None = None):
    """Load a causal LM and its tokenizer: `tiny`, a local folder, an attached Kaggle Model, or a hub id;
    a saved PEFT adapter's folder gives its base with the adapter on top (`load_adapter`).

    The compute dtype comes from the hardware (bf16 / fp16 / fp32); `quantization` picks a bitsandbytes
    4- or 8-bit base (see `quantization_config`).
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    if adapter_base(path):  # a saved PEFT adapter: its base, then the adapter on top
        return load_adapter(path, quantization, device=device)
    dev = torch.device(device) if device else pick_device()
    dtype = pick_dtype(dev)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        quantization_config=quantization_config(quantization, dtype),
        device_map=device_map_for(dev),
        attn_implementation="sdpa",
    )
    model.generation_config.pad_token_id = model.generation_config.pad_token_id or model.config.eos_token_id
    if quantization not in ("none", "16bit", None) and dev.type == "cpu":
        cpu_4bit_fallback(model)  # bitsandbytes' repacked CPU 4-bit kernels fail on odd layer widths
    return model, load_tokenizer(path)


def adapter_base(path: str) -> str | None:
    """The base model a saved PEFT adapter folder was trained on, or None if `path` is not an adapter."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


def adapter_base_model(adapter_dir: str | os.PathLike, fallback: str | None = None) -> str:
    """The base model an adapter was trained on, as its `adapter_config.json` records it, when this
    machine has it; else `fallback` (the same model under another path, e.g. attached differently on Kaggle)."""
    recorded = adapter_base(str(adapter_dir))
    if recorded is None:
        raise FileNotFoundError(
            f"{Path(adapter_dir) / 'adapter_config.json'} is missing: not a saved adapter"
        )
    if fallback is None or recorded == TINY or find_model_dir(recorded) is not None:
        return recorded
    return fallback


def load_adapter(
    adapter_dir: str | os.PathLike,
    quantization: str = "none",
    base: str | None = None,
    device: str | None = None,
    trainable: bool = False,
):
    """(peft model, tokenizer): a saved PEFT adapter, kept separate, on its base model quantized as asked.

    The one way the series loads an adapter. `base` stands in for the recorded base when this machine
    lacks it (see `adapter_base_model`); `trainable` leaves the adapter's weights trainable, to go on
    training them (GRPO after SFT). The model comes back in eval mode; a trainer switches it to train.
    """
    from peft import PeftModel

    with quiet_peft_loading():
        model, tokenizer = load_model(adapter_base_model(adapter_dir, base), quantization, device)
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    return peft_model.eval(), tokenizer


@contextmanager
def quiet_peft_loading() -> Iterator[None]:
    """peft 0.21 reads a transformers 5 property that warns it is deprecated: noise in stored outputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["retrain-tokenizer"]:
        train_tokenizer(
            pretraining_corpus(TinyModelConfig()), TinyModelConfig().vocab_size
        ).backend_tokenizer.save(str(TOKENIZER_FILE))
        print(f"wrote {TOKENIZER_FILE}; bump TinyModelConfig.version so the model is rebuilt")
    else:
        sys.exit("usage: python -m utils.modeling retrain-tokenizer")
