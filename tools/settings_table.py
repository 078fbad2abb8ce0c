"""Write the README's settings table from the settings' field metadata (codellama_lsp/config.py).

    python tools/settings_table.py          # rewrites the table between its markers in README.md
    python tools/settings_table.py --check  # exit 1 if README.md is out of step (tests/test_config_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from codellama_lsp.config import settings_table  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- settings table: generated from codellama_lsp/config.py by tools/settings_table.py -->\n"
END = "<!-- end of settings table -->\n"


def with_table(text: str) -> str:
    """``text`` with the part between the markers replaced by the current table."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + settings_table() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    updated = with_table(text)
    if args.check:
        if updated != text:
            print("README.md's settings table is out of step with codellama_lsp/config.py; "
                  "run python tools/settings_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
