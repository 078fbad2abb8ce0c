"""``python -m codellama_lsp`` is ``codellama-lsp`` (handy where the script is not on PATH)."""

import sys

from .cli import main

sys.exit(main())
