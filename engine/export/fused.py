"""A run's adapter fused into its base model, the way ``mlx_lm.fuse`` does it.

mlx-lm loads adapters from a folder holding ``adapter_config.json`` and ``adapters.safetensors``.
A checkpoint folder holds only the weights, so the run's adapter config and the chosen weights
are copied into a small folder in the export's staging area first; mlx-lm's own loader then
checks and applies them, and the LoRA/DoRA layers fuse with their own ``fuse``.

Fusing for GGUF (and a dequantized mlx folder): the model is computed in float32 first, as training on the CPU
does (:func:`engine.model.load.cast_model`: a quantized base, QLoRA's, dequantized in float32), and
the adapter's update is added there. Fusing in a bfloat16 or 4-bit base's own precision would
round the small update away; this way the weights are rounded once, when the file is written.
The price is memory: the model is held in float32 (4 bytes a weight) while it is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.errors import UserError, first_line
from engine.export.source import ADAPTER_CONFIG, ExportSource
from engine.files import atomic_write_json
from engine.runs.checkpoints import WEIGHTS


def adapter_folder(source: ExportSource, staging: Path) -> Path:
    """A folder mlx-lm loads as ``--adapter-path``: the run's adapter config, the chosen weights."""
    folder = staging / "adapter"
    folder.mkdir()
    atomic_write_json(folder / ADAPTER_CONFIG, source.adapter_config)
    shutil.copyfile(source.weights, folder / WEIGHTS)
    return folder


def fused_float32(source: ExportSource, staging: Path):
    """(model, tokenizer, config, stored dtype): the base with the adapter fused in, in float32,
    and the floating dtype most of the base's weights are stored in (to cast back to)."""
    from collections import Counter

    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load

    from engine.model.load import cast_model

    adapters = adapter_folder(source, staging)
    try:
        model, tokenizer, config = load(source.base, adapter_path=str(adapters), return_config=True)
    except ValueError as e:  # mlx-lm: adapters that do not fit the base
        raise _not_loading(source, e) from None
    dtypes = Counter(v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating))
    cast_model(model, mx.float32)
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    fused = [(name, module.fuse()) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return model, tokenizer, config, dtypes.most_common(1)[0][0] if dtypes else mx.float32


def write_mlx(source: ExportSource, staging: Path, target: Path, dequantize: bool) -> None:
    """A fused mlx-lm model folder at ``target``: :func:`engine.model.load.fuse` (mlx-lm's fuse,
    in the stored dtype and quantization), or with ``dequantize`` fused in float32 and stored in
    the base's float dtype (a quantized base's scales' dtype), with no quantized layer left."""
    from engine.model.load import fuse

    if not dequantize:
        adapters = adapter_folder(source, staging)
        try:
            fuse(source.base, adapters, target)
        except ValueError as e:  # mlx-lm: adapters that do not fit the base
            raise _not_loading(source, e) from None
        return
    from mlx_lm.utils import save

    from engine.model.load import cast_model

    model, tokenizer, config, stored = fused_float32(source, staging)
    cast_model(model, stored)
    save(target, source.base, model, tokenizer, config, donate_model=False)


def _not_loading(source: ExportSource, error: Exception) -> UserError:
    return UserError(f"{source.weights}: the adapter does not load onto {source.base}: {first_line(error)}")
