#!/usr/bin/env bash
# The suite's GPU check: one GPU, at most 8 minutes, under the machine's own Python (a torch
# with CUDA and Triton, not this project's pins). Steps:
#   setup       a venv that sees that Python's packages, plus the wheels carried in .device_wheels/
#   env         torch, CUDA, the GPU, bf16, Triton, mmcv's ops
#   cuda_tests  the CUDA tests: float64 equivalence of the stacked aggregation (whole network, both
#               input paths) and of the Triton row sum, MegaFace identification and an AMP train step
#   cls         a short classification training run, then its test (--device cuda --amp)
#   face        a short face training run, then MegaFace-style identification (--device cuda --amp)
#   det         the detection toy run (--device cuda --amp), where mmcv with CUDA ops imports
#   bench       tools/benchmark.py --device cuda --amp
# and writes one JSON summary (summary.json) and one log (device_check.log).
#
# Usage: tools/device_check.sh [--dry-run] [--python PY] [--out-dir DIR] [--only STEP[,STEP...]]
#   --dry-run  the same steps on this machine's CPU, tiny and with --device cpu --amp: checks the
#              script itself (the CUDA tests then skip, the detection run needs mmcv's CPU ops)
#   --python   the interpreter whose torch is used (default: python3; with --dry-run, .venv/bin/python)
#   --out-dir  where summary.json and device_check.log go (default: $OUT when set, else
#              work_dirs/device_check)
#   --only     run these steps only (setup always runs)
# Exit status 0 when no step failed (a skipped step is no failure), 1 otherwise, 2 for bad flags.
#
# Packages the machine lacks travel as wheels: tools/device_prep.sh downloads them into
# .device_wheels/ (carry that folder). They are installed into a venv under $TMPDIR that also
# sees the interpreter's own site-packages through a .pth file, carried wheels first. (Not
# --system-site-packages: the interpreter may itself be a venv's, whose packages that flag
# would look past.)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dry_run=0
python=""
out_dir=""
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --python) python=${2:?--python needs an interpreter}; shift ;;
        --out-dir) out_dir=${2:?--out-dir needs a folder}; shift ;;
        --only) only=${2:?--only needs step names}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done
steps_known=" setup env cuda_tests cls face det bench "
for step in ${only//,/ }; do
    case "$steps_known" in *" $step "*) ;; *) echo "error: --only: unknown step $step (known:$steps_known)" >&2; exit 2 ;; esac
done
if [ -z "$python" ]; then
    if [ "$dry_run" = 1 ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
command -v "$python" >/dev/null || { echo "error: --python $python: not found" >&2; exit 2; }
out_dir=${out_dir:-${OUT:-$root/work_dirs/device_check}}
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
log=$out_dir/device_check.log
: > "$log"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/toponet-device-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
results=$scratch/steps.tsv
: > "$results"
cd "$root"

if [ "$dry_run" = 1 ]; then
    device=cpu
    budget_s=${DEVICE_CHECK_BUDGET_S:-900}   # 2 shared CPU cores
else
    device=cuda
    budget_s=${DEVICE_CHECK_BUDGET_S:-470}   # under 8 minutes, with room for the summary
fi
start_s=$SECONDS
say() { echo "[device_check] $*" | tee -a "$log" >&2; }
wanted() { [ -z "$only" ] || case ",$only," in *",$1,"*) true ;; *) false ;; esac; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >> "$results"; }

# run_step NAME TIMEOUT_S FUNCTION: the function runs in its own bash (set -eu, so its first
# failing command ends it) under a timeout; its output goes to the log, its status, time and
# last line (a tool's JSON result) to the summary. The timeout shrinks to what is left of the
# budget.
run_step() {
    local name=$1 limit=$2 function=$3 left status begin last
    left=$(( budget_s - (SECONDS - start_s) ))
    if [ "$left" -lt 20 ]; then
        say "$name: skipped, the ${budget_s} s budget is spent"
        record "$name" skipped 0 "budget spent"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "$name: running (at most ${limit} s)"
    echo "----- $name" >> "$log"
    begin=$SECONDS
    set +e
    timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $function" > "$scratch/$name.out" 2>&1
    status=$?
    set -e
    cat "$scratch/$name.out" >> "$log"
    last=$(grep -v '^\s*$' "$scratch/$name.out" | tail -n 1 || true)
    if [ "$status" = 0 ]; then
        record "$name" passed $(( SECONDS - begin )) "$last"
    elif [ "$status" = 124 ] || [ "$status" = 137 ]; then
        record "$name" failed $(( SECONDS - begin )) "timed out after ${limit} s"
    else
        record "$name" failed $(( SECONDS - begin )) "exit status $status: $last"
    fi
    say "$name: $(tail -n 1 "$results" | cut -f2) in $(( SECONDS - begin )) s"
}
skip_step() { say "$1: skipped: $2"; record "$1" skipped 0 "$2"; }

