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

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip wheel ninja
# torch first: the mmcv build compiles against it
"${pip[@]}" install -q $(grep -E '^(torch|torchvision)==' "$root/requirements.txt")
bash "$here/build_mmcv.sh" "$venv" "$wheel_dir"
"${pip[@]}" install -q --find-links "$wheel_dir" -r "$root/requirements.txt"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -c "import torch, torchvision, timm, mmengine, mmcv.ops, mmdet, insightface, backbones; \
print('environment ready: torch', torch.__version__, '| timm', timm.__version__, '| mmcv', mmcv.__version__, \
'| mmdet', mmdet.__version__)"
