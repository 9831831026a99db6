#!/usr/bin/env bash
# The 7B targets on a lent NVIDIA GPU, in one call: build llama-cpp-python with CUDA for this
# card only, write a synthetic 7B-shaped GGUF (benchmarks/synthetic_gguf.py), run
# `lampchat bench -d cuda` on it and judge it with benchmarks/check_targets.py.
#
#   bash benchmarks/gpu_check.sh --prepare   # here: fill .gpu/ with what the GPU machine lacks
#   bash benchmarks/gpu_check.sh --dry-run   # here: every step but the CUDA build, on the CPU
#   bash benchmarks/gpu_check.sh             # there (device tool: carry .gpu), writes to $OUT
#
# The GPU machine reaches no network and has Python 3.12 with numpy, psutil, rich, jinja2,
# httpx, tokenizers, CMake, ninja, scikit-build-core and nvcc (device/KINDS.md); .gpu/ brings
# the rest (14 MB): a slimmed llama-cpp-python sdist (its .git, docs, benches and test
# vocabularies, which the build does not use, removed: 77 MB is over the 64 MiB a call may
# carry), pure-Python wheels, and the bundled model's tokenizer as a 2 MB GGUF. On a user's own GPU machine, README's "7B targets" section gives
# the plain commands instead.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
GPU_DIR=$REPO/.gpu
OUT=${OUT:-$REPO/gpu-check-out}
PRESET=${PRESET:-llama-7b}
QUANT=${QUANT:-Q4_K_M}
WHEELS=(gguf tomlkit platformdirs diskcache)
mode=${1:-run}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

prepare() {
  mkdir -p "$GPU_DIR/wheels"
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  local py=${PYTHON:-.venv/bin/python}
  local version
  version=$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)')
  log "llama-cpp-python $version: sdist"
  local tmp
  tmp=$(mktemp -d)
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  local src=$tmp/llama_cpp_python-$version
  rm -rf "$src/.git" "$src/vendor/llama.cpp/docs" "$src/vendor/llama.cpp/benches" \
         "$src"/vendor/llama.cpp/models/*.gguf*
  rm -f "$GPU_DIR"/llama_cpp_python-*.tar.gz
  tar -czf "$GPU_DIR/llama_cpp_python-$version.tar.gz" -C "$tmp" "llama_cpp_python-$version"
  rm -rf "$tmp"
  log "wheels: ${WHEELS[*]}"
  rm -f "$GPU_DIR"/wheels/*.whl
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --platform any -d "$GPU_DIR/wheels" "${WHEELS[@]}"
  log "tokenizer"
  "$py" benchmarks/synthetic_gguf.py --write-tokenizer "$GPU_DIR/tokenizer.gguf" >/dev/null
  du -sh "$GPU_DIR"
  du -sb "$GPU_DIR" | awk '$1 > 60 * 1048576 { print "too large to carry (64 MiB a call)"; exit 1 }'
}

install_wheels() {  # $1: python
  "$1" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/lampchat-site "$GPU_DIR"/wheels/*.whl
}

run_checks() {  # $1: python, $2: device, $3: preset, $4: quant
  local py=$1 device=$2 model=/tmp/synthetic-$3-$4.gguf
  log "writing $3 $4 to $model"
  "$py" benchmarks/synthetic_gguf.py "$3" -q "$4" -o "$model" \
    --tokenizer "$GPU_DIR/tokenizer.gguf" 2>&1 | tr '\r' '\n' | tail -n 1
  log "lampchat bench on $device"
  "$py" -m app bench -m "$model" -b llama.cpp -d "$device" -r 3 -p 512 -n 128 --no-raw \
    --json "$OUT/bench.json" 2>&1
  log "check_targets"
  "$py" benchmarks/check_targets.py "$OUT/bench.json" | tee "$OUT/targets.txt" || true
  ls -la "$model"
}

case "$mode" in
  --prepare)
    prepare
    ;;
  --dry-run)
    [ -f "$GPU_DIR/tokenizer.gguf" ] || { echo "run --prepare first" >&2; exit 1; }
    mkdir -p "$OUT"
    py=${PYTHON:-.venv/bin/python}
    log "dry run: wheels install, sdist contents, then a tiny model on the CPU"
    install_wheels "$py"
    tar -tzf "$GPU_DIR"/llama_cpp_python-*.tar.gz > "$OUT/sdist-files.txt"
    grep -q 'vendor/llama.cpp/ggml/src/ggml-cuda/CMakeLists.txt' "$OUT/sdist-files.txt"
    log "the sdist holds llama.cpp's CUDA sources; the CUDA build is skipped here"
    run_checks "$py" cpu tiny "$QUANT" 2>&1 | tee "$OUT/log.txt"
    ;;
  run)
    mkdir -p "$OUT"
    exec > >(tee "$OUT/log.txt") 2>&1
    command -v nvidia-smi >/dev/null || { echo "no NVIDIA GPU here (nvidia-smi missing)"; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
    py=python3
    install_wheels "$py"
    log "building llama-cpp-python with CUDA for sm_$arch on $(nproc) cores"
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
      --target /tmp/lampchat-site "$GPU_DIR"/llama_cpp_python-*.tar.gz
    export PYTHONPATH=/tmp/lampchat-site:$REPO
    log "built: $("$py" -c 'import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_supports_gpu_offload())')"
    "$py" -m app devices || true
    run_checks "$py" cuda "$PRESET" "$QUANT"
    ;;
  *)
    echo "usage: $0 [--prepare|--dry-run]" >&2
    exit 2
    ;;
esac
