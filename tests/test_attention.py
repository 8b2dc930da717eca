"""Batched window attention in the Qwen2(.5)-VL vision towers against the stock SDPA path."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pagelens.encoders import attention, load_encoder
from tests.tiny_models import build_tiny_checkpoint, tiny_pages

# two pages of one size (batched together), odd sizes (edge and corner windows)
SIZES = [(300, 400), (300, 400), (250, 180), (1275, 1650), (90, 500)]


def _deeper(family: str, folder: Path) -> Path:
    """The tiny checkpoint with three vision layers (two windowed) and larger images.

    Missing weights of the added layers are random-initialised at load: each test loads
    once and switches only the attention, so both paths see the same weights.
    """
    base = build_tiny_checkpoint(family, folder / "base")
    out = folder / "deep"
    shutil.copytree(base, out)
    config = json.loads((out / "config.json").read_text())
    vision = config["vision_config"]
    vision["depth"] = 3
    if family == "colqwen2_5":
        vision["fullatt_block_indexes"] = [1]
    (out / "config.json").write_text(json.dumps(config))
    processor = json.loads((out / "processor_config.json").read_text())
    # up to 16 x 16 patches of 14 px: several windows of 4 x 4 patches
    processor["image_processor"]["size"]["longest_edge"] = 224 * 224
    (out / "processor_config.json").write_text(json.dumps(processor))
    return out


@pytest.mark.parametrize("family", ["colqwen2_5", "colqwen2"])
def test_window_attention_matches_the_stock_path(family, tmp_path, monkeypatch):
    enc = load_encoder(str(_deeper(family, tmp_path)), device="cpu")
    net = enc._model
    attention.use_stock_attention(net)
    assert net.config.vision_config._attn_implementation == "sdpa"
    pages = tiny_pages(SIZES)
    stock = enc.encode_pages(pages)

    calls: list[list[int]] = []

    def counted(module, query, key, value, **kwargs):
        cu = kwargs.get("cu_seq_lens_q")
        calls.append((cu[1:] - cu[:-1]).tolist())
        return attention.window_attention(module, query, key, value, **kwargs)

    assert attention.use_window_attention(net)
    from transformers import AttentionInterface

    AttentionInterface.register(attention.WINDOW_ATTENTION, counted)
    try:
        windows = enc.encode_pages(pages)
    finally:
        attention.register()
    depth = 3
    assert len(calls) == depth * 2  # one call per layer (encode_pages batches 4 + 1 pages)
    if family == "colqwen2_5":  # windowed layers: many windows, few lengths
        windowed = max(calls, key=len)
        assert len(windowed) > 10 and len(set(windowed)) < len(windowed)
    for a, b in zip(stock, windows, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    attention.use_stock_attention(net)
    again = enc.encode_pages(pages)
    assert all(np.array_equal(a, b) for a, b in zip(stock, again, strict=True))


def test_window_attention_equals_one_sdpa_call_per_window():
    torch.manual_seed(0)
    heads, dim = 2, 8
    lengths = [16, 16, 8, 16, 4, 8]
    seq = sum(lengths)
    q, k, v = (torch.randn(1, heads, seq, dim) for _ in range(3))
    cu = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32)
    out, weights = attention.window_attention(None, q, k, v, scaling=0.3, cu_seq_lens_q=cu)
    assert weights is None and out.shape == (1, seq, heads, dim)
    want = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        o = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], scale=0.3
        )
        want.append(o.transpose(1, 2))
    torch.testing.assert_close(out, torch.cat(want, dim=1), atol=1e-6, rtol=0)


def test_window_attention_refuses_a_mask():
    q = torch.zeros(1, 1, 4, 2)
    with pytest.raises(ValueError, match="mask"):
        attention.window_attention(None, q, q, q, attention_mask=torch.ones(1, 1, 4, 4))


def test_other_families_and_explicit_choices_are_left_alone(tmp_path):
    enc = load_encoder(str(build_tiny_checkpoint("colidefics3", tmp_path / "m")), device="cpu")
    assert not attention.use_window_attention(enc._model)
