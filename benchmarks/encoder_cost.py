"""What a real-size page encoder costs per page: this CPU (fp32, 2 threads) or a GPU.

No real weights are available offline, but compute cost does not depend on weight
values: each model is built with random weights from its REAL architecture config
(values below, with their sources) through the colpali-engine model class, and its
processor is built with the REAL image-processor settings, so that a page yields as
many visual tokens as with the real checkpoint. Only the tokenizer is a small one
trained on the spot (``tests/tiny_models.py``), with the family's special tokens; the
text embedding table is sized to that tokenizer (a lookup, whose cost does not depend
on the vocabulary size; this saves 0.3-1 GB of RAM). Pages are real mmlongbench pages
rendered by pagelens at 150 dpi and encoded through pagelens' own
``ColPaliEngineEncoder.encode_pages``, one page per call.

Each model runs in a child process. If the full model would not fit in the memory
available now (a guard: the OOM killer could hit other processes on a shared machine),
it is run at 1/4 and 1/2 of its depth instead and the time extrapolated linearly to
full depth (transformer blocks of one stack cost the same; ColQwen2.5's vision stack
keeps one full-attention block per 8); the table says which.

On a GPU (``--device cuda``, bfloat16 by default) the full model is built on the GPU
and timed per batch size (``--batch-sizes``): one warm-up batch, then all pages in
batches, ``torch.cuda.synchronize()`` around each; it reports pages/s, ms/page, the
CPU preprocessing share, peak GPU memory, and query encoding time (``--queries`` real
questions from ``benchmarks/gpu/queries.json``). Pages can come from PNGs saved by
``--save-images`` (a machine without poppler): ``benchmarks/gpu/run_gpu_check.sh``.

    python -m benchmarks.encoder_cost --pages 2
    python -m benchmarks.encoder_cost --save-images .gpu-pages --pages 16
    python -m benchmarks.encoder_cost --device cuda --images .gpu-pages --pages 16 \\
        --batch-sizes 1 8 16 --out encoder_cost_gpu.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MMLONGBENCH_PDFS,
    ROOT,
    command_line,
    default_out,
    median,
    module_command,
    table,
    write_json,
)

# -- real architecture configs --------------------------------------------------------------
# vidore/colSmol-256M = SmolVLM-256M (Idefics3) + LoRA + 128-d projection.
#   text (SmolLM2-135M): HuggingFaceTB/SmolVLM-256M-Instruct config.json, as copied in
#     https://huggingface.co/Mattimax/DATA-AI_Smol256M-Instruct/blob/main/config.json
#     (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 kv heads, head_dim 64,
#     scale_factor 4, image_token_id 49190).
#   vision: SigLIP base patch16/512 ("93M-parameter SigLIP base patch-16/512",
#     huggingface/blog smolervlm.md): hidden 768, intermediate 3072, 12 layers, 12 heads.
#   processor: size.longest_edge 2048, max_image_size.longest_edge 512, image_seq_len 64
#     (SmolVLM-256M preprocessor_config.json / processor_config.json, e.g.
#     https://huggingface.co/moot20/SmolVLM-256M-Base-MLX-4bits/blob/main/preprocessor_config.json,
#     https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/blob/main/processor_config.json).
SMOL: dict[str, Any] = {
    "text": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                 max_position_embeddings=8192, rms_norm_eps=1e-5),
    "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, image_size=512, patch_size=16),
    "scale_factor": 4,
    "longest_edge": 2048, "tile": 512, "image_seq_len": 64,
}  # fmt: skip
# vidore/colqwen2.5-v0.2 = Qwen2.5-VL-3B-Instruct + LoRA + 128-d projection.
#   Qwen/Qwen2.5-VL-3B-Instruct config.json, as copied in
#   https://huggingface.co/dahwinsingularity/vllm2/blame/main/config.json
#   (_name_or_path Qwen/Qwen2.5-VL-3B-Instruct) and a code-search copy of the full file:
#   text hidden 2048, intermediate 11008, 36 layers, 16 heads, 2 kv heads,
#   mrope_section [16, 24, 24]; vision depth 32, hidden 1280, intermediate 3420, 16 heads,
#   patch 14, merge 2, window 112, full attention in blocks 7/15/23/31, out_hidden 2048.
#   processor: 28 px per merged token; max_pixels = 768 * 28 * 28 (colpali-engine's
#   max_num_visual_tokens=768; see bytes_bench.py on why this value).
QWEN: dict[str, Any] = {
    "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                 rms_norm_eps=1e-6),
    "rope_theta": 1000000.0, "mrope_section": [16, 24, 24],
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                   out_hidden_size=2048, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, window_size=112, hidden_act="silu"),
    "fullatt_block_indexes": [7, 15, 23, 31],
    "min_pixels": 56 * 56, "max_pixels": 768 * 28 * 28,
}  # fmt: skip
# vidore/colpali-v1.3 = PaliGemma-3B-pt-448 + LoRA + 128-d projection.
#   https://huggingface.co/vidore/colpaligemma-3b-pt-448-base/blob/12c59eb7e23bc4c26876f7be7c17760d5d3a1ffa/config.json
#   text (Gemma-2B): hidden 2048, intermediate 16384, 18 layers, 8 heads, 1 kv head
#   (head_dim 256, Gemma's); vision (SigLIP so400m): hidden 1152, intermediate 4304,
#   27 layers, 16 heads, image 448, patch 14 -> 1024 image tokens; projection_dim 2048.
PALI: dict[str, Any] = {
    "text": dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                 num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                 max_position_embeddings=8192),
    "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                   num_attention_heads=16, image_size=448, patch_size=14, projection_dim=2048),
    "projection_dim": 2048, "image_seq_length": 1024,
}  # fmt: skip

MODELS = ("colsmol-256m", "colqwen2.5-3b", "colpali-v1.3")

# Real pages: (document, page) pairs, a text page and a slide first. The 12 after the
# first 4 are answer pages of mmlongbench-dev questions (qrels.tsv), one per document,
# chosen to mix page kinds and sizes (tables, charts, slides, manuals, brochures), so
# that batches on a GPU hold real page sizes, not one page repeated.
PAGES = (
    ("3M_2018_10K.pdf", 20),
    ("bigdatatrends-120723191058-phpapp02_95.pdf", 5),
    ("PG_2021.03.04_US-Views-on-China_FINAL.pdf", 9),
    ("2305.13186v3.pdf", 4),
    ("NETFLIX_2015_10K.pdf", 40),  # financial table
    ("reportq32015-151009093138-lva1-app6891_95.pdf", 7),  # slide, chart
    ("2303.05039v2.pdf", 4),  # paper, table
    ("honor_watch_gs_pro.pdf", 39),  # manual, small page, figure
    ("Independents-Report.pdf", 3),  # report, plain text
    ("finalpresentationdeck-whatwhyhowofcertificationsocial-160324220748_95.pdf", 12),  # slide
    ("GPL-Graduate-Studies-Professional-Learning-Brochure-Jul-2021.pdf", 10),  # brochure
    ("f8d3a162ab9507e021d83dd109118b60.pdf", 15),  # administrative file, table
    ("PIP_Seniors-and-Tech-Use_040314.pdf", 18),  # report, table
    ("NUS-Business-School-BBA-Brochure-2024.pdf", 3),  # brochure, chart
    ("stereo_headset.pdf", 19),  # manual, text
    ("caltraincapacitymountainview1-150701205750-lva1-app6891_95.pdf", 19),  # slide, figure
)
QUERIES = Path(__file__).resolve().parent / "gpu" / "queries.json"
MANIFEST = "pages.json"  # beside the PNGs written by --save-images


def _scaled(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def build(name: str, fraction: float, device: str | None = None) -> tuple[Any, Any, str]:
    """Random-init model and real-settings processor for ``name`` at ``fraction`` of its depth.

    ``device``: where the model's weights are created (the processor stays on the CPU).
    """
    import torch

    builders = {"colsmol-256m": _smol, "colqwen2.5-3b": _qwen, "colpali-v1.3": _pali}
    if name not in builders:
        raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    on: Any = torch.device(device) if device else nullcontext()
    return builders[name](fraction, on)


def _smol(fraction: float, on: Any) -> tuple[Any, Any, str]:
    from colpali_engine.models import ColIdefics3, ColIdefics3Processor
    from transformers import Idefics3Config, Idefics3ImageProcessor

    from tests.tiny_models import IDEFICS_SPECIALS, tiny_tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *IDEFICS_SPECIALS]
    tok = tiny_tokenizer(
        specials, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    text = {**SMOL["text"], "model_type": "llama", "vocab_size": len(tok)}
    text["num_hidden_layers"] = _scaled(text["num_hidden_layers"], fraction)
    vision = {**SMOL["vision"]}
    vision["num_hidden_layers"] = _scaled(vision["num_hidden_layers"], fraction)
    extra: dict[str, Any] = {"pad_token_id": tok.pad_token_id}
    config = Idefics3Config(
        text_config={**text, "pad_token_id": tok.pad_token_id},
        vision_config=vision,
        scale_factor=SMOL["scale_factor"],
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        **extra,
    )
    with on:
        model = ColIdefics3(config)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": SMOL["longest_edge"]},
        max_image_size={"longest_edge": SMOL["tile"]},
        do_image_splitting=True,
    )
    proc = ColIdefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=SMOL["image_seq_len"]
    )
    return model, proc, "colidefics3"


def _qwen(fraction: float, on: Any) -> tuple[Any, Any, str]:
    from colpali_engine.models import ColQwen2_5, ColQwen2_5_Processor
    from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from tests.tiny_models import tiny_tokenizer

    specials = [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    ]  # fmt: skip
    tok = tiny_tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = {
        **QWEN["text"],
        "vocab_size": len(tok),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": QWEN["rope_theta"],
            "mrope_section": QWEN["mrope_section"],
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    text["num_hidden_layers"] = _scaled(text["num_hidden_layers"], fraction)
    vision = {**QWEN["vision"]}
    vision["depth"] = _scaled(vision["depth"], fraction)
    vision["fullatt_block_indexes"] = [
        i for i in QWEN["fullatt_block_indexes"] if i < vision["depth"]
    ]
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with on:
        model = ColQwen2_5(config)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=QWEN["min_pixels"], max_pixels=QWEN["max_pixels"]
    )
    proc = ColQwen2_5_Processor(
        image_processor=image_processor, tokenizer=tok, video_processor=Qwen2VLVideoProcessor()
    )
    return model, proc, "colqwen2_5"


def _pali(fraction: float, on: Any) -> tuple[Any, Any, str]:
    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import PaliGemmaConfig, SiglipImageProcessor

    from pagelens.encoders.colpali import fix_paligemma_attention
    from tests.tiny_models import tiny_tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    tok = tiny_tokenizer(
        specials, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    size = PALI["vision"]["image_size"]
    image_processor: Any = SiglipImageProcessor(size={"height": size, "width": size})
    image_processor.image_seq_length = PALI["image_seq_length"]
    proc = ColPaliProcessor(image_processor=image_processor, tokenizer=tok)
    tok = proc.tokenizer
    text = {
        **PALI["text"],
        "model_type": "gemma",
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    text["num_hidden_layers"] = _scaled(text["num_hidden_layers"], fraction)
    vision = {**PALI["vision"]}
    vision["num_hidden_layers"] = _scaled(vision["num_hidden_layers"], fraction)
    config = PaliGemmaConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=PALI["projection_dim"],
        hidden_size=PALI["text"]["hidden_size"],
        vocab_size=len(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    with on:
        model = ColPali(config)
    fix_paligemma_attention(model)
    return model, proc, "colpali"


def param_bytes(name: str) -> int:
    """fp32 bytes of the full model, counted on the meta device (allocates nothing)."""
    import torch

    with torch.device("meta"):
        model, _, _ = build(name, 1.0)
    return 4 * sum(p.numel() for p in model.parameters())


def render(pdf_dir: Path, n: int) -> list[Any]:
    import hashlib

    from pagelens.pipeline.render import RenderSettings, probe, render_pages
    from pagelens.types import Document

    pages = []
    settings = RenderSettings(dpi=150)
    for name, page_no in PAGES[:n]:
        path = pdf_dir / name
        data = path.read_bytes()
        doc = Document(str(path), name, hashlib.sha256(data).hexdigest(), len(data))
        info = probe(doc, settings)
        pages.append(next(iter(render_pages(doc, info, settings, first_page=page_no))))
    return pages


def save_images(pdf_dir: Path, n: int, folder: Path) -> None:
    """Render the first ``n`` PAGES as pagelens indexes them and save them as PNG + manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for i, page in enumerate(render(pdf_dir, n)):
        file = f"{i:02d}_{Path(page.doc_path).stem[:40]}_p{page.page_number}.png"
        page.image.save(folder / file, optimize=True)
        manifest.append(
            {
                "file": file,
                "doc_path": page.doc_path,
                "doc_sha256": page.doc_sha256,
                "page_number": page.page_number,
                "page_count": page.page_count,
                "width_pt": page.width_pt,
                "height_pt": page.height_pt,
                "image_px": list(page.image.size),
            }
        )
        size = (folder / file).stat().st_size
        print(f"  {file}: {page.image.size[0]}x{page.image.size[1]} px, {size / 2**10:.0f} KiB")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in folder.iterdir())
    print(f"wrote {len(manifest)} pages to {folder} ({total / 2**20:.1f} MiB)")


