# Two commands from a fresh clone: `make quickstart` (the main job) and `make test` (the test suite).
# Each creates the virtual environment when it is missing and installs the package into it, torch first
# (a bare torch requirement would pull a CUDA build). VENV=DIR uses another environment (CI: .ci-venv).
# `make test` also installs the system programs the suite drives (Java, Chromium and its driver) when missing.
# `make compat` runs the compatibility set on the oldest and the newest supported transformers, each in a
# fresh environment of its own (.compat-VERSION).

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# The suite downloads nothing; these make sure nothing tries.
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TEST_COMMAND = $(OFFLINE) $(VENV)/bin/pytest -q

# Programs the suite runs and the Debian packages that bring them: Java for the COCO caption toolkit (the
# reference tokenizer and METEOR), headless Chromium and its driver for the demo page's browser test.
# Each entry is COMMAND:PACKAGE; only the packages of missing commands are installed.
SYSTEM_PROGRAMS = java:default-jre-headless chromium:chromium chromedriver:chromium-driver
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

# The supported transformers range, tested at both ends (setup.cfg declares the same range).
TRANSFORMERS_OLDEST ?= 5.0.0
TRANSFORMERS_NEWEST ?= 5.25.0
# Models, processor, generation, remote code from a saved directory without the package, pipelines, the
# plain-Trainer recipe, conversion parity, the pre-training losses (two gloo processes included) and retrieval.
COMPAT_TESTS ?= tests/test_version_compat.py tests/test_processing.py tests/test_hub_payload.py \
	tests/test_conversion.py tests/test_conversion_parity.py tests/test_attention_masks.py tests/test_modeling.py \
	tests/test_model_contract.py tests/test_generation.py tests/test_cpu_inference.py tests/test_cli_caption.py \
	tests/test_cli_readme.py tests/test_auto_registration.py tests/test_readme_finetune.py \
	tests/test_training_plain_trainer.py tests/test_ram_parity.py tests/test_ram_conversion.py \
	tests/test_ram_open_set.py tests/test_ram_training.py tests/test_pretraining.py tests/test_retrieval.py

.PHONY: quickstart test install system-packages compat

quickstart: $(VENV)/.installed
	$(VENV)/bin/tag2text quickstart --output-dir quickstart

# pytest exits 5 when it collected no test: that is a failure, said so.
test: $(VENV)/.installed system-packages
	@echo "$(TEST_COMMAND)"
	@$(TEST_COMMAND); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

install: $(VENV)/.installed

system-packages:
	@missing=""; for entry in $(SYSTEM_PROGRAMS); do \
		command -v $${entry%%:*} >/dev/null || missing="$$missing $${entry#*:}"; done; \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null || { echo "make: the tests need the Debian packages$$missing (or their equivalents); install them and run make test again" >&2; exit 2; }; \
		echo "make: installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq$$missing; \
	fi

# Reinstalled when the package's requirements change.
$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install $(TORCH)
	$(VENV)/bin/pip install -e ".[test]"
	@touch $@

compat: compat-$(TRANSFORMERS_OLDEST) compat-$(TRANSFORMERS_NEWEST)

compat-%: system-packages
	rm -rf .compat-$*
	$(PYTHON) -m venv .compat-$*
	.compat-$*/bin/pip install --quiet --upgrade pip
	.compat-$*/bin/pip install --quiet $(TORCH)
	.compat-$*/bin/pip install --quiet -e ".[test]" "transformers==$*"
	@.compat-$*/bin/python -c "import transformers; print('compat: transformers', transformers.__version__)"
	$(OFFLINE) .compat-$*/bin/pytest -q $(COMPAT_TESTS)
