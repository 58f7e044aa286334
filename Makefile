PYTHON ?= python
PYTEST_ARGS ?=

.PHONY: install test test-all demo demo-quick

# torch first: with no torch present, an unpinned resolve would pull a multi-GB CUDA build.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[test]"

# pytest exit code 5 (no tests collected) is a failure like any other non-zero code.
test:
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests
