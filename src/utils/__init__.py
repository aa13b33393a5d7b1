"""Shared package of the AIMO parameter-efficient fine-tuning series.

One module per concept: `data` (loaders and the record schema), `dedup` (deduplication and
decontamination), `synthetic` (the embedded word problems), `prompts`, `answers`, `modeling`
(the embedded tiny model and real-model loading), `training`, `evaluation`, `generation`,
`sandbox`, `solver`, `gateway`, `submission`, `quantization`, `comparison`, `kaggle`, `io`, `paths`.
"""

import os

# Set before torch loads: with OpenMP's default busy-waiting, a 2-core machine shared with another
# process (a kernel, a test, bitsandbytes' CPU kernels) runs torch up to a hundred times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
