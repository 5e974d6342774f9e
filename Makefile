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

# The main job on embedded defaults: the shipped model segments a generated example mammogram;
# then a small synthetic training set is written, and the result is scored against the
# example's exact mask.
demo: setup
	$(BIN)/mcgenref example --out demo-output/example.dcm --overwrite
	$(BIN)/mcgenref segment demo-output/example.dcm --out demo-output/segmentation --overwrite
	$(BIN)/mcgenref evaluate --pred demo-output/segmentation --truth demo-output/example_truth --out demo-output/evaluation --bootstrap 200
	$(BIN)/mcgenref synth --out demo-output/synthetic --count 16 --seed 0 --overwrite
	@echo "see demo-output/segmentation/report.html, demo-output/evaluation/report.html and demo-output/synthetic/preview.png"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-output .pytest_cache
