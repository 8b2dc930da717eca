"""Test-wide settings: no hub, no network, deterministic threads."""

import os

# Without these a hub call can hang for minutes; every model in the tests is built offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
