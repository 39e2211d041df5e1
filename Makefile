# Set-up and the two commands of README's quick start.
# torch is installed first from its CPU build (`torch==2.13.0`), so that the project's
# dependencies never pull the multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: install demo reproduce test bench clean browser

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,ray,phate,lightning,huggingface]'
	touch $@

install: $(VENV)/.installed

# The main job: every finding of the studies, figures and report (quick profile, 2 cores).
reproduce: install
	$(VENV)/bin/trajviz reproduce --profile quick

# One experiment on the built-in default (no download). --resume: a second `make demo` finishes
# an interrupted recording or just prints the summary; it never replaces a recorded file.
demo: install
	$(VENV)/bin/trajviz record --resume

# Tests run tiny workloads, for which one torch thread per process is fastest (and keeps the
# suite's subprocesses from oversubscribing a 2-core machine).
test: install browser
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q

# The tests of interactive pages open them in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the page tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) build *.egg-info
