"""Pre-resizing pages to the processor's pixel budget changes no pixel and no vector."""

import numpy as np
import pytest
import torch

from pagelens.encoders import load_encoder
from pagelens.encoders.colpali import pre_resize_image
from tests.tiny_models import build_tiny_checkpoint, tiny_pages

# a 150-dpi letter page, a landscape slide, a small and a thin page
SIZES = [(1275, 1650), (1650, 1275), (200, 120), (90, 1500)]


@pytest.mark.parametrize("family", ["colqwen2_5", "colqwen2", "biqwen2_5"])
def test_pre_resize_gives_the_same_pixels_and_vectors(family, tmp_path):
    enc = load_encoder(str(build_tiny_checkpoint(family, tmp_path / "m")), device="cpu")
    pages = tiny_pages(SIZES)
    processor = enc._processor
    images = [p.image for p in pages]
    small = [pre_resize_image(image, processor) for image in images]
    assert small[0].size[0] * small[0].size[1] < 1275 * 1650 // 50  # it did resize
    full, pre = processor.process_images(images), processor.process_images(small)
    assert full.keys() == pre.keys()
    for key in full:
        assert torch.equal(full[key], pre[key]), key
    enc.pre_resize = False
    want = enc.encode_pages(pages)
    enc.pre_resize = True
    got = enc.encode_pages(pages)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_other_processors_get_the_page_unchanged(tmp_path):
    enc = load_encoder(str(build_tiny_checkpoint("colidefics3", tmp_path / "m")), device="cpu")
    image = tiny_pages([(300, 400)])[0].image
    assert pre_resize_image(image, enc._processor) is image
