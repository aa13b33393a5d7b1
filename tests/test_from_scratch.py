"""The notebooks' "from first principles" cells: LoRA, rsLoRA, the trainable count, a bottleneck adapter,
int8 and NF4 quantization written out beside the libraries' own code.

Each code cell tagged `from-scratch` in a notebook's jupytext source is extracted and executed alone, in a
fresh namespace (so it must be self-contained, as a reader copying it into a blank notebook needs), and the
values it computes are checked: the hand-written code must agree with peft's and bitsandbytes'.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TAG = "from-scratch"
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")


def from_scratch_cells(notebook: str) -> list[str]:
    """The code of every `# %%` cell whose header carries the tag (markdown cells never do)."""
    cells, header, lines = [], None, []
    for line in [*(NOTEBOOKS / notebook).read_text().splitlines(), "# %%"]:
        if line.startswith("# %%"):
            if header is not None and TAG in header and "[markdown]" not in header:
                cells.append("\n".join(lines))
            header, lines = line, []
        else:
            lines.append(line)
    return cells


def run_cell(code: str) -> tuple[dict, str]:
    """Execute one cell in a fresh namespace: (its variables, what it printed)."""
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__from_scratch__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<from-scratch cell>", "exec"), namespace)
    import matplotlib.pyplot as plt

    plt.close("all")
    return namespace, out.getvalue()


@pytest.fixture(scope="module")
def lora_cells():
    return [run_cell(code) for code in from_scratch_cells("02_lora_sft.py")]


@pytest.fixture(scope="module")
def quantization_cells():
    return [run_cell(code) for code in from_scratch_cells("04_quantized_inference.py")]


def test_cells_are_found():
    counts = {
        nb: len(from_scratch_cells(nb))
        for nb in ("02_lora_sft.py", "03_adapter_comparison.py", "04_quantized_inference.py")
    }
    assert counts == {"02_lora_sft.py": 3, "03_adapter_comparison.py": 1, "04_quantized_inference.py": 5}


def test_extraction_keeps_only_tagged_code_cells(tmp_path, monkeypatch):
    source = '# %% [markdown]\n# prose from-scratch\n\n# %% tags=["from-scratch"]\nx = 1\n\n# %%\ny = 2\n'
    (tmp_path / "nb.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "NOTEBOOKS", tmp_path)
    assert [c.strip() for c in from_scratch_cells("nb.py")] == ["x = 1"]


def test_lora_layer_by_hand_equals_peft(lora_cells):
    ns, printed = lora_cells[0]
    assert ns["step0_equal"] is True  # B = 0: the base layer's output, exactly
    assert ns["lora_max_diff"] < 1e-6  # measured: 0.0
    assert ns["ours"].scaling == ns["peft_lora"].scaling["default"] == 16 / 8
    assert "outputs agree to 1e-6: True" in printed
    # the hand-written layer's own arithmetic: B = 0 gives the base output; rsLoRA scales by alpha/sqrt(r)
    layer = ns["LoRALinear"](torch.nn.Linear(10, 6), r=4, alpha=8, rslora=True)
    assert layer.scaling == 8 / 2
    x = torch.randn(3, 10)
    assert torch.equal(layer(x), layer.base(x))
    with torch.no_grad():
        layer.B.fill_(1.0)
    assert not torch.allclose(layer(x), layer.base(x))
    assert layer.base.weight.requires_grad is False and layer.A.requires_grad and layer.B.requires_grad


def test_rslora_scaling_table(lora_cells):
    ns, printed = lora_cells[1]
    assert ns["lora_scalings"] == {4: 4.0, 16: 1.0, 64: 0.25}
    assert ns["rslora_scalings"] == {4: 8.0, 16: 4.0, 64: 2.0}
    sizes = ns["sizes"]  # an update of rank r with same-sized entries grows like sqrt(r)
    assert sizes[16] / sizes[4] == pytest.approx(2.0, rel=0.1)
    assert sizes[64] / sizes[4] == pytest.approx(4.0, rel=0.1)
    assert len(printed.strip().splitlines()) == 4


def test_trainable_count_of_deepseek_math_7b(lora_cells):
    ns, printed = lora_cells[2]
    assert ns["by_hand"] == ns["peft_trainable"] == 37_478_400
    assert ns["per_layer"] * 30 == 37_478_400
    assert "equal: True" in printed
    assert "37,478,400" in printed


def test_bottleneck_adapter_by_hand():
    from utils.adapters import BottleneckAdapter, BottleneckConfig

    (code,) = from_scratch_cells("03_adapter_comparison.py")
    ns, printed = run_cell(code)
    assert ns["unchanged_at_init"] is True
    assert ns["up_learns"] is True
    assert ns["adapter_params"] == 4096 * 64 + 64 + 64 * 4096 + 4096 == 528_448
    assert "31,706,880" in printed
    # the same idea as the series' bottleneck method: same size, same function once the weights are shared
    ours = ns["Bottleneck"](32, 4)
    theirs = BottleneckAdapter(32, BottleneckConfig(bottleneck_size=4))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    theirs.load_state_dict(ours.state_dict())
    h = torch.randn(2, 3, 32)
    assert torch.allclose(ours(h), theirs(h), atol=1e-6)
    assert not torch.allclose(ours(h), h)


def test_int8_by_hand_equals_bitsandbytes(quantization_cells):
    ns, printed = quantization_cells[0]
    assert ns["int8_codes_differ"] == 0
    assert ns["int8_max_diff"] < 1e-7  # measured: 7.5e-9 (float rounding) on weights of size 1e-2
    half_step = (ns["scale"] / 2).max().item()
    assert (ns["int8_by_hand"] - ns["W"]).abs().max().item() <= half_step * (1 + 1e-5)
    assert "agree to 1e-7: True" in printed


def test_nf4_levels_from_normal_quantiles(quantization_cells):
    ns, printed = quantization_cells[1]
    assert ns["nf4_levels_max_diff"] < 1e-6  # measured: 1.2e-7
    code = ns["nf4_code"]
    assert code.numel() == 16 and code[0] == -1 and code[-1] == 1 and (code == 0).sum() == 1
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7


def test_nf4_by_hand_equals_bitsandbytes(quantization_cells):
    ns, printed = quantization_cells[2]
    assert ns["nf4_index_differ"] == 0
    assert ns["nf4_max_diff"] == 0  # measured: identical
    assert ns["packed"].numel() == ns["W"].numel() // 2
    assert ns["state"].absmax.numel() == ns["W"].numel() // 64
    assert "dequantized weights equal: True" in printed


def test_quantization_errors(quantization_cells):
    ns, printed = quantization_cells[3]
    assert 0 < ns["int8_mae"] < ns["nf4_mae"]
    assert 5 < ns["nf4_mae"] / ns["int8_mae"] < 30  # measured: 12
    assert ns["fig"] is not None and "mean |error|" in printed


def test_bitsandbytes_configs_match_the_series(quantization_cells):
    from utils.modeling import quantization_config

    ns, printed = quantization_cells[4]
    configs = ns["bnb_configs"]
    assert set(configs) == {"16bit", "8bit", "nf4", "fp4", "nf4-dq"}
    assert configs["16bit"] is None and quantization_config("16bit") is None
    for name in ("8bit", "nf4", "fp4", "nf4-dq"):
        ours, series = configs[name], quantization_config(name, ns["compute"])
        for field in ns["fields"]:
            assert getattr(ours, field) == getattr(series, field), (name, field)
    assert "nf4-dq" in printed