def load_images(folder: Path, n: int) -> list[Any]:
    """The first ``n`` pages saved by :func:`save_images`, as pagelens ``Page`` objects."""
    from PIL import Image

    from pagelens.types import Page

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if n > len(manifest):
        raise SystemExit(f"{folder} holds {len(manifest)} pages, {n} asked for")
    pages = []
    for m in manifest[:n]:
        with Image.open(folder / m["file"]) as im:
            image = im.convert("RGB")
        image.load()
        pages.append(
            Page(
                doc_sha256=m["doc_sha256"],
                doc_path=m["doc_path"],
                page_number=m["page_number"],
                page_count=m["page_count"],
                image=image,
                width_pt=m["width_pt"],
                height_pt=m["height_pt"],
            )
        )
    return pages


def get_pages(args: argparse.Namespace) -> list[Any]:
    return load_images(args.images, args.pages) if args.images else render(args.pdf_dir, args.pages)


def make_encoder(model: Any, proc: Any, family: str, name: str, device: str, dtype: Any) -> Any:
    from pagelens.encoders import colpali
    from pagelens.encoders.base import EncoderSpec
    from pagelens.encoders.colpali import ColPaliEngineEncoder

    kwargs: dict[str, Any] = {}
    if "family" in inspect.signature(ColPaliEngineEncoder.__init__).parameters:
        kwargs["family"] = next(f for f in colpali.FAMILIES if f.name == family)
    return ColPaliEngineEncoder(
        model=model,
        processor=proc,
        spec=EncoderSpec(model_id=name, revision="random-init", dim=int(model.dim), family=family),
        device=device,
        dtype=dtype,
        batch_size=1,
        **kwargs,
    )


