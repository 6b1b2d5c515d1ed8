#!/usr/bin/env bash
# Downloads, here, the wheels tools/device_check.sh needs on a GPU machine that has torch,
# Triton, numpy, OpenCV, onnx(runtime), scipy and matplotlib but not this project's other
# packages, and no registry: the pure-Python packages of the stack at the versions pinned in
# requirements.txt or installed in the project venv, plus the detection step's few compiled
# ones, built for the device's Python. Never torch or the packages the device's image brings.
#
# Usage: tools/device_prep.sh [--print] [DEST]
#   DEST     where the wheels go (default: .device_wheels, ignored by git; carry it to the device)
#   --print  list the NAME==VERSION specs and download nothing
# Environment: DEVICE_PYTHON_VERSION (default 3.12, the device image's Python).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
print_only=0
if [ "${1:-}" = "--print" ]; then
    print_only=1
    shift
fi
dest=${1:-$root/.device_wheels}
venv_python=$root/.venv/bin/python
py_version=${DEVICE_PYTHON_VERSION:-3.12}

# pure Python: the training and evaluation steps (timm, mmengine, insightface and their needs
# the image lacks) and mmdet for the detection step; compiled: mmdet's pycocotools and shapely
pure=(timm mmengine addict yapf platformdirs termcolor insightface mmdet terminaltables)
compiled=(pycocotools shapely)

pin() {  # NAME==VERSION from requirements.txt, else from the project venv
    local name=$1 version
    version=$(sed -n "s/^$name==\([^ ;#]*\).*/\1/Ip" "$root/requirements.txt" | head -n 1)
    if [ -z "$version" ]; then
        [ -x "$venv_python" ] || { echo "error: $name is not pinned in requirements.txt and there is no .venv" >&2; exit 1; }
        version=$("$venv_python" -c "import importlib.metadata as m; print(m.version('$name'))")
    fi
    echo "$name==$version"
}

specs=()
for name in "${pure[@]}" "${compiled[@]}"; do specs+=("$(pin "$name")"); done
if [ "$print_only" = 1 ]; then
    printf '%s\n' "${specs[@]}"
    exit 0
fi

mkdir -p "$dest"
pip=("$venv_python" -m pip --disable-pip-version-check)
[ -x "$venv_python" ] || pip=(python3 -m pip --disable-pip-version-check)
n_pure=${#pure[@]}
"${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$py_version" --implementation py \
    --abi none --platform any -d "$dest" "${specs[@]:0:$n_pure}"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$py_version" --implementation cp \
    "${platforms[@]}" -d "$dest" "${specs[@]:$n_pure}"
echo "$(ls "$dest"/*.whl | wc -l) wheels in $dest ($(du -sh "$dest" | cut -f1)); carry it: run(carry=['.device_wheels'], ...)"
