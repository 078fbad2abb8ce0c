"""codellama-lsp: an offline coding assistant whose model lives inside the language server.

Importing the package puts the Hugging Face libraries in offline mode before any of them is
imported: they read ``HF_HUB_OFFLINE`` once, at import time, and an online lookup with no network
costs minutes of DNS retries. Only ``codellama-lsp pull`` (run on a connected machine) lifts it, in
a child process of its own.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
