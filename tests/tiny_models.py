"""Tiny random-init ColPali-family checkpoints, built offline (well under a second each).

``FAMILIES`` are the multi-vector (Col*) ones; ``BI_FAMILIES`` their single-vector twins,
built from the same configs with colpali-engine's Bi* classes.

Each builder shrinks the family's real config (hidden size 32, one layer, a small vision
tower, small images), trains a byte-level BPE tokenizer on the spot with the family's
special tokens, configures the family's processor small, and writes model + processor
with ``save_pretrained``. The folder then loads through the same ``from_pretrained`` path
as a real checkpoint. Weights are random but seeded: the same ``(family, seed)`` gives the
same vectors; two seeds give two different checkpoints.

Usage from a test::

    from tests.tiny_models import build_tiny_checkpoint, tiny_pages
    folder = build_tiny_checkpoint("colqwen2_5", tmp_path / "m")
    encoder = load_encoder(str(folder), device="cpu")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pagelens.types import Page

FAMILIES: tuple[str, ...] = (
    "colpali",
    "colqwen2",
    "colqwen2_5",
    "colqwen3",
    "colqwen3_5",
    "colgemma3",
    "colidefics3",
    "colmodernvbert",
)
# The single-vector (Bi*) twins: the same tiny configs, the Bi* model and processor.
BI_FAMILIES: tuple[str, ...] = (
    "bipali",
    "biqwen2",
    "biqwen2_5",
    "biqwen3",
    "biqwen3_5",
    "bigemma3",
    "biidefics3",
    "bimodernvbert",
)

_CORPUS = [
    "Describe the image.",
    "User: Assistant: user assistant",
    "What is the total revenue reported in 2020 and 2021?",
    "the quick brown fox jumps over the lazy dog",
    "Query: which table shows the annual growth of sales by region",
    "figure chart page document report summary",
]
_ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
IDEFICS_SPECIALS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *_ROW_COL,
]


def tiny_tokenizer(specials: list[str], **special_roles: str) -> Any:
    """A byte-level BPE tokenizer trained on a few sentences, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, **special_roles)


def _classes(model: str, processor: str, *, bi: bool) -> tuple[Any, Any]:
    """colpali-engine's ``Col*`` classes, or their ``Bi*`` twins (same config, no head)."""
    import colpali_engine.models as models

    if bi:
        model, processor = "Bi" + model.removeprefix("Col"), "Bi" + processor.removeprefix("Col")
    return getattr(models, model), getattr(models, processor)


def _build_colqwen(folder: Path, *, v2_5: bool, bi: bool = False) -> None:
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = tiny_tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        # head_dim 16 -> 8 rotary frequencies split over (temporal, height, width)
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, 3],
        },
        "max_position_embeddings": 1024,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if v2_5:
        from transformers import Qwen2_5_VLConfig

        model_cls, proc_cls = _classes("ColQwen2_5", "ColQwen2_5_Processor", bi=bi)

        vision = {
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    else:
        from transformers import Qwen2VLConfig

        model_cls, proc_cls = _classes("ColQwen2", "ColQwen2Processor", bi=bi)

        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2}
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    model = model_cls(config)
    # 28 px per merged token: a page of at most 112 x 112 px -> at most 16 image tokens.
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=112 * 112)
    processor = proc_cls(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
    )
    with torch.no_grad():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_colqwen2(folder: Path) -> None:
    _build_colqwen(folder, v2_5=False)


def _build_colqwen2_5(folder: Path) -> None:
    _build_colqwen(folder, v2_5=True)


