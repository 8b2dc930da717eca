"""What a real-size page encoder costs per page on this CPU (float32, 2 torch threads).

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

GPU cost is not measured here (no GPU); see the README for published figures.

    python benchmarks/encoder_cost.py --pages 2
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import MMLONGBENCH_PDFS, ROOT, command_line, default_out, median, table, write_json

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
SMOL = {
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
QWEN = {
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
PALI = {
    "text": dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                 num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                 max_position_embeddings=8192),
    "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                   num_attention_heads=16, image_size=448, patch_size=14, projection_dim=2048),
    "projection_dim": 2048, "image_seq_length": 1024,
}  # fmt: skip

MODELS = ("colsmol-256m", "colqwen2.5-3b", "colpali-v1.3")

# Real pages: (document, page) pairs, a text page and a slide first.
PAGES = (
    ("3M_2018_10K.pdf", 20),
    ("bigdatatrends-120723191058-phpapp02_95.pdf", 5),
    ("PG_2021.03.04_US-Views-on-China_FINAL.pdf", 9),
    ("2305.13186v3.pdf", 4),
)


def _scaled(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def build(name: str, fraction: float) -> tuple[Any, Any, str]:
    """Random-init model and real-settings processor for ``name`` at ``fraction`` of its depth."""
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import _IDEFICS_SPECIALS, _tokenizer

    if name == "colsmol-256m":
        from colpali_engine.models import ColIdefics3, ColIdefics3Processor
        from transformers import Idefics3Config, Idefics3ImageProcessor

        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_IDEFICS_SPECIALS]
        tok = _tokenizer(
            specials, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
        )
        text = {**SMOL["text"], "model_type": "llama", "vocab_size": len(tok)}
        text["num_hidden_layers"] = _scaled(text["num_hidden_layers"], fraction)
        vision = {**SMOL["vision"]}
        vision["num_hidden_layers"] = _scaled(vision["num_hidden_layers"], fraction)
        config = Idefics3Config(
            text_config={**text, "pad_token_id": tok.pad_token_id},
            vision_config=vision,
            scale_factor=SMOL["scale_factor"],
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            pad_token_id=tok.pad_token_id,
        )
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

    if name == "colqwen2.5-3b":
        from colpali_engine.models import ColQwen2_5, ColQwen2_5_Processor
        from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        specials = [
            "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
        ]  # fmt: skip
        tok = _tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
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
        model = ColQwen2_5(config)
        image_processor = Qwen2VLImageProcessor(
            min_pixels=QWEN["min_pixels"], max_pixels=QWEN["max_pixels"]
        )
        proc = ColQwen2_5_Processor(
            image_processor=image_processor, tokenizer=tok, video_processor=Qwen2VLVideoProcessor()
        )
        return model, proc, "colqwen2_5"

    if name == "colpali-v1.3":
        from colpali_engine.models import ColPali, ColPaliProcessor
        from transformers import PaliGemmaConfig, SiglipImageProcessor

        from pagelens.encoders.colpali import _fix_paligemma_attention

        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
        tok = _tokenizer(
            specials, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
        )
        size = PALI["vision"]["image_size"]
        image_processor = SiglipImageProcessor(size={"height": size, "width": size})
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
        model = ColPali(config)
        _fix_paligemma_attention(model)
        return model, proc, "colpali"

    raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


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


def child(name: str, fraction: float, n_pages: int, pdf_dir: Path, threads: int) -> None:
    import torch

    from pagelens.encoders import colpali
    from pagelens.encoders.base import EncoderSpec
    from pagelens.encoders.colpali import ColPaliEngineEncoder

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, proc, family = build(name, fraction)
    model = model.to(torch.float32).eval()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    kwargs: dict[str, Any] = {}
    if "family" in inspect.signature(ColPaliEngineEncoder.__init__).parameters:
        kwargs["family"] = next(f for f in colpali.FAMILIES if f.name == family)
    encoder = ColPaliEngineEncoder(
        model=model,
        processor=proc,
        spec=EncoderSpec(model_id=name, revision="random-init", dim=int(model.dim), family=family),
        device="cpu",
        dtype=torch.float32,
        batch_size=1,
        **kwargs,
    )
    pages = render(pdf_dir, n_pages)
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
    print(
        json.dumps(
            {
                "fraction": fraction,
                "params": params,
                "build_seconds": build_s,
                "pages": rows,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(name: str, fraction: float, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", name,
        "--fraction", str(fraction), "--pages", str(args.pages),
        "--pdf-dir", str(args.pdf_dir), "--threads", str(args.threads),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"  {name} at depth x{fraction:g} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"failed": f"exit status {proc.returncode}", "stderr_tail": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--pages", type=int, default=2, help=f"real pages per model (1-{len(PAGES)})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per child run")
    ap.add_argument(
        "--headroom-gb", type=float, default=3.0, help="free RAM to leave beside the weights"
    )
    ap.add_argument("--out", type=Path, default=default_out("encoder_cost"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.fraction, args.pages, args.pdf_dir, args.threads)
        return

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
        if "failed" in full:
            quarter = run_child(name, 0.25, args)
            half = run_child(name, 0.5, args)
            entry["quarter"], entry["half"] = quarter, half
            if "failed" in quarter or "failed" in half:
                entry["seconds_per_page"] = entry["cpu_s_per_page"] = None
                entry["method"] = "failed"
            else:
                for key, out in (
                    ("seconds", "seconds_per_page"),
                    ("cpu_seconds", "cpu_s_per_page"),
                ):
                    tq = median([p[key] for p in quarter["pages"]])
                    th = median([p[key] for p in half["pages"]])
                    entry[out] = th + 2 * (th - tq)  # t(f) = a + b f, at f = 1
                entry["method"] = "extrapolated from depth x1/4 and x1/2"
                entry["pages"] = half["pages"]
        else:
            entry["seconds_per_page"] = median([p["seconds"] for p in full["pages"]])
            entry["cpu_s_per_page"] = median([p["cpu_seconds"] for p in full["pages"]])
            entry["method"] = "full model"
            entry["pages"] = full["pages"]
        results[name] = entry

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
    print()
    print(
        table(
            [
                "model",
                "params",
                "visual tokens/page",
                "sequence",
                "wall s/page (fp32, 2 thr)",
                "CPU s/page",
                "pages/hour",
                "how",
                "peak RSS MB",
            ],
            rows,
        )
    )
    write_json(
        args.out,
        "encoder_cost",
        command_line(),
        {"threads": args.threads, "dtype": "float32", "device": "cpu", "models": results},
    )


if __name__ == "__main__":
    main()
