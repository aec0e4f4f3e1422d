# The two README commands: `make lab` and `make test`. Everything installs itself into .venv.
PYTHON ?= python3
VENV   ?= .venv
# PyTorch: the normal wheel by default (a CUDA build on Linux, several GB). CPU-only Linux machines take
# PyTorch's official CPU wheels with  make TORCH_INDEX=https://download.pytorch.org/whl/cpu lab  (~200 MB),
# or a pinned build their pip already has, e.g.  make TORCH=torch==2.13.0 test  (what CI does).
TORCH  ?= torch
TORCH_INDEX ?=
# Jupyter refuses to start as root without --allow-root; containers and cloud notebooks run as root.
ALLOW_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)
LAB_ARGS ?=
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.gptnb-installed
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# More pytest options for every test target, e.g. PYTEST_ARGS="-n 2 --dist loadfile" (pytest-xdist, in the dev
# extra: loadfile keeps each notebook, and each test module's server, on one worker).
PYTEST_ARGS ?=
PYTEST_NB = $(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=1800 -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: install reinstall lab lab-instructor lint test test-fast test-cpu test-bf16 test-min book site assignments clean

install: $(STAMP)

# A pyproject.toml newer than the stamp (a git pull, a copy) installs nothing when what is installed still
# satisfies it (gptnb/installed.py checks the requirements and the packaging part the stamp recorded).
$(STAMP): pyproject.toml
	test -x $(BIN)/python && $(BIN)/python gptnb/installed.py check $@ --extra dev --extra site || $(MAKE) --no-print-directory reinstall
	$(BIN)/python gptnb/installed.py write $@

# Everything, whatever is installed (pip installs only what is missing or too old).
reinstall:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev,site]"
	# The offline SmolLM2 weights, fetched now so that later runs need no network (gptnb/offline_model.py).
	$(BIN)/python -m gptnb.offline_model
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/python gptnb/installed.py write $(STAMP)

# Learners' JupyterLab: etc/jupyter-learner/ turns off nbgrader's instructor tools (Create Assignment, Formgrader,
# Courses); `make lab-instructor` has them. Validate stays.
LEARNER_CONFIG = $(CURDIR)/etc/jupyter-learner$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))
lab: install
	JUPYTER_CONFIG_PATH=$(LEARNER_CONFIG) $(BIN)/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) notebooks/

lab-instructor: install
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) notebooks/

