"""The colpali-engine adapter, run for real on tiny random-init checkpoints (offline, CPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("colpali_engine")

from pagelens.encoders import Encoder, load_encoder  # noqa: E402
from pagelens.encoders.colpali import ColPaliEngineEncoder, detect_family  # noqa: E402
from pagelens.errors import EncoderError, MissingExtraError  # noqa: E402
from pagelens.types import Page  # noqa: E402
from tests.tiny_models import FAMILIES, build_tiny_checkpoint, tiny_pages  # noqa: E402

# Three sizes: Qwen and Idefics3-style processors give each a different token count.
PAGE_SIZES = [(100, 140), (60, 60), (200, 40)]
QUERIES = ["what is the total revenue in 2020", "fox", "which table shows annual sales growth"]
# colpali-engine fixes the projection width per model class: ColQwen3 projects to 320.
DIMS = {"colqwen3": 320}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_checkpoint(family, seed=0) -> folder``, each built once per session."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        key = (family, seed)
        if key not in built:
            built[key] = build_tiny_checkpoint(family, root / f"{family}-seed{seed}", seed=seed)
        return built[key]

    return get


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Callable[..., Path]) -> Callable[[str], ColPaliEngineEncoder]:
    """``tiny_encoder(family)``: the seed-0 checkpoint loaded on CPU, once per session."""
    loaded: dict[str, ColPaliEngineEncoder] = {}

    def get(family: str) -> ColPaliEngineEncoder:
        if family not in loaded:
            encoder = load_encoder(str(tiny_checkpoint(family)), device="cpu", batch_size=4)
            assert isinstance(encoder, ColPaliEngineEncoder)
            loaded[family] = encoder
        return loaded[family]

    return get


def _assert_multivectors(vectors: list[np.ndarray], count: int, dim: int) -> None:
    assert len(vectors) == count
    for v in vectors:
        assert v.dtype == np.float32
        assert v.ndim == 2 and v.shape[1] == dim and v.shape[0] > 0
        assert v.flags.c_contiguous
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert [x.shape for x in a] == [y.shape for y in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_encodes_unit_norm_float32_multivectors(family: str, tiny_encoder) -> None:
    encoder = tiny_encoder(family)
    assert isinstance(encoder, Encoder)
    assert encoder.spec.family == family
    dim = DIMS.get(family, 128)
    assert encoder.spec.dim == dim
    assert encoder.spec.revision.startswith("local-")

    pages = encoder.encode_pages(tiny_pages(PAGE_SIZES))
    _assert_multivectors(pages, len(PAGE_SIZES), dim)
    queries = encoder.encode_queries(QUERIES)
    _assert_multivectors(queries, len(QUERIES), dim)
    # Longer query text, more tokens: padding was removed, not kept.
    assert queries[1].shape[0] < queries[0].shape[0]
    assert encoder.encode_pages([]) == [] and encoder.encode_queries([]) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_vectors_do_not_depend_on_batching(family: str, tiny_encoder) -> None:
    """Batch size 4 (padded batches) gives each item the vectors it gets alone."""
    encoder = tiny_encoder(family)
    pages = tiny_pages(PAGE_SIZES)
    try:
        encoder.batch_size = 4
        batched_pages = encoder.encode_pages(pages)
        batched_queries = encoder.encode_queries(QUERIES)
        encoder.batch_size = 1
        alone_pages = encoder.encode_pages(pages)
        alone_queries = encoder.encode_queries(QUERIES)
    finally:
        encoder.batch_size = 4
    _assert_same(batched_pages, alone_pages)
    _assert_same(batched_queries, alone_queries)
    # Distinct pages give distinct vectors.
    assert not np.allclose(batched_pages[0][-1], batched_pages[1][-1])


@pytest.mark.parametrize("family", ["colqwen2_5", "colidefics3"])
def test_page_token_count_follows_page_size(family: str, tiny_encoder) -> None:
    counts = [v.shape[0] for v in tiny_encoder(family).encode_pages(tiny_pages(PAGE_SIZES))]
    assert len(set(counts)) > 1, counts


@pytest.mark.parametrize("family", FAMILIES)
def test_page_vectors_image_keeps_exactly_the_image_tokens(
    family: str, tiny_encoder, tiny_checkpoint
) -> None:
    full = tiny_encoder(family)
    image_only = load_encoder(str(tiny_checkpoint(family)), device="cpu", page_vectors="image")
    pages = tiny_pages(PAGE_SIZES)
    all_vectors = full.encode_pages(pages)
    image_vectors = image_only.encode_pages(pages)
    for page, all_v, image_v in zip(pages, all_vectors, image_vectors, strict=True):
        inputs = full._processor.process_images([page.image])
        ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].numpy()
        is_image = ids == full.image_token_id
        assert full.image_token_id == full._model.config.image_token_id  # the patch token
        assert 0 < is_image.sum() < len(ids)  # some prompt/special tokens were dropped
        np.testing.assert_allclose(image_v, all_v[is_image], atol=1e-6)
    # Queries are text: page_vectors does not touch them.
    _assert_same(image_only.encode_queries(QUERIES), full.encode_queries(QUERIES))


def test_family_comes_from_config_not_folder_name(tiny_checkpoint, tmp_path: Path) -> None:
    misleading = tmp_path / "colpali-but-really-qwen"
    shutil.copytree(tiny_checkpoint("colqwen2_5"), misleading)
    encoder = load_encoder(str(misleading), device="cpu")
    assert encoder.spec.family == "colqwen2_5"
    assert encoder.spec.model_id == str(misleading)


def test_revision_is_a_content_hash(tiny_checkpoint, tmp_path: Path) -> None:
    seed0 = tiny_checkpoint("colqwen2_5", seed=0)
    seed1 = tiny_checkpoint("colqwen2_5", seed=1)
    rebuilt = build_tiny_checkpoint("colqwen2_5", tmp_path / "rebuilt", seed=0)
    copied = tmp_path / "elsewhere"
    shutil.copytree(seed0, copied)
    rev = {
        name: load_encoder(str(path), device="cpu").spec.revision
        for name, path in [
            ("seed0", seed0),
            ("seed1", seed1),
            ("rebuilt", rebuilt),
            ("copy", copied),
        ]
    }
    assert rev["seed0"] != rev["seed1"]  # same architecture and file sizes, other weights
    assert rev["seed0"] == rev["copy"] == rev["rebuilt"]  # path-independent, deterministic build


def test_same_seed_gives_same_vectors(tiny_encoder, tiny_checkpoint, tmp_path: Path) -> None:
    rebuilt = build_tiny_checkpoint("colidefics3", tmp_path / "again", seed=0)
    pages = tiny_pages(PAGE_SIZES[:1])
    again = load_encoder(str(rebuilt), device="cpu").encode_pages(pages)
    _assert_same(again, tiny_encoder("colidefics3").encode_pages(pages))


def test_unreachable_hub_id_fails_fast_offline(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(EncoderError, match="local checkpoint folder") as info:
        load_encoder("vidore/colqwen2.5-v0.2", device="cpu")
    assert time.monotonic() - start < 5
    assert "offline" in str(info.value)
    # what does work without the Hub, and why a vision model on CPU is no substitute
    assert "--model minilm" in str(info.value)
    assert "minutes per page" in str(info.value)


def test_unreachable_hub_id_fails_fast_online(tmp_path: Path, monkeypatch) -> None:
    """Not offline, but the Hub does not answer (a closed local port stands in for it)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(EncoderError, match="local checkpoint folder") as info:
        load_encoder("vidore/colqwen2.5-v0.2", device="cpu")
    assert time.monotonic() - start < 15
    assert "--model minilm" in str(info.value)
    assert "minutes per page" in str(info.value)


