# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both do the whole set-up on a fresh machine and skip it when it is already done.
# The console shows one line per set-up step, progress and results; every run's full log is in
# its work dir (make demo VERBOSE=1 shows it all on the console too).
PYTHON ?= python3
VENV ?= .venv
WHEEL_DIR ?= $(HOME)/.cache/toponet/wheels
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_DIR ?= work_dirs/demo
DEMO_CONFIG ?= classification/configs/toponet_fmnist_adaptive.py
DET_DEMO_CONFIG ?= detection/configs/toy/retinanet_toponet-fmnist_fpn_toy.py
FACE_DEMO_CONFIG ?= face/configs/toponet_face_toy.py
PYTEST_ARGS ?=
ifneq ($(VERBOSE),)
export TOPONET_VERBOSE := 1
endif

STAMP := $(VENV)/.toponet-installed
SETUP_INPUTS := requirements.txt pyproject.toml tools/setup/install_env.sh tools/setup/build_mmcv.sh
PY := $(VENV)/bin/python
# one demo step: its result and wall time go to $(DEMO_DIR)/results for the summary
STEP = $(PY) tools/demo_summary.py $(DEMO_DIR) --record
FMNIST_CKPT := $(DEMO_DIR)/fmnist/toponet_fmnist.safetensors
FACE_CKPT := $(DEMO_DIR)/face/train/toponet_face_toy.safetensors

.PHONY: demo test report reproduce setup data clean

# Train a small TopoNet (complete DAGs, alpha, adaptive sparsity) on Fashion-MNIST, score the
# exported checkpoint on the 10k test set, fine-tune a detector from it on toy COCO, train and
# evaluate a face TopoNet on toy identities and export it for insightface; then the summary
# table (also in $(DEMO_DIR)/summary.md). --resume: an interrupted demo continues, a finished
# one is only re-scored (rm -rf $(DEMO_DIR) to train again).
demo: setup data
	@rm -rf $(DEMO_DIR)/results
	@echo "== classification: toponet_fmnist_complete on Fashion-MNIST, then the 10k test images =="
	@$(STEP) classification/train -- $(PY) tools/train_cls.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)/fmnist --resume
	@$(STEP) classification/test -- $(PY) tools/test_cls.py $(DEMO_CONFIG) $(FMNIST_CKPT) \
	    --work-dir $(DEMO_DIR)/test/fmnist
	@$(STEP) classification/test_flip -- $(PY) tools/test_cls.py $(DEMO_CONFIG) $(FMNIST_CKPT) --flip \
	    --work-dir $(DEMO_DIR)/test/fmnist_flip
	@echo "== detection: RetinaNet FPN from that checkpoint, fine-tuned on toy COCO shapes =="
	@$(STEP) detection/data -- $(PY) tools/make_toy_coco.py $(DEMO_DIR)/toy_coco
	@$(STEP) detection/train -- $(PY) tools/train_det.py $(DET_DEMO_CONFIG) --work-dir $(DEMO_DIR)/det --resume \
	    --cfg-options model.backbone.init_cfg.checkpoint=$(FMNIST_CKPT)
	@$(STEP) detection/test -- $(PY) tools/test_det.py $(DET_DEMO_CONFIG) $(DEMO_DIR)/det --work-dir $(DEMO_DIR)/test/det
	@echo "== face: a face TopoNet on toy identities, verification, MegaFace-style identification, ONNX =="
	@$(STEP) face/demo -- $(PY) tools/demo_face.py --config $(FACE_DEMO_CONFIG) --work-dir $(DEMO_DIR)/face
	@$(STEP) face/export -- $(PY) tools/export_face_onnx.py $(FACE_CKPT) --input-size 112 \
	    --out $(DEMO_DIR)/face/toponet_face_toy.onnx
	@$(PY) tools/demo_summary.py $(DEMO_DIR)

# The TopoNet family against the paper's Table 4: edges, params, MACs, adjacency PNGs.
report: setup
	$(VENV)/bin/python tools/toponet_report.py --out-dir work_dirs/toponet_report

# The reproduction study on Fashion-MNIST (docs/reproduction.md): lambda chosen on a validation
# split, a pilot that sizes the seeds, then 4 arms x the planned seeds (8 here) and their
# pre-registered paired contrasts, scored once on the test set. About 3.5 hours on 2 CPU cores;
# finished runs are skipped on the next call and a killed one resumes.
reproduce: setup data
	$(VENV)/bin/python tools/reproduce.py --out-dir work_dirs/reproduce

test: setup data
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# One line per set-up step; pip's output goes to $(VENV)/setup.log.
$(STAMP): $(SETUP_INPUTS)
	@PYTHON=$(PYTHON) bash tools/setup/install_env.sh $(VENV) $(WHEEL_DIR)
	@touch $@

data:
	@bash tools/setup/ensure_fashion_mnist.sh $(FASHION_MNIST_DIR)

clean:
	rm -rf $(VENV) work_dirs .pytest_cache
