"""utils.likelihood: the loss on chosen tokens only, as perplexity of completions and as mean loss of texts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from utils.likelihood import IGNORE, completion_perplexity, masked_nll, text_loss
from utils.modeling import load_model, load_tokenizer

pytestmark = pytest.mark.slow


class _FixedDistribution(torch.nn.Module):
    """A 'model' predicting the same next-token distribution everywhere: perplexity is known in closed form.
    `virtual` extra positions stand in front, as prompt tuning's virtual tokens do."""

    def __init__(self, log_probs: torch.Tensor, virtual: int = 0):
        super().__init__()
        self.log_probs = torch.nn.Parameter(log_probs, requires_grad=False)
        self.virtual = virtual

    def forward(self, input_ids, attention_mask=None):
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.log_probs.expand(batch, length + self.virtual, -1).clone())


def test_perplexity_scores_the_completion_only_on_a_known_case(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    vocab = len(tokenizer)
    pairs = [
        ("User: a long prompt that must not count\n\nAssistant:", " 12"),
        ("User: hi\n\nAssistant:", " 7 + 8 = 15"),
    ]
    uniform = _FixedDistribution(torch.zeros(vocab))
    assert completion_perplexity(uniform, tokenizer, pairs) == pytest.approx(vocab, rel=1e-5)

    log_probs = torch.log_softmax(torch.linspace(-3, 3, vocab), dim=0)
    model = _FixedDistribution(log_probs)
    targets = []
    for prompt, completion in pairs:
        n_prompt = len(tokenizer(prompt)["input_ids"])
        targets += tokenizer(prompt + completion)["input_ids"][n_prompt:]
    expected = math.exp(-log_probs[targets].mean().item())
    assert completion_perplexity(model, tokenizer, pairs, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert completion_perplexity(model, tokenizer, pairs, batch_size=1) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        completion_perplexity(model, tokenizer, [])


def test_masked_nll_counts_only_labelled_positions_and_skips_virtual_tokens():
    log_probs = torch.log_softmax(torch.linspace(-2, 2, 5), dim=0)
    ids = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3], [IGNORE, 3, IGNORE, IGNORE]])
    for virtual in (0, 3):
        total, count = masked_nll(
            _FixedDistribution(log_probs, virtual), [(ids, torch.ones_like(ids), labels)]
        )
        assert count == 3
        assert total == pytest.approx(-(log_probs[2] + log_probs[3] + log_probs[3]).item(), rel=1e-6)


def test_text_loss_matches_the_models_own_loss_and_keeps_its_mode(tiny_model):
    from utils.comparison import forgetting_texts

    model, tokenizer = load_model(str(tiny_model))
    text = forgetting_texts(2)[0]
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    model.train()
    assert text_loss(model, tokenizer, [text]) == pytest.approx(expected, rel=1e-4)
    assert model.training, "the probe runs in eval mode and gives the model back as it found it"
    texts = forgetting_texts(6)  # padding in a batch must not change the per-token loss
    pooled = text_loss(model, tokenizer, texts, batch_size=6)
    assert pooled == pytest.approx(text_loss(model, tokenizer, texts, batch_size=1), rel=1e-4)
