"""Shared package of the AIMO parameter-efficient fine-tuning series.

One module per concept: `data` (loaders and the record schema), `dedup` (deduplication and
decontamination), `synthetic` (the embedded word problems), `prompts`, `answers`, `modeling`
(the embedded tiny model and real-model loading), `training`, `evaluation`, `generation`,
`sandbox`, `solver`, `gateway`, `submission`, `quantization`, `comparison`, `memory`, `recipes`, `io`, `paths`.
"""

import os

# The CPU settings every run of the series shares; the Makefile exports the same values, and importing
# `utils` before torch applies them to a notebook opened by hand. Existing values win.
CPU_ENVIRONMENT = {
    # OpenMP's default busy-waiting makes torch up to a hundred times slower on a 2-core machine shared with
    # another process (a kernel, a test, bitsandbytes' CPU kernels). Read when torch loads.
    "OMP_WAIT_POLICY": "PASSIVE",
    # The math libraries' kernels pinned to the AVX2 level: AVX-512 kernels sum in another order, so a
    # training run on an AVX-512 machine and on an AVX2-only one (an AMD EPYC) would end with other
    # weights, and the stored notebook outputs would match on one of them only. Read at first use.
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
for _name, _value in CPU_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