# ruff: lint and format check (line length 120; notebooks excluded), configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Lint, unit tests, and every notebook executed in the tiny profile (seconds each), once: as nbgrader grades its
# student copy with the reference answers beside it (tests/conftest.py's executed_notebooks), which tests/
# test_notebooks_run.py (every cell without an error), test_assignments.py and test_site.py all read.
test: install lint
	GPTNB_PROFILE=tiny $(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests

# The unit tests alone, the check while editing gptnb: no notebook run, no nbgrader course, no wheel build, no
# `gptnb serve` process stopped mid-job, nothing marked slow (the real SmolLM2). make test runs all of them.
FAST_SKIP = tests/test_notebooks_run.py tests/test_assignments.py tests/test_makefile.py tests/test_packaging.py \
	tests/test_api_jobs.py
test-fast: install
	GPTNB_PROFILE=tiny $(BIN)/python -m pytest -p no:cacheprovider -m "not slow" $(PYTEST_ARGS) \
		$(addprefix --ignore=,$(FAST_SKIP)) tests

# Every notebook in the tiny profile in a GPU's dtypes on this machine (gptnb.device.forced_dtype): bf16 as an
# A100/H100 runs them (weights and training), then fp16 as a T4 does: fp16 weights for inference (01-03, 05's
# server) and fp32 weights with fp16 autocast and a loss scaler for 05's fine-tuning job (accelerate alone autocasts
# nothing in fp16 on a CPU; gptnb.finetune.fp16_autocast_on_cpu adds both). Not 04 in fp16: it has no fp16
# inference (it loads fp32 weights and scores with them, on a T4 too); its fp16 part, autocast training through
# gptnb.finetune, is in tests/test_device.py. Time: half-precision matrix products are 2.5-9x slower than fp32 on a
# CPU without bf16 units (AVX2 only), which made 04's whole-sequence fine-tune the stage's largest part; the tiny
# profile's 64 training tweets (8 steps for each of 04's fine-tunes) keep the stage within the 6 minutes it may add
# to CI there.
# Measured 2026-12-08, 2 idle AMD EPYC cores: with AVX-512 bf16, 66 s + 64 s; with torch held to AVX2 code
# (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, as a CPU without bf16 units runs), 137 s + 69 s, where 160
# training tweets took 195 s + 81 s (and 301 s + 120 s on a slower AVX2-only EPYC at load ~1).
test-bf16: install
	GPTNB_DTYPE=bfloat16 GPTNB_PROFILE=tiny $(PYTEST_NB) $(NOTEBOOKS)
	GPTNB_DTYPE=float16 GPTNB_PROFILE=tiny $(PYTEST_NB) $(filter-out notebooks/04_%,$(NOTEBOOKS))

# Every notebook in the cpu profile: the real offline pretrained model (minutes each).
test-cpu: install
	GPTNB_PROFILE=cpu $(PYTEST_NB) $(NOTEBOOKS)

# The unit tests with every dependency at its declared floor (.ci/min-versions.txt), in a Python 3.11 venv of its
# own and a gptnb cache of its own, so that the floors in pyproject.toml stay true.
MIN_VENV ?= .venv-min
MIN_PYTHON ?= python3.11
# Not about dependency floors: the notebooks' tiny run (make test), nbgrader courses, JupyterLab starting, wheel
# building, and the server's own mechanics under load (many requests at once, gptnb serve stopped or killed mid-job;
# minutes of threads and waiting, the same on any version). make test runs them.
MIN_SKIP = tests/test_notebooks_run.py tests/test_assignments.py tests/test_makefile.py tests/test_packaging.py \
	tests/test_api_concurrency.py tests/test_api_jobs.py
test-min:
	test -x $(MIN_VENV)/bin/python || $(MIN_PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet -c .ci/min-versions.txt -e ".[dev]" \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	GPTNB_PROFILE=tiny GPTNB_CACHE=$(abspath $(MIN_VENV))/cache $(MIN_VENV)/bin/python -m pytest -p no:cacheprovider \
		$(addprefix --ignore=,$(MIN_SKIP)) tests

# Executed copies of every notebook as HTML in build/ (profile: GPTNB_PROFILE or auto).
book: install
	mkdir -p build
	$(BIN)/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=3600 --output-dir build $(NOTEBOOKS)

# The course site in build/site/html/ (open index.html): the README, then each notebook with its outputs and figures,
# executed in SITE_PROFILE (cpu by default). Executions are cached per profile in SITE_CACHE (site/conf.py): a
# notebook whose source has not changed is not run again.
SITE_PROFILE ?= cpu
SITE_OUT ?= build/site
SITE_CACHE ?= build/site-cache
site: install
	GPTNB_PROFILE=$(SITE_PROFILE) GPTNB_SITE_CACHE=$(abspath $(SITE_CACHE)) \
		$(BIN)/python -m sphinx -b html -E -c site . $(SITE_OUT)/html -d $(SITE_OUT)/doctrees
	@echo "The course site: $(SITE_OUT)/html/index.html"

# Student copies of the notebooks (solutions removed, checks kept as autograded tests) in build/assignments/,
# made with nbgrader; the README's "For instructors" section says how to hand them out and autograde.
# GRADING_PROFILE: the GPTNB_PROFILE that the course's nbgrader_config.py pins for autograding (tiny: seconds a
# notebook; a submission of 02 takes ~30 minutes in the cpu profile).
GRADING_PROFILE ?= tiny
assignments: install
	$(BIN)/python -m gptnb.exercises.assignments --out build/assignments --profile $(GRADING_PROFILE) $(NOTEBOOKS)

clean:
	rm -rf build .pytest_cache
