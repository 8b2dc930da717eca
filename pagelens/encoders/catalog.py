"""What pagelens knows of each colpali-engine family: hub ids, size, vectors per page.

A constant table (nothing is downloaded), each figure with its source, plus one live
fact: whether the installed colpali-engine has the family's classes. ``pagelens models``
prints it.

Sources, as named in each entry:

- ``colpali-engine README``: the model table of colpali-engine 0.3.18's README (its
  package metadata), which names the checkpoints and the backbone each is based on.
- ``pagelens README``: "Models and what they cost", vectors per page at the default
  150 dpi, counted on real pages with the real processor settings
  (``benchmarks/encoder_cost.py``).
- ``token rule``: computed from the processor's fixed token count.

Examples
--------
>>> entry = next(e for e in catalog(check_installed=False) if e.family == "colqwen2_5")
>>> entry.models[0].hub_id
'vidore/colqwen2.5-v0.2'

"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pagelens.encoders.colpali import FAMILIES, ColPaliFamily, installed_colpali_version

UNKNOWN = "unknown"
UNMEASURED = "unmeasured"


@dataclass(frozen=True)
class KnownModel:
    """One published checkpoint of a family."""

    hub_id: str
    parameters: str  # e.g. "3B", or UNKNOWN
    parameters_source: str
    vectors_per_page: str  # at the default 150 dpi, or UNMEASURED
    vectors_source: str


@dataclass(frozen=True)
class CatalogEntry:
    """One supported family: its classes, known checkpoints, and whether it is installed."""

    family: str
    model_type: str
    model_class: str
    processor_class: str
    min_version: str
    single: bool  # a Bi* family: one vector per page and query
    models: tuple[KnownModel, ...]  # empty: none known
    installed: bool | None  # None: not checked


_CE = "colpali-engine README"
_PL = "pagelens README"

# Known checkpoints per family (pagelens.encoders.colpali.FAMILIES names the families).
KNOWN_MODELS: dict[str, tuple[KnownModel, ...]] = {
    "colpali": (
        KnownModel(
            "vidore/colpali-v1.3",
            "3B",
            f"{_CE}: based on google/paligemma-3b-mix-448",
            "1,024 image tokens + 7",
            f"{_PL} (fixed 1,024 patches per page)",
        ),
    ),
    "colqwen2": (
        KnownModel(
            "vidore/colqwen2-v1.0",
            "2B",
            f"{_CE}: based on Qwen/Qwen2-VL-2B-Instruct",
            UNMEASURED,
            "its processor's pixel cap is not known offline",
        ),
    ),
    "colqwen2_5": (
        KnownModel(
            "vidore/colqwen2.5-v0.2",
            "3B",
            f"{_CE}: based on Qwen/Qwen2.5-VL-3B-Instruct",
            "744 image tokens + 11 (median, 768-token cap)",
            _PL,
        ),
    ),
    "colqwen3": (
        KnownModel(
            "TomoroAI/tomoro-colqwen3-embed-4b",
            "4B",
            f"the checkpoint's name; {_CE}: Qwen3-VL backbone, 320-dim vectors",
            UNMEASURED,
            "its processor's pixel cap is not known offline",
        ),
    ),
    "colqwen3_5": (
        KnownModel(
            "athrael-soju/colqwen3.5-4.5B-v3",
            "4.5B",
            f"{_CE}: 4.5B params, based on Qwen/Qwen3.5-4B",
            UNMEASURED,
            "its processor's pixel cap is not known offline",
        ),
    ),
    "colgemma3": (
        KnownModel(
            "Cognitive-Lab/ColNetraEmbed",
            "4B",
            f"{_CE}: based on google/gemma-3-4b-it",
            "256 image tokens + prompt",
            "token rule: Gemma 3 pools every image to 256 tokens, whatever its size",
        ),
    ),
    "colidefics3": (
        KnownModel(
            "vidore/colSmol-256M",
            "256M",
            f"{_CE}: based on HuggingFaceTB/SmolVLM-256M-Instruct",
            "1,088 image tokens + tile markers",
            _PL,
        ),
        KnownModel(
            "vidore/colSmol-500M",
            "500M",
            f"{_CE}: based on HuggingFaceTB/SmolVLM-500M-Instruct",
            UNMEASURED,
            "not measured (same processor family as colSmol-256M)",
        ),
    ),
    "colmodernvbert": (
        KnownModel(
            "ModernVBERT/colmodernvbert",
            UNKNOWN,
            "not named by colpali-engine or pagelens",
            UNMEASURED,
            "not measured",
        ),
    ),
}


def catalog(*, check_installed: bool = True) -> list[CatalogEntry]:
    """One entry per supported family, in :data:`~pagelens.encoders.colpali.FAMILIES` order.

    Args:
        check_installed: import ``colpali_engine.models`` (and so torch) to tell whether
            each family's classes are there; ``False`` leaves ``installed`` as ``None``.

    """
    models = _colpali_models() if check_installed else None
    return [
        CatalogEntry(
            family=f.name,
            model_type=f.model_type,
            model_class=f.model_class,
            processor_class=f.processor_class,
            min_version=f.min_version,
            single=f.single,
            models=KNOWN_MODELS.get(f.name, ()),
            installed=None if not check_installed else _has_classes(models, f),
        )
        for f in FAMILIES
    ]


def catalog_json(entries: list[CatalogEntry]) -> dict[str, Any]:
    """Return the catalog as a JSON-ready dict, with the installed colpali-engine version."""
    return {
        "colpali_engine": installed_colpali_version(),
        "families": [asdict(e) for e in entries],
    }


def _colpali_models() -> Any | None:
    try:
        import colpali_engine.models as models
    except ImportError:
        return None
    return models


def _has_classes(models: Any | None, family: ColPaliFamily) -> bool:
    return (
        models is not None
        and hasattr(models, family.model_class)
        and hasattr(models, family.processor_class)
    )