def test_missing_folder_and_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="does not exist"):
        load_encoder(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(EncoderError, match="neither an existing folder nor a valid hub id"):
        load_encoder("not a hub id!", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderError, match="config.json"):
        load_encoder(str(empty), device="cpu")


def test_unknown_config_names_what_it_found(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(EncoderError, match="'t5'") as info:
        load_encoder(str(folder), device="cpu")
    assert "qwen2_5_vl" in str(info.value) and "bert" in str(info.value)  # all supported types
    with pytest.raises(EncoderError, match="colqwen2_5"):
        detect_family({"model_type": "llava"})


def test_unsupported_single_vector_checkpoint_is_refused() -> None:
    """A Bi* class with no family is refused (tests/test_bi_families.py has the rest)."""
    with pytest.raises(EncoderError, match="single-vector"):
        detect_family({"model_type": "paligemma", "architectures": ["BiPaliProj"]})
    assert (
        detect_family({"model_type": "qwen2_vl", "architectures": ["ColQwen2"]}).name == "colqwen2"
    )


def test_bad_options_are_rejected(tiny_checkpoint) -> None:
    folder = str(tiny_checkpoint("colqwen2_5"))
    with pytest.raises(EncoderError, match="page_vectors"):
        load_encoder(folder, device="cpu", page_vectors="text")  # type: ignore[arg-type]
    with pytest.raises(EncoderError, match="batch_size"):
        load_encoder(folder, device="cpu", batch_size=0)
    with pytest.raises(EncoderError, match="unknown device"):
        load_encoder(folder, device="tpu")
    with pytest.raises(EncoderError, match="dtype"):
        load_encoder(folder, device="cpu", dtype="int8")
    with pytest.raises(EncoderError, match="revision"):
        load_encoder(folder, device="cpu", revision="main")


def test_page_without_image_names_the_page(tiny_encoder) -> None:
    page = Page(doc_sha256="0" * 64, doc_path="report.pdf", page_number=3, page_count=5)
    with pytest.raises(EncoderError, match="report.pdf#3"):
        tiny_encoder("colqwen2_5").encode_pages([page])


def test_missing_colpali_engine_names_the_extra(tiny_checkpoint, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "colpali_engine.models", None)
    with pytest.raises(MissingExtraError, match=r"pagelens\[colpali\]"):
        load_encoder(str(tiny_checkpoint("colqwen2_5")), device="cpu")


def test_family_missing_from_colpali_engine_names_the_version_that_has_it(
    tiny_checkpoint, monkeypatch
) -> None:
    import colpali_engine.models

    folder = str(tiny_checkpoint("colqwen3"))  # built before the class goes
    monkeypatch.delattr(colpali_engine.models, "ColQwen3")
    with pytest.raises(EncoderError, match=r"no ColQwen3/ColQwen3Processor") as info:
        load_encoder(folder, device="cpu")
    assert "colpali-engine>=0.3.18" in str(info.value)
    assert "for the colqwen3 family" in str(info.value)


def test_colqwen2_5_omni_is_not_a_supported_family() -> None:
    """Left out on purpose: colpali-engine 0.3.18's class cannot be built (transformers 5)."""
    with pytest.raises(EncoderError, match="qwen2_5_omni_thinker"):
        detect_family({"model_type": "qwen2_5_omni_thinker", "architectures": ["ColQwen2_5Omni"]})


def test_peft_adapter_folder_loads_through_its_base(tiny_checkpoint, tmp_path: Path) -> None:
    """Real vidore checkpoints are LoRA adapters: family comes from the base's config."""
    import torch
    from colpali_engine.models import ColQwen2_5, ColQwen2_5_Processor
    from peft import LoraConfig, get_peft_model

    base_folder = tiny_checkpoint("colqwen2_5")
    torch.manual_seed(1)
    base = ColQwen2_5.from_pretrained(str(base_folder), dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        modules_to_save=["custom_text_proj"],
        init_lora_weights=False,  # random B: the adapter really changes the vectors
    )
    adapted = get_peft_model(base, lora)
    adapter_folder = tmp_path / "adapter-named-like-colpali"
    adapted.save_pretrained(adapter_folder)
    ColQwen2_5_Processor.from_pretrained(str(base_folder)).save_pretrained(adapter_folder)
    assert not (adapter_folder / "config.json").exists()

    encoder = load_encoder(str(adapter_folder), device="cpu")
    assert encoder.spec.family == "colqwen2_5"
    page = tiny_pages(PAGE_SIZES[:1])
    got = encoder.encode_pages(page)[0]

    processor = ColQwen2_5_Processor.from_pretrained(str(base_folder))
    with torch.inference_mode():
        expected = adapted.eval()(**processor.process_images([page[0].image]))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    plain = load_encoder(str(base_folder), device="cpu").encode_pages(page)[0]
    assert not np.allclose(got, plain, atol=1e-3)
    assert encoder.spec.revision != load_encoder(str(base_folder), device="cpu").spec.revision


def test_importing_pagelens_does_not_import_torch() -> None:
    code = (
        "import sys, pagelens, pagelens.encoders, pagelens.encoders.colpali, "
        "pagelens.encoders.loading; "
        "assert 'torch' not in sys.modules and 'colpali_engine' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('torch', 'colpali')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hub_id_in_the_local_cache_loads_offline(tiny_checkpoint, tmp_path: Path, monkeypatch):
    """A cached snapshot is used without the network; its commit hash is the revision."""
    import huggingface_hub

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--tiny--colqwen"
    shutil.copytree(tiny_checkpoint("colqwen2_5"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    encoder = load_encoder("tiny/colqwen", device="cpu")
    assert encoder.spec.model_id == "tiny/colqwen"
    assert encoder.spec.revision == commit
    assert encoder.spec.family == "colqwen2_5"


def test_backbone_without_projection_head_is_refused(tiny_checkpoint, tmp_path: Path) -> None:
    """A plain VLM (no trained custom_text_proj) would load with a random head: refuse it."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    shutil.copytree(tiny_checkpoint("colqwen2_5"), folder)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("custom_text_proj")}
    assert len(kept) < len(weights)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EncoderError, match="projection head"):
        load_encoder(str(folder), device="cpu")


@pytest.mark.parametrize("family", ["colqwen2", "colqwen2_5", "colqwen3", "colqwen3_5"])
def test_a_page_beyond_the_processors_aspect_ratio_is_padded(family: str, tiny_encoder) -> None:
    # Qwen2-VL's image processor refuses 200:1 and more (a 14400 x 3 pt strip at 150
    # dpi is 30000 x 7 px): such a page is padded with white to 100:1 and encoded
    encoder = tiny_encoder(family)
    sliver, tall, normal = tiny_pages([(30000, 7), (7, 30000), (400, 300)])
    vectors = encoder.encode_pages([sliver, tall, normal])
    assert all(v.shape[0] > 0 and np.isfinite(v).all() for v in vectors)
    from pagelens.encoders.colpali import _pad_to_aspect

    assert _pad_to_aspect(normal.image, 200.0) is normal.image  # within the limit: untouched
    assert _pad_to_aspect(sliver.image, 200.0).size == (30000, 300)  # padded to 100:1
    assert _pad_to_aspect(tall.image, 200.0).size == (300, 30000)
    assert _pad_to_aspect(sliver.image, None) is sliver.image  # families without a limit
