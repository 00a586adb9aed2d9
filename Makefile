# The two commands a new machine needs:
#   make quickstart   set everything up, then run the shipped pipeline end to end
#   make test         set everything up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup browser quickstart test bench reference clean

$(BIN)/weightsmith: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a looser requirement could pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/weightsmith

quickstart: setup
	$(BIN)/weightsmith quickstart

# Headless Chromium for the HTML page tests (Debian's package; Playwright from the venv drives it).
# Best effort and idempotent: where it cannot be installed (not root, no apt) those tests skip, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium is not installed and could not be (as root: apt-get install chromium); the HTML page tests will skip"

# Two pytest workers, one thread each: most of the suite waits on subprocesses, servers and imports,
# and two single-threaded workers never fight over the two cores as two multi-threaded torch processes do.
test: setup browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

bench: setup  # speed ratios, not tests (bench/README.md)
	$(BIN)/python bench/run.py

reference: setup  # docs/reference/ from the code (a test fails when it is stale)
	$(BIN)/weightsmith reference --output docs/reference

clean:
	rm -rf $(VENV) .pytest_cache quickstart-workspace
