"""Where LM Studio finds a GGUF model: ``<models folder>/<publisher>/<model name>/<file>.gguf``.

LM Studio lists every ``.gguf`` file two folders below its models folder (``~/.lmstudio/models``
by default, changeable in its My Models tab), the first folder naming the publisher and the
second the model. An export to OUT writes::

    OUT/tuner/<run>-step<N>/<run>-step<N>-F16.gguf

so OUT can be chosen as LM Studio's models folder itself (when it does not exist yet), or its
``tuner`` folder moved into the models folder; ``lms import FILE.gguf`` also takes the file. LM
Studio reads the chat template, the special tokens and the stop token from the GGUF's metadata.
"""

from __future__ import annotations

from pathlib import Path

PUBLISHER = "tuner"


def gguf_path(root: Path, model_name: str, quant: str) -> Path:
    """The file's place under ``root`` (the models folder), its name ending in the type's name."""
    return root / PUBLISHER / model_name / f"{model_name}-{quant.upper()}.gguf"