# -- setup: the venv -------------------------------------------------------------------------
venv=$scratch/venv
py=$venv/bin/python
setup() {
    "$python" -m venv --without-pip "$venv"
    local venv_site
    venv_site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # the interpreter's own packages (torch, ...), after the venv's: carried wheels win
    "$python" -c 'import site, sys, sysconfig
paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]] + site.getsitepackages()
print("\n".join(dict.fromkeys(p for p in paths if p)))' > "$venv_site/toponet-device-base.pth"
    local wheels=("$root"/.device_wheels/*.whl)
    if [ ! -f "${wheels[0]}" ]; then
        echo "no carried wheels in .device_wheels/"
    elif [ "$dry_run" = 1 ]; then
        echo "dry run: not installing the ${#wheels[@]} carried wheels (built for the device's Python)"
    else
        # --target: straight into the venv, never touching (uninstalling) the interpreter's own copies
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --upgrade --target "$venv_site" "${wheels[@]}"
        echo "installed ${#wheels[@]} carried wheels"
    fi
    # what every step needs (mmcv and mmdet only the detection step)
    "$py" -c 'import torch, timm, mmengine, safetensors, networkx, cv2, insightface, backbones, face, classification
print("imports ok: torch", torch.__version__, "timm", timm.__version__, "mmengine", mmengine.__version__)'
}
export PYTHONPATH="$root:$root/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore MPLBACKEND=Agg
if [ "$dry_run" = 1 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; fi

# -- the steps ---------------------------------------------------------------------------------
env_probe() {
    "$py" - <<'PY'
import json
import subprocess

import torch
info = dict(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
if torch.cuda.is_available():
    from backbones.amp import amp_dtype
    info.update(gpu=torch.cuda.get_device_name(0), capability='%d.%d' % torch.cuda.get_device_capability(0),
                gpus=torch.cuda.device_count(), amp_dtype=str(amp_dtype('cuda')))
    try:
        info['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
try:
    import triton
    info['triton'] = triton.__version__
except ImportError:
    info['triton'] = None
try:
    from mmcv.ops import get_compiling_cuda_version
    import mmcv
    info['mmcv'] = mmcv.__version__
    info['mmcv_ops_cuda'] = get_compiling_cuda_version()
except Exception as err:  # any import failure means: no usable mmcv ops here
    info['mmcv'] = None
    info['mmcv_error'] = f'{type(err).__name__}: {err}'
print(json.dumps(info))
PY
}

cuda_tests() {
    local status=0
    "$py" -m pytest -q -p no:cacheprovider -rs --junitxml="$scratch/junit.xml" \
        -k 'on_gpu or stacked_aggregation_on_cuda' tests/test_dag.py tests/test_gpu_path.py || status=$?
    "$py" - "$scratch/junit.xml" "$dry_run" "$status" <<'PY'
import json
import sys
import xml.etree.ElementTree as ET
junit, dry_run, status = sys.argv[1], sys.argv[2] == '1', int(sys.argv[3])
suite = ET.parse(junit).getroot()
suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
counts = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
counts['passed'] = counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']
print(json.dumps(counts))
# on a GPU every selected test must have run; on the dry run's CPU they skip
ran = counts['tests'] > 0 and (dry_run or (counts['passed'] > 0 and counts['skipped'] == 0))
sys.exit(0 if status == 0 and ran else 1)
PY
}

cls_run() {
    local data=$scratch/fmnist work=$scratch/cls n_train=2048 epochs=2
    [ "$dry_run" = 1 ] && n_train=256 epochs=1
    "$py" -c "from helpers.tiny_data import make_fmnist; make_fmnist('$data', n_train=$n_train, n_test=256)"
    local config=classification/configs/toponet_fmnist_adaptive.py
    local options=("train_dataloader.dataset.root=$data" "val_dataloader.dataset.root=$data"
                   "test_dataloader.dataset.root=$data" train_dataloader.dataset.holdout=50
                   val_dataloader.dataset.holdout=50 train_dataloader.batch_size=64 "train_cfg.max_epochs=$epochs"
                   default_hooks.logger.interval=10)
    "$py" tools/train_cls.py "$config" --work-dir "$work" --device "$device" --amp --cfg-options "${options[@]}"
    "$py" tools/test_cls.py "$config" "$work/toponet_fmnist.safetensors" --work-dir "$work/test" --device "$device" \
        --amp --cfg-options "test_dataloader.dataset.root=$data"
}

face_run() {
    local data=$scratch/face work=$scratch/face_run
    "$py" -c "from face.toy_data import make_toy_face_data
make_toy_face_data('$data', train_identities=8, images_per_identity=8, verification_pairs=20, probe_identities=4,
                   images_per_probe=3, distractors=101, progress=False)"
    local iters=40
    [ "$dry_run" = 1 ] && iters=4
    "$py" tools/train_face.py face/configs/toponet_face_toy.py --work-dir "$work" --device "$device" --amp \
        --cfg-options "train_dataloader.dataset.root=$data/train" train_dataloader.dataset.num_classes=8 \
        model.head.num_classes=8 train_dataloader.batch_size=16 "train_cfg.max_iters=$iters" \
        "custom_hooks.0.bins=[$data/train/toy_val.bin]" "custom_hooks.0.interval=$iters" \
        "custom_hooks.1.interval=$iters" "default_hooks.checkpoint.interval=$iters" param_scheduler.0.end=1 \
        param_scheduler.1.begin=1 "param_scheduler.1.end=$iters"
    local mf=$data/megaface
    "$py" tools/eval_megaface.py "$work/toponet_face_toy.safetensors" --device "$device" --amp \
        --facescrub-root "$mf/facescrub" --facescrub-list "$mf/facescrub_features_list.json" \
        --megaface-root "$mf/megaface" --megaface-list "$mf/megaface_features_list.json" \
        --facescrub-noises "$mf/facescrub_noises.txt" --megaface-noises "$mf/megaface_noises.txt" \
        --sizes 10 100 --far 0.01 --out-dir "$work/megaface"
}

det_ready() {  # mmcv with ops for this device, and mmdet
    "$py" -c "import sys, torch, mmdet
from mmcv.ops import get_compiling_cuda_version
sys.exit(0 if '$device' == 'cpu' or get_compiling_cuda_version() not in ('', 'not available') else 1)" \
        >/dev/null 2>&1
}

det_run() {
    local data=$scratch/toy_coco work=$scratch/det
    "$py" tools/make_toy_coco.py "$data" --num-train 16 --num-val 8 --image-size 64 --min-size 12 --max-size 28
    "$py" -c "import timm, backbones
from backbones.checkpoint import save_checkpoint
model = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
save_checkpoint('$scratch/fmnist.safetensors', model, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))"
    local options=("model.backbone.init_cfg.checkpoint=$scratch/fmnist.safetensors" train_cfg.max_epochs=1
                   train_dataloader.batch_size=4 model.test_cfg.score_thr=0.0)
    local loader evaluator
    for loader in train_dataloader val_dataloader test_dataloader; do options+=("$loader.dataset.data_root=$data/"); done
    for evaluator in val_evaluator test_evaluator; do
        options+=("$evaluator.ann_file=$data/annotations/instances_val.json")
    done
    local config=detection/configs/toy/retinanet_toponet-fmnist_fpn_toy.py
    "$py" tools/train_det.py "$config" --work-dir "$work" --device "$device" --amp --cfg-options "${options[@]}"
    "$py" tools/test_det.py "$config" "$work" --work-dir "$work/test" --device "$device" --amp \
        --cfg-options "${options[@]}"
}

bench_run() {
    if [ "$dry_run" = 1 ]; then
        "$py" tools/benchmark.py --device cpu --amp --suites agg --batch-size 2 --infer-batch-size 2 --input-size 64 \
            --runs 1 --warmup 0 --out "$out_dir/benchmark.json"
    else
        "$py" tools/benchmark.py --device cuda --amp --runs 3 --warmup 1 --out "$out_dir/benchmark.json"
    fi
}

export root scratch venv py python device dry_run out_dir
export -f setup env_probe cuda_tests cls_run face_run det_run bench_run
run_step setup 120 setup
setup_status=$(tail -n 1 "$results" | cut -f2)
if [ "$setup_status" != passed ]; then
    for step in env cuda_tests cls face det bench; do wanted "$step" && skip_step "$step" "setup failed"; done
else
    wanted env && run_step env 60 env_probe
    wanted cuda_tests && run_step cuda_tests 150 cuda_tests
    wanted cls && run_step cls 120 cls_run
    wanted face && run_step face 120 face_run
    if wanted det; then
        if det_ready; then
            run_step det 150 det_run
        else
            skip_step det "mmcv with $device ops (and mmdet) not importable under $python"
        fi
    fi
    wanted bench && run_step bench 240 bench_run
fi

# -- the summary -------------------------------------------------------------------------------
"$python" - "$results" "$out_dir/summary.json" "$dry_run" "$device" "$python" "$(( SECONDS - start_s ))" <<'PY'
import json
import os
import sys
results, out, dry_run, device, python, seconds = sys.argv[1:7]
steps = {}
for line in open(results):
    name, status, took, detail = (line.rstrip('\n').split('\t') + [''])[:4]
    entry = dict(status=status, seconds=int(took), detail=detail)
    try:  # a tool's last line is its JSON result
        entry['result'] = json.loads(detail)
    except ValueError:
        pass
    steps[name] = entry
summary = dict(dry_run=dry_run == '1', device=device, python=python, seconds=int(seconds),
               passed=all(s['status'] != 'failed' for s in steps.values()), steps=steps)
tmp = out + '.tmp'
with open(tmp, 'w') as f:
    json.dump(summary, f, indent=1)
os.replace(tmp, out)
print(json.dumps(dict(passed=summary['passed'], seconds=summary['seconds'],
                      steps={k: v['status'] for k, v in steps.items()})))
PY
say "summary: $out_dir/summary.json, log: $log"
! grep -q $'\tfailed\t' "$results"
