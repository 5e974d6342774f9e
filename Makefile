# Set-up and the two quick-start jobs. Everything lives in a virtual environment ($(VENV)).
#
# PyTorch: install the build for your platform FIRST if you want CUDA, e.g. by creating the
# venv yourself, or set TORCH_SPEC. The default below is the plain CPU/CUDA wheel from your
# pip index; on the project's build machines `torch==2.13.0` is a CPU wheel already on disk.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# The main job on a bundled default: synthetic MCs on generated (procedural) backgrounds.
demo: setup
	$(BIN)/mcgenref synth --out demo-output --count 16 --seed 0 --overwrite
	@echo "see demo-output/preview.png and demo-output/manifest.jsonl"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-output .pytest_cache