def child(name: str, args: argparse.Namespace) -> None:
    """CPU, float32, one page per call (the default run; its JSON is the reference one)."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, proc, family = build(name, args.fraction)
    model = model.to(torch.float32).eval()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    encoder = make_encoder(model, proc, family, name, "cpu", torch.float32)
    rows = time_pages(encoder, proc, get_pages(args))
    print(
        json.dumps(
            {
                "fraction": args.fraction,
                "params": params,
                "build_seconds": build_s,
                "pages": rows,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def time_pages(encoder: Any, proc: Any, pages: list[Any]) -> list[dict[str, Any]]:
    """Encode each page alone: its tokens, wall and CPU seconds (progress on stderr)."""
    rows = []
    for page in pages:
        inputs = proc.process_images([page.image])
        visual = int((inputs["input_ids"] == encoder.image_token_id).sum())
        total = int(inputs["attention_mask"].sum())
        t = time.perf_counter()
        cpu = time.process_time()
        (vectors,) = encoder.encode_pages([page])
        rows.append(
            {
                "page": f"{page.doc_path}#{page.page_number}",
                "image_px": list(page.image.size),
                "visual_tokens": visual,
                "sequence_tokens": total,
                "vectors": int(vectors.shape[0]),
                "seconds": time.perf_counter() - t,
                "cpu_seconds": time.process_time() - cpu,
            }
        )
        print(json.dumps({"progress": rows[-1]}), file=sys.stderr, flush=True)
    return rows


def _versions(torch: Any) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    try:
        colpali_engine = version("colpali-engine")
    except PackageNotFoundError:
        colpali_engine = None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "transformers": transformers.__version__,
        "transformers_path": str(Path(transformers.__file__).parent),
        "colpali_engine": colpali_engine,
        "numpy": version("numpy"),
        "pillow": version("pillow"),
    }


def _log(event: str, **fields: Any) -> None:
    print(json.dumps({"progress": event, **fields}), file=sys.stderr, flush=True)


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


class Device:
    """Where a batched child runs: synchronises and reads peak memory on a GPU, not on a CPU."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def info(self) -> dict[str, Any]:
        cuda = self.torch.cuda
        if not self.cuda:
            return {}
        return {
            "gpu": cuda.get_device_name(self.device),
            "gpu_capability": list(cuda.get_device_capability(self.device)),
            "gpu_total_gib": _gib(cuda.get_device_properties(self.device).total_memory),
        }


