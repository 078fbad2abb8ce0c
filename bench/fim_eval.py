#!/usr/bin/env python3
"""HumanEval-infilling through the language server; the same as `codellama-lsp bench fim`.

Kept as a script so the harness runs from a checkout without installing the package:
    python bench/fim_eval.py --model demo --limit 20
The implementation lives in codellama_lsp/evaluation/ (so the installed CLI has it too).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codellama_lsp.evaluation.fim import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
