PYTHON ?= python
PYTEST_ARGS ?=

.PHONY: install test test-all demo demo-quick demo-deps

# torch first: with no torch present, an unpinned resolve would pull a multi-GB CUDA build.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[test]"

# pytest exit code 5 (no tests collected) is a failure like any other non-zero code.
test:
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests

# The CPU demo: installs what is missing (only then), then runs tools/demo.py (~15 min on 2 cores).
demo-deps:
	@$(PYTHON) -c "import torch, spconv, nuscenes, easydict, tensorboard, rdd" 2>/dev/null || $(MAKE) install

demo: demo-deps
	$(PYTHON) tools/demo.py $(DEMO_ARGS)

# ~2-minute smoke run of the same pipeline.
demo-quick: demo-deps
	$(PYTHON) tools/demo.py --quick $(DEMO_ARGS)