def child_batched(name: str, args: argparse.Namespace) -> None:
    """Any device and dtype, per batch size; the GPU run (see the module docstring)."""
    import torch

    on = Device(torch, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict[str, Any] = {"fraction": args.fraction, "versions": _versions(torch)}
    result.update(on.info())
    result["torch_threads"] = torch.get_num_threads()
    t0 = time.perf_counter()
    pages = get_pages(args)
    result["load_pages_seconds"] = time.perf_counter() - t0
    _log("pages loaded", n=len(pages), seconds=round(result["load_pages_seconds"], 2))

    t0 = time.perf_counter()
    model, proc, family = build(name, args.fraction, device=args.device)
    model = model.to(getattr(torch, args.dtype)).eval()
    on.sync()
    result["build_seconds"] = time.perf_counter() - t0
    result["params"] = sum(p.numel() for p in model.parameters())
    result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    if on.cuda:
        result["weights_gib"] = _gib(torch.cuda.memory_allocated(args.device))
    _log("built", params=result["params"], seconds=round(result["build_seconds"], 1))
    encoder = make_encoder(model, proc, family, name, args.device, getattr(torch, args.dtype))
    result.update(page_tokens(proc, encoder, pages))
    _log("preprocessed", ms_per_page=round(result["preprocess_ms_per_page"], 1))

    def late(what: str) -> bool:
        # past the soft deadline the parent set: skip what is left, keep what was measured
        if args.deadline and time.time() > args.deadline:
            result.setdefault("skipped", []).append(what)
            _log("skipped: past the soft deadline", what=what)
            return True
        return False

    result["batches"] = {}
    for bs in args.batch_sizes:
        if not late(f"batch size {bs}"):
            result["batches"][str(bs)] = time_batches(encoder, pages, bs, on)
    if args.queries and not late("queries"):
        result["queries"] = time_queries(encoder, args.queries, on)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def page_tokens(proc: Any, encoder: Any, pages: list[Any]) -> dict[str, Any]:
    """Per page, batch of one: tokens, and the processor's (CPU) share of encode_pages."""
    rows: list[dict[str, Any]] = []
    for page in pages:
        t = time.perf_counter()
        inputs = proc.process_images([page.image])
        rows.append(
            {
                "page": f"{page.doc_path}#{page.page_number}",
                "image_px": list(page.image.size),
                "visual_tokens": int((inputs["input_ids"] == encoder.image_token_id).sum()),
                "sequence_tokens": int(inputs["attention_mask"].sum()),
                "preprocess_seconds": time.perf_counter() - t,
            }
        )
    return {
        "pages": rows,
        "visual_tokens_median": median([r["visual_tokens"] for r in rows]),
        "sequence_tokens_median": median([r["sequence_tokens"] for r in rows]),
        "preprocess_ms_per_page": 1000 * median([r["preprocess_seconds"] for r in rows]),
    }


def time_batches(encoder: Any, pages: list[Any], bs: int, on: Device) -> dict[str, Any]:
    """One warm-up batch, then every page in batches of ``bs``, synchronised around each."""
    encoder.batch_size = bs
    on.reset_peak()
    on.sync()
    t = time.perf_counter()
    encoder.encode_pages(pages[:bs])  # warm-up: one batch
    on.sync()
    warm = time.perf_counter() - t
    seconds: list[float] = []
    vectors: list[int] = []
    for start in range(0, len(pages), bs):
        batch = pages[start : start + bs]
        on.sync()
        t = time.perf_counter()
        out = encoder.encode_pages(batch)
        on.sync()
        seconds.append(time.perf_counter() - t)
        vectors.extend(int(v.shape[0]) for v in out)
        _log("batch", batch_size=bs, pages=len(batch), seconds=round(seconds[-1], 4))
    total = sum(seconds)
    entry = {
        "batch_size": bs,
        "pages": len(pages),
        "warmup_seconds": warm,
        "batch_seconds": seconds,
        "seconds": total,
        "pages_per_second": len(pages) / total,
        "ms_per_page": 1000 * total / len(pages),
        "vectors_per_page_median": median(vectors),
    }
    if on.cuda:
        entry["peak_gpu_gib"] = _gib(on.torch.cuda.max_memory_allocated(on.device))
        entry["peak_gpu_reserved_gib"] = _gib(on.torch.cuda.max_memory_reserved(on.device))
    _log("batch size done", **{k: entry[k] for k in ("batch_size", "ms_per_page")})
    return entry


def time_queries(encoder: Any, n: int, on: Device) -> dict[str, Any]:
    """``n`` real questions as one batch, then the first 8 one per call."""
    doc = json.loads(QUERIES.read_text(encoding="utf-8"))
    texts = [q["query"] for q in doc["queries"]][:n]
    if on.cuda:
        on.torch.cuda.reset_peak_memory_stats(on.device)
    encoder.batch_size = len(texts)
    encoder.encode_queries(texts)  # warm-up
    on.sync()
    t = time.perf_counter()
    out = encoder.encode_queries(texts)
    on.sync()
    batch_s = time.perf_counter() - t
    encoder.batch_size = 1
    encoder.encode_queries(texts[:1])  # warm-up
    single = []
    for text in texts[:8]:
        on.sync()
        t = time.perf_counter()
        encoder.encode_queries([text])
        on.sync()
        single.append(time.perf_counter() - t)
    result: dict[str, Any] = {
        "n": len(texts),
        "batch_seconds": batch_s,
        "ms_per_query_batched": 1000 * batch_s / len(texts),
        "single_query_ms_median": 1000 * median(single),
        "single_query_ms": [1000 * s for s in single],
        # tokens of the tiny stand-in tokenizer: about 2-3x a real tokenizer's count
        "vectors_per_query_median": median([int(v.shape[0]) for v in out]),
    }
    if on.cuda:
        result["peak_gpu_gib"] = _gib(on.torch.cuda.max_memory_allocated(on.device))
    _log("queries", ms_per_query=round(result["ms_per_query_batched"], 2))
    return result


def batched(args: argparse.Namespace) -> bool:
    """Whether this run leaves the reference CPU path (fp32, one page per call)."""
    return (
        args.device != "cpu"
        or args.dtype != "float32"
        or args.batch_sizes != [1]
        or bool(args.queries)
    )


def run_child(name: str, fraction: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run one model in a child process; its stderr is echoed live and kept as a tail."""
    cmd = module_command(
        __spec__.name, "--child", name,
        "--fraction", str(fraction), "--pages", str(args.pages),
        "--pdf-dir", str(args.pdf_dir), "--device", args.device, "--dtype", args.dtype,
        "--batch-sizes", *map(str, args.batch_sizes), "--queries", str(args.queries),
    )  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.images:
        cmd += ["--images", str(args.images)]
    if batched(args):  # a soft deadline at 70% of the timeout: a slow model ends with some numbers
        cmd += ["--deadline", f"{time.time() + 0.7 * args.timeout:.0f}"]
    print(f"  {name} at depth x{fraction:g} ...", flush=True)
    start = time.perf_counter()
    failed, stdout, tail = _watch(cmd, name, args.timeout)
    extra = {"child_seconds": round(time.perf_counter() - start, 1)} if batched(args) else {}
    if not failed:
        try:
            return {**json.loads(stdout.strip().splitlines()[-1]), **extra}
        except (ValueError, IndexError):
            failed = "no JSON result on stdout"
    print(f"  {name} FAILED: {failed}", flush=True)
    return {"failed": failed, "stderr_tail": tail, **extra}


def _watch(cmd: list[str], name: str, timeout: float) -> tuple[str | None, str, list[str]]:
    """Run ``cmd`` from the checkout: (why it failed or None, its stdout, its stderr's tail)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    tail: deque[str] = deque(maxlen=30)
    stdout: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as proc:

        def pump_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                tail.append(line.rstrip("\n"))
                print(f"    [{name}] {line}", end="", flush=True)

        def pump_out() -> None:
            assert proc.stdout is not None
            stdout.append(proc.stdout.read())

        pumps = [threading.Thread(target=f, daemon=True) for f in (pump_err, pump_out)]
        for pump in pumps:
            pump.start()
        try:
            code = proc.wait(timeout=timeout)
            failed = f"exit status {code}" if code else None
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failed = f"timed out after {timeout} s"
        for pump in pumps:
            pump.join(timeout=10)
    return failed, "".join(stdout), list(tail)


def main_batched(args: argparse.Namespace, argv: list[str] | None) -> None:
    results: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "batch_sizes": args.batch_sizes,
        "pages": args.pages,
        "pages_from": f"PNG ({args.images.name})" if args.images else "poppler",
        "models": results,
    }
    for name in args.models:
        print(f"{name}: full model on {args.device} ({args.dtype})", flush=True)
        results[name] = run_child(name, args.fraction, args)
        for key in ("gpu", "versions"):
            if key in results[name] and key not in doc:
                doc[key] = results[name][key]
        # partial results survive
        write_json(args.out, "encoder_cost", command_line(__spec__.name, argv), doc)
    print()
    print(f"{doc.get('gpu', args.device)}, {args.dtype}, {args.pages} real pages")
    print(_batched_table(results, args.queries))


def _batched_table(results: dict[str, Any], queries: int) -> str:
    rows = []
    for name, e in results.items():
        if "failed" in e:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", e["failed"]])
            continue
        q = e.get("queries", {})
        for bs, b in e["batches"].items():
            rows.append(
                [
                    name,
                    f"{e['params'] / 1e9:.2f} B",
                    int(bs),
                    e["visual_tokens_median"],
                    e["sequence_tokens_median"],
                    b["pages_per_second"],
                    b["ms_per_page"],
                    e["preprocess_ms_per_page"],
                    b.get("peak_gpu_gib", "-"),
                    q.get("ms_per_query_batched", "-"),
                    q.get("single_query_ms_median", "-"),
                    f"{e['build_seconds']:.1f}",
                ]
            )
    headers = [
        "model",
        "params",
        "batch",
        "visual tok/page",
        "sequence",
        "pages/s",
        "ms/page",
        "preprocess ms/page",
        "peak GPU GiB",
        f"ms/query (x{queries})",
        "ms 1 query",
        "build s",
    ]
    return table(headers, rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--pages", type=int, default=2, help=f"real pages per model (1-{len(PAGES)})")
    ap.add_argument("--threads", type=int, help="torch threads (default: 2 on cpu, torch's on gpu)")
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--images", type=Path, help="read pages saved by --save-images, not PDFs")
    ap.add_argument("--save-images", type=Path, help="render --pages pages to PNGs here, exit")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="default: float32 on cpu, bfloat16 on gpu",
    )
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1], metavar="N")
    ap.add_argument(
        "--queries",
        type=int,
        help="questions to encode as one batch (default: 32 on gpu, 0 on cpu)",
    )
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per child run")
    ap.add_argument(
        "--headroom-gb", type=float, default=3.0, help="free RAM to leave beside the weights"
    )
    ap.add_argument("--out", type=Path, default=default_out("encoder_cost"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    if args.dtype is None:
        args.dtype = "float32" if cpu else "bfloat16"
    if args.queries is None:
        args.queries = 0 if cpu else 32
    if args.threads is None and cpu:
        args.threads = 2
    if args.images:
        args.images = args.images.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.save_images:
        save_images(args.pdf_dir, args.pages, args.save_images)
    elif args.child:
        (child_batched if batched(args) else child)(args.child, args)
    elif batched(args):
        main_batched(args, argv)
    else:
        main_cpu(args, argv)
    return 0


def main_cpu(args: argparse.Namespace, argv: list[str] | None) -> None:
    """The reference run: each model on this CPU, full depth if it fits, else extrapolated."""
    import psutil

    results: dict[str, Any] = {}
    for name in args.models:
        need = param_bytes(name)
        avail = psutil.virtual_memory().available
        fits = need + args.headroom_gb * 2**30 < avail
        print(
            f"{name}: {need / 4 / 1e9:.2f} B params, {need / 2**30:.1f} GiB fp32; "
            f"{avail / 2**30:.1f} GiB available -> {'full model' if fits else 'depth x1/4, x1/2'}",
            flush=True,
        )
        entry: dict[str, Any] = {"params": need // 4, "fp32_gib": need / 2**30}
        full = run_child(name, 1.0, args) if fits else {"failed": "not run: would not fit in RAM"}
        entry["full"] = full
        entry.update(_per_page(full, name, args))
        results[name] = entry
    print()
    print(_cpu_table(results))
    write_json(
        args.out,
        "encoder_cost",
        command_line(__spec__.name, argv),
        {"threads": args.threads, "dtype": "float32", "device": "cpu", "models": results},
    )


def _per_page(full: dict[str, Any], name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per page of the full model, or extrapolated from depth x1/4 and x1/2."""
    entry: dict[str, Any] = {}
    if "failed" not in full:
        entry["seconds_per_page"] = median([p["seconds"] for p in full["pages"]])
        entry["cpu_s_per_page"] = median([p["cpu_seconds"] for p in full["pages"]])
        entry["method"] = "full model"
        entry["pages"] = full["pages"]
        return entry
    quarter = run_child(name, 0.25, args)
    half = run_child(name, 0.5, args)
    entry["quarter"], entry["half"] = quarter, half
    if "failed" in quarter or "failed" in half:
        entry["seconds_per_page"] = entry["cpu_s_per_page"] = None
        entry["method"] = "failed"
        return entry
    for key, out in (("seconds", "seconds_per_page"), ("cpu_seconds", "cpu_s_per_page")):
        tq = median([p[key] for p in quarter["pages"]])
        th = median([p[key] for p in half["pages"]])
        entry[out] = th + 2 * (th - tq)  # t(f) = a + b f, at f = 1
    entry["method"] = "extrapolated from depth x1/4 and x1/2"
    entry["pages"] = half["pages"]
    return entry


def _cpu_table(results: dict[str, Any]) -> str:
    rows = []
    for name, e in results.items():
        pages = e.get("pages") or []
        rows.append(
            [
                name,
                f"{e['params'] / 1e9:.2f} B",
                median([p["visual_tokens"] for p in pages]) if pages else "-",
                median([p["sequence_tokens"] for p in pages]) if pages else "-",
                e["seconds_per_page"] if e["seconds_per_page"] is not None else "failed",
                e["cpu_s_per_page"] if e["cpu_s_per_page"] is not None else "-",
                3600 / e["seconds_per_page"] if e["seconds_per_page"] else "-",
                e["method"],
                e["full"].get("peak_rss_mb", "-") if "failed" not in e["full"] else "-",
            ]
        )
    headers = [
        "model",
        "params",
        "visual tokens/page",
        "sequence",
        "wall s/page (fp32, 2 thr)",
        "CPU s/page",
        "pages/hour",
        "how",
        "peak RSS MB",
    ]
    return table(headers, rows)


if __name__ == "__main__":
    raise SystemExit(main())
