# Thin targets; each bootstraps what it needs. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is installed first, the build this machine needs (src/labutils/torch_choice.py: PyTorch's CPU wheels
# without an NVIDIA GPU, a CUDA build the driver can run with one; TORCH_INDEX=URL overrides), so nothing
# later pulls a multi-GB CUDA build onto a machine that cannot use it.
TORCH  ?= torch==2.13.0
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo lab grade-ui hub test test-fast lint release grade mutate bench colab-rehearsal clean

setup: $(STAMP)

CONSTRAINTS := src/labutils/constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS) grader/hub/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python src/labutils/torch_choice.py "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[grader,dev]" -c $(CONSTRAINTS)
	@# bubblewrap sandboxes the kernels that run learners' code while grading; without it grading still
	@# works, with a warning, and less isolation (see grader/README.md).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap)) \
	  || echo "warning: bubblewrap not installed; grading will run kernels with less isolation"; }
	@# Debian chromium drives JupyterLab in the browser tests (pytest -m browser); they skip without it.
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)) \
	  || echo "warning: chromium not installed; the browser tests will be skipped"; }
	@# JupyterHub's proxy (configurable-http-proxy, pinned in grader/hub/package-lock.json) for `make hub`;
	@# Node.js 20+ and npm from Debian when missing. Without them everything but the hub works.
	command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq nodejs npm >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq nodejs npm)); } \
	  || echo "warning: npm not installed; make hub (JupyterHub's proxy) will not work"
	command -v npm >/dev/null && npm ci --prefix grader/hub --no-audit --no-fund --loglevel=error \
	  || echo "warning: configurable-http-proxy not installed; make hub will not work"
	touch $(STAMP)

demo: setup
	$(BIN)/labutils demo

# JupyterLab on the learner notebooks. LAB_DIR, LAB_PORT and LAB_TOKEN change the folder, the port and the
# token (defaults: notebooks/, Jupyter's own port and a fresh token); LAB_FLAGS adds server flags, e.g.
# LAB_FLAGS="--no-browser --allow-root --ServerApp.ip=127.0.0.1" for a headless server.
LAB_DIR   ?= notebooks/
LAB_PORT  ?=
LAB_TOKEN ?=
LAB_FLAGS ?=
LAB_ARGS   = $(if $(LAB_PORT),--ServerApp.port=$(LAB_PORT)) $(if $(LAB_TOKEN),--IdentityProvider.token=$(LAB_TOKEN)) $(LAB_FLAGS)

lab: setup
	$(BIN)/jupyter lab "$(LAB_DIR)" $(LAB_ARGS)

# Formgrader on a graded course folder (what `labutils grade SUBMISSIONS --out COURSE` wrote): JupyterLab
# starts in COURSE; open Nbgrader > Formgrader to see the scores and grade the written answers by hand,
# then `cd COURSE && nbgrader export` for a CSV with the manual grades. LAB_PORT/LAB_TOKEN/LAB_FLAGS apply.
grade-ui: setup
	@test -n "$(COURSE)" && test -f "$(COURSE)/gradebook.db" || \
	  { echo "usage: make grade-ui COURSE=path (a course folder written by labutils grade, with gradebook.db)"; exit 2; }
	cd "$(COURSE)" && $(abspath $(BIN))/jupyter lab $(LAB_ARGS)

# JupyterHub for a class (grader/README.md, "A class on JupyterHub"), as root: each student their own Unix
# account and issued password (HUB_DIR/passwords.csv), their JupyterLab as that account in a memory cgroup;
# fetch, submit and feedback in JupyterLab's Assignments tab. HUB_DIR holds everything; HUB_FLAGS adds e.g.
# --students ada,bo,cy --port 8000 --ip 0.0.0.0, --lti lti.json (launches from the university's LMS instead of
# passwords), or --demo (one account, one shared password: no isolation).
HUB_DIR   ?= hub
HUB_FLAGS ?=
hub: setup
	$(BIN)/labutils hub start --dir "$(HUB_DIR)" $(HUB_FLAGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Everything, the sandboxed grading of both catalogues included. `make test-fast` skips the slow tests.
test: setup lint
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

release: setup
	$(BIN)/labutils release

grade: setup
	$(BIN)/labutils grade $(SUBMISSIONS)

# Mutation testing of the hidden checks: every mutant of the labs' reference solutions, graded (LABS="04_qlora"
# for one lab); the report is mutation/mutation.md.
LABS ?= $(notdir $(basename $(wildcard grader/source/*/*.ipynb)))
mutate: setup
	$(BIN)/labutils mutate $(LABS) --out mutation

# Benchmarks print tables (about 29 minutes on 2 cores); results and commands are kept in bench/README.md.
# bench/world.py compare pretrains the world's base again and compares it with the shipped one.
bench: setup
	$(BIN)/python bench/course.py --dask
	$(BIN)/python bench/grading_overhead.py
	$(BIN)/python bench/world.py compare
	$(BIN)/python bench/world.py capstone
	$(BIN)/python bench/chat_stops.py
	$(BIN)/python bench/capstone_answers.py
	if [ "$$(id -u)" = 0 ]; then $(BIN)/python bench/hub_load.py --students 20; \
	  else echo "bench/hub_load.py skipped: a class hub makes Unix accounts (root only)"; fi

# The workshop path on Colab's own packages (Python 3.13, colab/pip-freeze.gpu.txt) in a Debian 13 chroot: the
# set-up cell for real, then every lab in the hub profile. Root and the network; about 3 GB of downloads.
colab-rehearsal:
	bash colab/rehearse.sh

clean:
	rm -rf out .pytest_cache .ruff_cache
