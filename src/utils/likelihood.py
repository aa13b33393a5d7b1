"""How likely a model finds a text: next-token loss on chosen tokens only, summed over batches.

One loop serves both figures the series reports: the perplexity of held-out solutions given their problems
(notebook 04; the prompt's tokens are not scored) and the mean loss of whole texts (the forgetting probe of
notebook 03; only padding is not scored).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch

IGNORE = -100  # a label the loss skips: torch's and transformers' convention

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, labels


def masked_nll(model, batches: Iterable[Batch]) -> tuple[float, int]:
    """(summed negative log-likelihood, count) of the next-token predictions whose label is not IGNORE."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for input_ids, attention_mask, labels in batches:
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            logits = logits[:, -labels.shape[1] :].float()  # prompt tuning prepends virtual tokens
            targets = labels[:, 1:].to(device)
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            ).item()
        count += int((targets != IGNORE).sum())
    return total, count


def completion_batches(tokenizer, pairs: list[tuple[str, str]], batch_size: int) -> Iterator[Batch]:
    """(prompt, completion) pairs tokenized together (as TRL does for prompt/completion data), right-padded,
    labelled on the completion's tokens only."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(pairs), batch_size):
        rows = []
        for prompt, completion in pairs[start : start + batch_size]:
            n_prompt = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
            ids = tokenizer(prompt + completion, add_special_tokens=True)["input_ids"]
            rows.append((ids, n_prompt))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(rows):  # right padding: positions start at 0 in every row
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
            mask[i, : len(ids)] = 1
        yield input_ids, mask, labels


def completion_perplexity(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16) -> float:
    """exp(mean negative log-likelihood) of each completion's tokens given its prompt: the model is scored
    on the solution, not on the question."""
    if not pairs:
        raise ValueError("completion_perplexity needs at least one (prompt, completion) pair")
    total, count = masked_nll(model, completion_batches(tokenizer, pairs, batch_size))
    if count == 0:
        raise ValueError("no completion tokens to score: every completion was empty")
    return math.exp(total / count)


def text_batches(tokenizer, texts: list[str], batch_size: int, max_length: int) -> Iterator[Batch]:
    """Whole texts, right-padded and truncated to `max_length` tokens, labelled everywhere but the padding."""
    tokenizer.padding_side = "right"
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        yield (
            enc["input_ids"],
            enc["attention_mask"],
            enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE),
        )


def text_loss(model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128) -> float:
    """Mean cross-entropy per token of `texts` (padding excluded): the forgetting probe. The model's
    train/eval mode is left as it was found."""
    was_training = model.training
    model.eval()
    try:
        total, count = masked_nll(model, text_batches(tokenizer, texts, batch_size, max_length))
    finally:
        model.train(was_training)
    return total / max(count, 1)
