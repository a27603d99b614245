#!/usr/bin/env bash
# The GPU checks of issues 4 and 6 in one device call, run from the repository root on the GPU machine with .gpu/
# carried (built here by benchmarks/gpu/prepare.sh):
#
#   run(command="bash benchmarks/gpu/check.sh", carry=[".gpu"], timeout_s=480)
#
# 1. installs the carried wheels into /tmp/site (the image has torch, accelerate, peft; not trl, chromadb, ...);
# 2. materialises the embedded model's folder from its config with RANDOM weights (the real GGUF is too large to
#    carry), so the tests' tokenizer and speed.py's shapes are SmolLM2-135M's;
# 3. runs the updater, engine, white-box and memory tests that use config-built tiny models (not the
#    `integration` ones, which need the real weights): on a GPU they train in bf16 on CUDA;
# 4. benchmarks/speed.py on CUDA: generation (kdagent's engine against model.generate, same batch, with a
#    greedy-equality check in bf16) and training (kdagent's SFT/DPO updates against TRL's defaults).
# Each step has its own time limit and a failing step does not stop the next. Results land in $OUT (at most 8
# files come back): summary.txt, pytest.log, generation.json, training.json and each step's log.
#
# Dry run on this CPU machine (no install, tiny sizes, the project's .venv): KDAGENT_GPU_DRY=1 bash benchmarks/gpu/check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/.gpu/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false
export KDAGENT_HOME=${KDAGENT_HOME:-/tmp/kdagent-home}
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

if [ -n "${KDAGENT_GPU_DRY:-}" ]; then
  PY=.venv/bin/python
  KDAGENT_HOME=$(mktemp -d)
  gen_args=(--device cpu --prompts 4 --n 2 --batch-size 2 --max-new-tokens 8 --greedy-check 2)
  train_args=(--device cpu --train-batch-size 1 --train-steps 2 --train-dpo-steps 2 --train-repeats 1 --train-max-length 128)
  tests=(tests/test_update_sft.py)
  limits=(600 600 600)
else
  PY=python3
  step_start=$SECONDS
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
    > "$OUT/install.log" 2>&1 || { note "install: failed (install.log)"; exit 3; }
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  note "install: $(ls .gpu/wheels | wc -l) wheels in $((SECONDS - step_start)) s"
  # 256 bare prompts x 8 samples, 128 prompts (1024 rows) a batch for both engines
  gen_args=(--device cuda --prompts 256 --n 8 --batch-size 128 --max-new-tokens 128 --passages 0 --greedy-check 16)
  train_args=(--device cuda --train-batch-size 32 --train-steps 12 --train-dpo-steps 6 --train-max-length 512)
  tests=(tests/test_update_sft.py tests/test_update_dpo_grpo.py tests/test_update_distill.py tests/test_engine.py
         tests/test_whitebox.py tests/test_models.py tests/test_memory.py)
  limits=(120 130 110)  # seconds: pytest, generation, training
fi
export KDAGENT_HOME

note "machine: $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
"$PY" - > "$OUT/env.log" 2>&1 <<'PY'
import json, os, shutil, sys
from pathlib import Path

import torch, transformers, trl
from transformers import AutoConfig, AutoModelForCausalLM

print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                  "trl": trl.__version__, "cuda": torch.cuda.is_available(),
                  "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
dst = Path(os.environ["KDAGENT_HOME"]) / "models" / "smollm2-135m-instruct"
if not (dst / "kdagent-model.json").is_file():
    shutil.copytree(".gpu/tokenizer", dst, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(dst), dtype=torch.float32).save_pretrained(dst)
    (dst / "kdagent-model.json").write_text(json.dumps({"source": "random weights of SmolLM2-135M-Instruct's shape (benchmarks/gpu/check.sh)"}))
print("model folder:", dst)
PY
[ $? -eq 0 ] && note "env: $(head -1 "$OUT/env.log")" || { note "env: failed (env.log)"; tail -5 "$OUT/env.log"; exit 3; }

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, note the outcome
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
  rc=$?
  note "$name: exit $rc in $((SECONDS - start)) s"
  return 0
}

step pytest "${limits[0]}" "$PY" -m pytest -q -p no:cacheprovider -m "not integration" "${tests[@]}"
cat "$OUT/pytest.out" >> "$OUT/pytest.log" && rm -f "$OUT/pytest.out"
note "pytest: $(grep -E '(passed|failed|error)' "$OUT/pytest.log" | tail -1)"

step generation "${limits[1]}" "$PY" benchmarks/speed.py --model-shape smollm2-135m --tokenizer .gpu/tokenizer --only generation "${gen_args[@]}"
step training "${limits[2]}" "$PY" benchmarks/speed.py --model-shape smollm2-135m --tokenizer .gpu/tokenizer --only training "${train_args[@]}"
for part in generation training; do
  mv -f "$OUT/$part.out" "$OUT/$part.json"
  "$PY" - "$OUT/$part.json" 2>/dev/null <<'PY' | tee -a "$summary"
import json, sys
out = json.load(open(sys.argv[1]))
for g in out.get("generation", []):
    print(f"generation, {g['passages']} passages, {g['prompts']}x{g['n']}, batch {g['batch_size']}: kdagent {g['kdagent']['tokens_per_s']} "
          f"tok/s, model.generate {g['hf']['tokens_per_s']} ({g['speedup']}x); greedy equal {g['greedy_check']['equal']}/{g['greedy_check']['prompts']}")
for method, t in out.get("training", {}).items():
    ours = t['kdagent']['tokens_per_s'] or 0
    # model FLOPs utilisation: 6 FLOPs per parameter per trained token, SmolLM2-135M's 134.5M parameters,
    # against the H100/H200 dense bf16 peak of 989 TFLOP/s
    print(f"training {method}: kdagent {ours} tok/s, TRL defaults {t['trl_defaults']['tokens_per_s']} ({t['speedup']}x); "
          f"kdagent at {100 * 6 * 134.5e6 * ours / 989e12:.1f}% of bf16 peak")
PY
  [ "${PIPESTATUS[0]}" -eq 0 ] || note "$part: no JSON (see $part.log)"
done
rm -f "$OUT"/*.out
