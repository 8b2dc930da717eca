"""One attention call per window size in the Qwen2-VL / Qwen2.5-VL vision towers.

transformers' Qwen2-VL and Qwen2.5-VL vision attention, under SDPA, splits each layer's
patches into windows (112-pixel windows in Qwen2.5-VL's windowed layers, one window per
image in full-attention layers) and calls attention once per window: about 10,700 calls
per 8 pages in ColQwen2.5-3B, which leaves an H200 launch-bound (benchmarks/README.md).
Windows of one size are independent sequences of equal length, so they stack into one
batch: :func:`window_attention` makes one ``scaled_dot_product_attention`` call per
distinct window length (a handful per layer: full windows, the right and bottom edges
and the corner), the same arithmetic as the stock path.

It is registered in transformers' own attention registry (``AttentionInterface``) under
:data:`WINDOW_ATTENTION`. The vision attention hands a layer's window bounds
(``cu_seq_lens_q``) to one call only when its attention implementation's name contains
"flash" (``is_flash_attention_requested``), hence the name; and because
``from_pretrained`` and ``set_attn_implementation`` send any such name to the hub-kernel
loader (which needs a network and the ``kernels`` package), :func:`use_window_attention`
selects it on the loaded model's vision config instead. The language model keeps its
own implementation (SDPA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WINDOW_ATTENTION = "pagelens_flash_windows"
# The vision towers that read window bounds from the attention call (config model_type).
WINDOWED_VISION = frozenset({"qwen2_vl", "qwen2_5_vl"})


def window_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attend within each window of a packed sequence, one SDPA call per window length.

    Args:
        module: the attention module (unused; the registry's signature).
        query: ``(1, heads, seq, head_dim)``, windows packed along ``seq``.
        key: as ``query``.
        value: as ``query``.
        attention_mask: must be ``None``: windows are the only structure.
        scaling: softmax scale (``head_dim ** -0.5`` by default).
        dropout: dropout probability (training only).
        cu_seq_lens_q: ``(windows + 1,)`` cumulative window bounds; ``None`` for one
            window over the whole sequence.
        cu_seq_lens_k: the same bounds (keys are windowed as queries are).
        kwargs: the rest of the registry's arguments (``max_length_q``...), unused.

    Returns:
        ``(output, None)``; output ``(1, seq, heads, head_dim)``, as flash attention's.

    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    if attention_mask is not None:
        raise ValueError(f"{WINDOW_ATTENTION} attends within windows only; got an attention mask")
    if cu_seq_lens_k is not None and cu_seq_lens_q is not None:
        if cu_seq_lens_k is not cu_seq_lens_q and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
            raise ValueError(f"{WINDOW_ATTENTION} needs the same windows for queries and keys")
    q, k, v = query[0], key[0], value[0]  # (heads, seq, head_dim)
    heads, seq, head_dim = q.shape
    bounds = [0, seq] if cu_seq_lens_q is None else [int(b) for b in cu_seq_lens_q.tolist()]
    by_length: dict[int, list[int]] = {}  # window length -> window starts
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    p = dropout if getattr(module, "training", False) else 0.0
    out = q.new_empty(seq, heads, head_dim)
    for length, starts in by_length.items():
        n = len(starts)
        rows: slice | torch.Tensor
        if starts == list(range(starts[0], starts[0] + n * length, length)):  # back to back
            rows = slice(starts[0], starts[0] + n * length)
        else:
            first = torch.tensor(starts, device=q.device)[:, None]
            rows = (first + torch.arange(length, device=q.device)).reshape(-1)  # (n * length,)
        # (heads, n * length, d) -> (n, heads, length, d)
        qw, kw, vw = (
            _take(t, rows).reshape(heads, n, length, head_dim).transpose(0, 1) for t in (q, k, v)
        )
        ow = F.scaled_dot_product_attention(qw, kw, vw, dropout_p=p, scale=scaling)
        ow = ow.permute(0, 2, 1, 3).reshape(n * length, heads, head_dim)
        if isinstance(rows, slice):
            out[rows] = ow
        else:
            out.index_copy_(0, rows, ow)
    return out.unsqueeze(0), None


def _take(t: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of the sequence axis of a ``(heads, seq, head_dim)`` tensor."""
    return t[:, rows] if isinstance(rows, slice) else t.index_select(1, rows)


def register() -> None:
    """Register :func:`window_attention` in transformers' attention registry (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(WINDOW_ATTENTION, window_attention)


def use_window_attention(model: Any) -> bool:
    """Select :data:`WINDOW_ATTENTION` for a loaded model's Qwen2(.5)-VL vision tower.

    Only a vision tower on SDPA is switched (an explicit flash-attention or eager
    choice is kept). Returns whether it was.
    """
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    if getattr(model.config, "model_type", None) not in WINDOWED_VISION or vision is None:
        return False
    if vision._attn_implementation not in ("sdpa", None):
        return False
    register()
    vision._attn_implementation = WINDOW_ATTENTION
    return True


def use_stock_attention(model: Any) -> None:
    """Put a vision tower switched by :func:`use_window_attention` back on SDPA."""
    vision = model.config.vision_config
    if vision._attn_implementation == WINDOW_ATTENTION:
        vision._attn_implementation = "sdpa"
