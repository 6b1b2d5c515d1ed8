#!/usr/bin/env bash
# Creates/updates the project venv from requirements.txt. Called by `make` only when
# requirements.txt, pyproject.toml or these scripts changed since the last install.
# Usage: tools/setup/install_env.sh VENV WHEEL_DIR
set -euo pipefail
venv=$1
wheel_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}

# One console line per step; what pip and the other commands print (their warnings included)
# goes to the set-up log, whose end is shown when a step fails.
mkdir -p "$venv"
log=$(cd "$venv" && pwd)/setup.log
: > "$log"
step() {  # step WHAT COMMAND...
    local what=$1
    shift
    echo "setup: $what"
    if ! "$@" >>"$log" 2>&1; then
        echo "error: set-up step failed: $what (full output in $log; its end:)" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

[ -x "$venv/bin/python" ] || step "virtualenv $venv ($("$python" --version 2>&1))" "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
step "pip, wheel, ninja" "${pip[@]}" install -q --upgrade pip wheel ninja
# torch first: the mmcv build compiles against it
step "$(grep -E '^(torch|torchvision)==' "$root/requirements.txt" | paste -sd' ' -)" \
    "${pip[@]}" install -q $(grep -E '^(torch|torchvision)==' "$root/requirements.txt")
# mmcv with CUDA ops where a CUDA toolkit is usable, else CPU ops (build_mmcv.sh says which
# and why); installed by its path, so the variant chosen is the one installed
mmcv_wheel=$(bash "$here/build_mmcv.sh" "$venv" "$wheel_dir")
step "mmcv from $mmcv_wheel" "${pip[@]}" install -q --no-deps --force-reinstall "$mmcv_wheel"
step "the pinned stack of requirements.txt (timm, mmengine, mmdet, insightface, ...)" \
    "${pip[@]}" install -q --find-links "$wheel_dir" -r "$root/requirements.txt"
step "this project (editable)" "${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
# timm's own model tests (tests/test_timm_suite.py runs them on our models) ship in timm's sdist
# only: fetched once per machine and timm version, the tests/ folder kept
timm_version=$(grep -E '^timm==' "$root/requirements.txt" | cut -d= -f3)
timm_tests=${TOPONET_TIMM_TESTS:-$HOME/.cache/toponet/timm-tests/timm-$timm_version/tests}
if [ ! -f "$timm_tests/test_models.py" ]; then
    sdist_dir=$(mktemp -d)
    step "timm $timm_version's model tests (from its sdist, once per machine)" \
        "${pip[@]}" download -q --no-deps --no-binary :all: "timm==$timm_version" -d "$sdist_dir"
    tar -xzf "$sdist_dir"/timm-*.tar.gz -C "$sdist_dir"
    mkdir -p "$(dirname "$timm_tests")"
    rm -rf "$timm_tests" && cp -r "$sdist_dir/timm-$timm_version/tests" "$timm_tests"
    rm -rf "$sdist_dir"
fi
"$venv/bin/python" -c "import torch, torchvision, timm, mmengine, mmcv.ops, mmdet, insightface, backbones; \
print('environment ready: torch', torch.__version__, '| timm', timm.__version__, '| mmcv', mmcv.__version__, \
'| mmdet', mmdet.__version__)"