def _build_colqwen3(folder: Path, *, v3_5: bool, bi: bool = False) -> None:
    """ColQwen3 (Qwen3-VL) or ColQwen3.5 (Qwen3.5: linear- and full-attention layers)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLVideoProcessor

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = tiny_tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        },
        "max_position_embeddings": 1024,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    # 16 px patches merged 2 x 2: 32 px per token; 64 learned positions (8 x 8 grid).
    vision: dict[str, Any] = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 32,
        "patch_size": 16,
        "num_position_embeddings": 64,
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if v3_5:
        model_cls, proc_cls = _classes("ColQwen3_5", "ColQwen3_5Processor", bi=bi)
        from transformers.models.qwen3_5 import Qwen3_5Config as config_cls

        # One gated-delta-net (linear attention) layer and one full-attention layer.
        text.update(
            num_hidden_layers=2,
            layer_types=["linear_attention", "full_attention"],
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_num_key_heads=2,
            linear_num_value_heads=2,
        )
        text["rope_parameters"]["partial_rotary_factor"] = 1.0
    else:
        model_cls, proc_cls = _classes("ColQwen3", "ColQwen3Processor", bi=bi)
        from transformers import Qwen3VLConfig as config_cls

        vision["deepstack_visual_indexes"] = [0]
    model = model_cls(config_cls(text_config=text, vision_config=vision, **common))
    # 32 px per merged token: a page of at most 128 x 128 px -> at most 16 image tokens.
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, min_pixels=32 * 32 * 4, max_pixels=128 * 128
    )
    processor = proc_cls(
        image_processor=image_processor, tokenizer=tok, video_processor=Qwen3VLVideoProcessor()
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_colqwen3_only(folder: Path) -> None:
    _build_colqwen3(folder, v3_5=False)


def _build_colqwen3_5(folder: Path) -> None:
    _build_colqwen3(folder, v3_5=True)


# Gemma3's chat template, cut to what ColGemmaProcessor3 renders (user text and images).
_GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _build_colgemma3(folder: Path, *, bi: bool = False) -> None:
    import torch
    from transformers import Gemma3Config, Gemma3ImageProcessor

    roles = {
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    }
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    specials += roles.values()
    tok = tiny_tokenizer(
        specials,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        extra_special_tokens=roles,
    )
    tok.chat_template = _GEMMA3_CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
            "pad_token_id": ids["<pad>"],
            "bos_token_id": ids["<bos>"],
            "eos_token_id": ids["<eos>"],
        },
        # 32 px images of 8 px patches: 16 patches, average-pooled to 4 tokens per image
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        mm_tokens_per_image=4,
        image_token_index=ids["<image_soft_token>"],
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
    )
    model_cls, proc_cls = _classes("ColGemma3", "ColGemmaProcessor3", bi=bi)
    model = model_cls(config)
    # transformers initialises Gemma3's image projection to zeros (every image alike):
    # random weights, so that distinct pages give distinct vectors.
    with torch.no_grad():
        model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.5)
    processor = proc_cls(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tok,
        chat_template=_GEMMA3_CHAT_TEMPLATE,
        image_seq_length=4,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_colidefics3(folder: Path, *, bi: bool = False) -> None:
    from transformers import Idefics3Config, Idefics3ImageProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *IDEFICS_SPECIALS]
    tok = tiny_tokenizer(
        specials, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    config = Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "pad_token_id": tok.pad_token_id,
        },
        # 32 px tiles of 8 px patches: 16 patches, pixel-shuffled by 2 -> 4 tokens per tile
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
    )
    model_cls, proc_cls = _classes("ColIdefics3", "ColIdefics3Processor", bi=bi)
    model = model_cls(config)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor = proc_cls(image_processor=image_processor, tokenizer=tok, image_seq_len=4)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_colmodernvbert(folder: Path, *, bi: bool = False) -> None:
    from transformers import Idefics3ImageProcessor, ModernVBertConfig

    specials = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "<|begin_of_text|>", *IDEFICS_SPECIALS]
    tok = tiny_tokenizer(
        specials, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    config = ModernVBertConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 1024,
            "local_attention": 16,
            "pad_token_id": ids["[PAD]"],
            "bos_token_id": ids["[CLS]"],
            "cls_token_id": ids["[CLS]"],
            "eos_token_id": ids["[SEP]"],
            "sep_token_id": ids["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        pixel_shuffle_factor=2,
        image_token_id=ids["<image>"],
    )
    model_cls, proc_cls = _classes("ColModernVBert", "ColModernVBertProcessor", bi=bi)
    model = model_cls(config)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor = proc_cls(image_processor=image_processor, tokenizer=tok, image_seq_len=4)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_colpali(folder: Path, *, bi: bool = False) -> None:
    from colpali_engine.models import ColPaliProcessor
    from transformers import PaliGemmaConfig, SiglipImageProcessor

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    tok = tiny_tokenizer(
        specials, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # (32 px / 8 px patches) ** 2
    # BiPaliProcessor (ColPaliProcessor with a single-vector score) takes *args/**kwargs,
    # so transformers 5 cannot tell its tokenizer: the BiPali checkpoint uses ColPali's.
    model_cls, _ = _classes("ColPali", "ColPaliProcessor", bi=bi)
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tok)
    tok = processor.tokenizer  # the processor adds <loc....>/<seg...> tokens
    config = PaliGemmaConfig(
        text_config={
            "model_type": "gemma",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        projection_dim=32,
        hidden_size=32,
        vocab_size=len(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    model = model_cls(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "colpali": _build_colpali,
    "colqwen2": _build_colqwen2,
    "colqwen2_5": _build_colqwen2_5,
    "colqwen3": _build_colqwen3_only,
    "colqwen3_5": _build_colqwen3_5,
    "colgemma3": _build_colgemma3,
    "colidefics3": _build_colidefics3,
    "colmodernvbert": _build_colmodernvbert,
    "bipali": lambda folder: _build_colpali(folder, bi=True),
    "biqwen2": lambda folder: _build_colqwen(folder, v2_5=False, bi=True),
    "biqwen2_5": lambda folder: _build_colqwen(folder, v2_5=True, bi=True),
    "biidefics3": lambda folder: _build_colidefics3(folder, bi=True),
    "bimodernvbert": lambda folder: _build_colmodernvbert(folder, bi=True),
    "biqwen3": lambda folder: _build_colqwen3(folder, v3_5=False, bi=True),
    "biqwen3_5": lambda folder: _build_colqwen3(folder, v3_5=True, bi=True),
    "bigemma3": lambda folder: _build_colgemma3(folder, bi=True),
}


def build_tiny_checkpoint(family: str, folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-init checkpoint of ``family`` into ``folder`` and return it.

    Deterministic: the same ``(family, seed)`` gives byte-identical weights.
    """
    import torch

    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(_BUILDERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[family](folder)
    return folder


def load_with_reference(folder: Path) -> tuple[Any, Any, Any]:
    """Load a tiny checkpoint twice: as pagelens' encoder and as colpali-engine's own.

    Returns ``(encoder, model, processor)``: the model and processor classes are the
    ones pagelens picks from the checkpoint's config, loaded in float32 on CPU, the
    reference the conformance tests compare the encoder against.
    """
    import colpali_engine.models as models
    import torch

    from pagelens.encoders import load_encoder
    from pagelens.encoders.colpali import ColPaliEngineEncoder, detect_family
    from pagelens.encoders.loading import read_model_config, resolve_checkpoint

    encoder = load_encoder(str(folder), device="cpu", batch_size=4)
    assert isinstance(encoder, ColPaliEngineEncoder)
    fam = detect_family(read_model_config(resolve_checkpoint(str(folder))))
    model_cls = getattr(models, fam.model_class)
    extra: dict[str, Any] = {}
    if fam.single:  # BiQwen2(.5).from_pretrained needs key_mapping under transformers 5
        extra["key_mapping"] = dict(getattr(model_cls, "_checkpoint_conversion_mapping", {}))
    model = model_cls.from_pretrained(str(folder), dtype=torch.float32, **extra).eval()
    processor = getattr(models, fam.processor_class).from_pretrained(str(folder))
    return encoder, model, processor


def tiny_image(width: int, height: int, seed: int) -> Image.Image:
    """A seeded RGB noise image (distinct pages give distinct vectors)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def tiny_pages(sizes: list[tuple[int, int]], *, seed: int = 0) -> list[Page]:
    """One :class:`Page` per ``(width, height)``, each with a distinct noise image."""
    return [
        Page(
            doc_sha256=f"{i:064x}",
            doc_path=f"doc{i}.pdf",
            page_number=1,
            page_count=1,
            image=tiny_image(w, h, seed + i),
            width_pt=float(w),
            height_pt=float(h),
        )
        for i, (w, h) in enumerate(sizes)
    ]


if __name__ == "__main__":
    # python -m tests.tiny_models FAMILY FOLDER: a tiny checkpoint for smoke runs
    import sys

    if len(sys.argv) != 3 or sys.argv[1] not in _BUILDERS:
        sys.exit(f"usage: python -m tests.tiny_models {{{','.join(_BUILDERS)}}} FOLDER")
    print(build_tiny_checkpoint(sys.argv[1], Path(sys.argv[2])))
