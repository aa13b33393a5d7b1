"""Shared package of the AIMO parameter-efficient fine-tuning series.

One module per concept: `data` (loaders and the record schema), `dedup` (deduplication and
decontamination), `synthetic` (the embedded word problems), `prompts`, `answers`, `modeling`
(the embedded tiny model and real-model loading), `training`, `evaluation`, `generation`,
`sandbox`, `solver`, `gateway`, `submission`, `quantization`, `comparison`, `kaggle`, `io`, `paths`.
"""

__version__ = "0.1.0"
