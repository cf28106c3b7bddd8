# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - install, then train the embedded default (iceburg-tiny) as a surveyor and export it
#   make test   - install, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.iceburg-installed

.PHONY: setup demo test go bench clean

setup: $(STAMP)

# torch first and alone, pinned: 2.13.0 is the CPU build that lies on this machine's disk; an
# unpinned torch (or a package asking for a newer one) would pull a multi-GB CUDA build.
# llama-cpp-python builds from source once (10-14 min on 2 cores), then pip's wheel cache makes it seconds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q -e '.[dev,llama,hpo]'
	touch $(STAMP)

# Go's text/template proves the Ollama TEMPLATE renders what the model was trained on.
go:
	@command -v go >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq golang-go >/dev/null)

demo: setup go
	$(VENV)/bin/iceburg-train --model-type surveyor --formats huggingface gguf ollama onnx

test: setup go
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/training_throughput.py

clean:
	rm -rf runs build *.egg-info
