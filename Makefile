# Two commands from a fresh clone: `make quickstart` (the main job) and `make test` (the test suite).
# Each creates the virtual environment when it is missing and installs the package into it, torch first
# (a bare torch requirement would pull a CUDA build). VENV=DIR uses another environment (CI: .ci-venv).

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# The suite downloads nothing; these make sure nothing tries.
TEST_COMMAND = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q

.PHONY: quickstart test install

quickstart: $(VENV)/.installed
	$(VENV)/bin/tag2text quickstart --output-dir quickstart

# pytest exits 5 when it collected no test: that is a failure, said so.
test: $(VENV)/.installed
	@echo "$(TEST_COMMAND)"
	@$(TEST_COMMAND); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

install: $(VENV)/.installed

# Reinstalled when the package's requirements change.
$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install $(TORCH)
	$(VENV)/bin/pip install -e ".[test]"
	@touch $@
