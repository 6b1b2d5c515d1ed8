# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both do the whole set-up on a fresh machine and skip it when it is already done.
PYTHON ?= python3
VENV ?= .venv
WHEEL_DIR ?= $(HOME)/.cache/toponet/wheels
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_DIR ?= work_dirs/demo
DEMO_CONFIG ?= classification/configs/toponet_fmnist_adaptive.py
DET_DEMO_CONFIG ?= detection/configs/toy/retinanet_toponet-fmnist_fpn_toy.py
PYTEST_ARGS ?=

STAMP := $(VENV)/.toponet-installed
SETUP_INPUTS := requirements.txt pyproject.toml tools/setup/install_env.sh tools/setup/build_mmcv.sh

.PHONY: demo test report reproduce setup data clean

# Train a small TopoNet (complete DAGs, alpha, adaptive sparsity) on Fashion-MNIST, score the
# exported checkpoint on the 10k test set, fine-tune a detector from it on toy COCO, and train
# and evaluate a face TopoNet on toy identities. --resume: an interrupted demo continues, a finished
# one is only re-scored (rm -rf $(DEMO_DIR) to train again).
demo: setup data
	$(VENV)/bin/python tools/train_cls.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)/fmnist --resume
	$(VENV)/bin/python tools/test_cls.py $(DEMO_CONFIG) $(DEMO_DIR)/fmnist/toponet_fmnist.safetensors
	$(VENV)/bin/python tools/test_cls.py $(DEMO_CONFIG) $(DEMO_DIR)/fmnist/toponet_fmnist.safetensors --flip
	$(VENV)/bin/python tools/make_toy_coco.py $(DEMO_DIR)/toy_coco
	$(VENV)/bin/python tools/train_det.py $(DET_DEMO_CONFIG) --work-dir $(DEMO_DIR)/det --resume \
	    --cfg-options model.backbone.init_cfg.checkpoint=$(DEMO_DIR)/fmnist/toponet_fmnist.safetensors
	$(VENV)/bin/python tools/test_det.py $(DET_DEMO_CONFIG) $(DEMO_DIR)/det
	$(VENV)/bin/python tools/demo_face.py --work-dir $(DEMO_DIR)/face
	@echo "outputs: classification checkpoint $(DEMO_DIR)/fmnist/toponet_fmnist.safetensors, learned adjacency" \
	      "$(DEMO_DIR)/fmnist/adjacency.png, alpha histogram $(DEMO_DIR)/fmnist/alpha_hist.png, topology" \
	      "$(DEMO_DIR)/fmnist/topology.{json,npz}; detector $(DEMO_DIR)/det; face model, verification and" \
	      "CMC curves $(DEMO_DIR)/face"

# The TopoNet family against the paper's Table 4: edges, params, MACs, adjacency PNGs.
report: setup
	$(VENV)/bin/python tools/toponet_report.py --out-dir work_dirs/toponet_report

# The reproduction study of Tables 4 and 7 and Figures 3-6 on Fashion-MNIST: 14 variants x
# 5 seeds plus the analyses, about 75 min on 2 CPU cores (docs/reproduction.md). Finished runs
# are skipped on the next call.
reproduce: setup data
	$(VENV)/bin/python tools/reproduce.py --out-dir work_dirs/reproduce

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
