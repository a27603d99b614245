#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored): everything the one device call of benchmarks/gpu/check.sh carries.
#   .gpu/wheels/     Python 3.12 wheels of the packages the GPU machine lacks (wheels.txt), and of kdagent and its
#                    domain plugins as they are in this checkout (so re-run this after changing the code)
#   .gpu/tokenizer/  the embedded SmolLM2-135M-Instruct's tokenizer, chat template and config, without its weights
#                    (the ~94 MiB GGUF does not fit the 64 MiB a call carries; the checks use random weights of its shape)
# Run from anywhere after `make setup`; then, with the device tool:
#   run(command="bash benchmarks/gpu/check.sh", carry=[".gpu"], timeout_s=480)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=benchmarks/gpu
PY=.venv/bin/python
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/tokenizer
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .gpu/wheels -r "$HERE/wheels.txt" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .gpu/wheels . plugins/kdagent-* 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
model=$("$PY" -c "from kdagent.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))")
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  cp "$model/$f" .gpu/tokenizer/
done
expected=$(grep -c '^[a-z]' "$HERE/wheels.txt")
got=$(ls .gpu/wheels | grep -vc '^kdagent')
if [ "$got" -ne "$expected" ]; then
  echo "prepare: $got of the $expected wheels in $HERE/wheels.txt were downloaded" >&2
  exit 1
fi
mib=$(du -sm --exclude=.venv --exclude=.git . | cut -f1)
echo "prepare: .gpu holds $(ls .gpu/wheels | wc -l) wheels and the tokenizer; the call carries about $mib MiB (limit 64)"
[ "$mib" -lt 64 ] || { echo "prepare: over the 64 MiB a device call carries" >&2; exit 1; }
