# Set-up and the two commands of README's quick start.
# torch is installed first from its CPU build (`torch==2.13.0`), so that the project's
# dependencies never pull the multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
# The extras `make test` installs on top of the core: the test tools and every optional
# integration the suite tests with the real package (Ray: `sweep --ray`, `reproduce --ray`;
# PHATE: `project --method phate`; the Lightning and Hugging Face callbacks). An integration
# that gets an extra in pyproject.toml and tests adds its name here, and only here. A test that
# skips where its extra is missing names it in the reason (pip install 'trajviz[NAME]'); under
# `make test` (TRAJVIZ_TEST_EXTRAS) such a skip fails instead (tests/conftest.py).
TEST_EXTRAS ?= test,ray,phate,lightning,huggingface

comma := ,
TESTED := $(VENV)/.installed-$(subst $(comma),-,$(TEST_EXTRAS))

.PHONY: install install-test demo reproduce test bench clean browser

# The core only: what `trajviz reproduce`, `record` and the analysis scripts need.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(TESTED): $(VENV)/.installed
	$(PY) -m pip install -q -e '.[$(TEST_EXTRAS)]'
	touch $@

# Both report what the venv holds: packages and size on disk.
install: $(VENV)/.installed
	@echo "$(VENV): $$($(PY) -m pip list --format=freeze 2>/dev/null | wc -l) packages, $$(du -sh $(VENV) | cut -f1) (core; \`make test\` adds [$(TEST_EXTRAS)])"

install-test: $(TESTED)
	@echo "$(VENV): $$($(PY) -m pip list --format=freeze 2>/dev/null | wc -l) packages, $$(du -sh $(VENV) | cut -f1) (core + [$(TEST_EXTRAS)])"

# The main job: every finding of the studies, figures and report (quick profile, 2 cores).
reproduce: install
	$(VENV)/bin/trajviz reproduce --profile quick

# One experiment on the built-in default (no download). --resume: a second `make demo` finishes
# an interrupted recording or just prints the summary; it never replaces a recorded file.
demo: install
	$(VENV)/bin/trajviz record --resume

# Tests run tiny workloads, for which one torch thread per process is fastest (and keeps the
# suite's subprocesses from oversubscribing a 2-core machine).
test: install-test browser
	TRAJVIZ_TEST_EXTRAS=$(TEST_EXTRAS) OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q

# The tests of interactive pages open them in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the page tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) build *.egg-info
