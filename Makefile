# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both do the whole set-up on a fresh machine and skip it when it is already done.
PYTHON ?= python3
VENV ?= .venv
WHEEL_DIR ?= $(HOME)/.cache/toponet/wheels
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_DIR ?= work_dirs/demo
PYTEST_ARGS ?=

STAMP := $(VENV)/.toponet-installed
SETUP_INPUTS := requirements.txt pyproject.toml tools/setup/install_env.sh tools/setup/build_mmcv.sh

.PHONY: demo test setup data clean

demo: setup data
	$(VENV)/bin/python tools/toponet_report.py --out-dir $(DEMO_DIR)

test: setup data
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) bash tools/setup/install_env.sh $(VENV) $(WHEEL_DIR)
	touch $@

data:
	@bash tools/setup/ensure_fashion_mnist.sh $(FASHION_MNIST_DIR)

clean:
	rm -rf $(VENV) work_dirs .pytest_cache
