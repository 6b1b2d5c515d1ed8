#!/usr/bin/env bash
# Makes sure the Fashion-MNIST IDX files are present (the project's small real dataset).
# Usage: tools/setup/ensure_fashion_mnist.sh [DIR]   (default: the Debian package's path)
set -euo pipefail
dir=${1:-${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}}
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

have_all() { for f in "${files[@]}"; do [ -s "$dir/$f" ] || return 1; done; }

if have_all; then
    exit 0
fi
if [ "$dir" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Fashion-MNIST missing: installing the Debian package dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
    have_all && exit 0
fi
echo "error: Fashion-MNIST not found in $dir (expected ${files[*]})." >&2
echo "Install it with 'apt-get install dataset-fashion-mnist' (as root), or download the four IDX" >&2
echo "files and point FASHION_MNIST_DIR at their folder." >&2
exit 1
