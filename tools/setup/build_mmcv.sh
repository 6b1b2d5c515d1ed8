#!/usr/bin/env bash
# Builds the mmcv wheel (with its compiled CPU ops) once per machine and keeps it in
# the user's cache, so a fresh clone reinstalls it in seconds.
#
# Why this is not a plain `pip install mmcv`: mmcv ships no wheels for this torch,
# its setup.py imports pkg_resources (gone from the setuptools that torch needs) and
# passes -std=c++17 while the torch headers need C++20. So we build in a throw-away
# venv that sees the project venv's torch but has an old setuptools, through
# compiler wrappers that lift the language standard.
#
# Usage: tools/setup/build_mmcv.sh PROJECT_VENV WHEEL_DIR
set -euo pipefail

venv=$(cd "$1" && pwd)
wheel_dir=$2
version=2.1.0

mkdir -p "$wheel_dir"
if compgen -G "$wheel_dir/mmcv-$version-*.whl" >/dev/null; then
    echo "mmcv $version wheel already built in $wheel_dir"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$venv/bin/python" -m venv "$work/build-venv"
build_site=$("$work/build-venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# .pth entries come after the build venv's own site-packages, so its old setuptools wins.
echo "$site" > "$build_site/toponet-project-venv.pth"
"$work/build-venv/bin/pip" install -q "setuptools<70" wheel ninja

mkdir -p "$work/cc"
for name in cc gcc c++ g++; do
    real=$(command -v "$name")
    cat > "$work/cc/$name" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
    if [ "\$a" = "-std=c++17" ] || [ "\$a" = "-std=c++14" ]; then a=-std=c++20; fi
    args+=("\$a")
done
exec "$real" "\${args[@]}"
WRAP
    chmod +x "$work/cc/$name"
done

echo "building mmcv $version with CPU ops (about 15 minutes on 2 cores, once per machine)"
PATH="$work/cc:$work/build-venv/bin:$PATH" CC="$work/cc/gcc" CXX="$work/cc/g++" \
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$work/build-venv/bin/pip" wheel --no-deps --no-build-isolation \
    -w "$work/out" "mmcv==$version"
mv "$work"/out/mmcv-*.whl "$wheel_dir/"
echo "mmcv wheel stored in $wheel_dir"
