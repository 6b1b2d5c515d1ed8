#!/usr/bin/env bash
# Builds the mmcv wheel (with its compiled ops) once per machine and keeps it in the user's
# cache, so a fresh clone reinstalls it in seconds. Prints the wheel's path as its only
# stdout line (progress goes to stderr).
#
# Why this is not a plain `pip install mmcv`: mmcv ships no wheels for this torch, its
# setup.py imports pkg_resources (gone from the setuptools that torch needs) and passes
# -std=c++14/17 while the torch headers need C++20. So we build in a throw-away venv that
# sees the project venv's torch but has an old setuptools, through compiler wrappers (gcc,
# g++ and, for CUDA ops, nvcc) that lift the language standard.
#
# CUDA ops or CPU ops: CUDA when a CUDA toolkit is usable, i.e. nvcc is found (CUDA_HOME, else
# PATH) with its headers, its major version is that of torch's CUDA build, and there is an
# architecture to build for: TORCH_CUDA_ARCH_LIST, else the GPUs torch sees. Otherwise CPU ops,
# with a note saying why. TOPONET_MMCV_OPS=cpu|cuda forces a variant (cuda fails when the
# toolkit is not usable). The wheel's name records the variant in its build tag:
#   mmcv-2.1.0-1cu130_sm90-cp311-cp311-linux_x86_64.whl   CUDA 13.0 ops for sm_90
#   mmcv-2.1.0-0cpu-cp311-cp311-linux_x86_64.whl          CPU ops
# An untagged mmcv-2.1.0-cp*.whl (built before variants were recorded) counts as CPU ops.
#
# Usage: tools/setup/build_mmcv.sh [--dry-run] PROJECT_VENV WHEEL_DIR
#   --dry-run  print the selection (variant, why, toolkit, architectures, wheel) as
#              "key: value" lines and build nothing
set -euo pipefail

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
if [ $# -ne 2 ]; then
    echo "usage: $0 [--dry-run] PROJECT_VENV WHEEL_DIR" >&2
    exit 2
fi
venv=$(cd "$1" && pwd)
wheel_dir=$2
version=2.1.0
ops=${TOPONET_MMCV_OPS:-auto}
case "$ops" in
    auto|cpu|cuda) ;;
    *) echo "error: TOPONET_MMCV_OPS=$ops: expected auto, cpu or cuda" >&2; exit 2 ;;
esac

note() { echo "$@" >&2; }

# -- what torch was built with and which GPUs it sees ------------------------------------
probe=$("$venv/bin/python" - <<'PY'
import sysconfig
import torch
archs = set()
if torch.version.cuda and torch.cuda.is_available():
    archs = {'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
print('torch_cuda=' + (torch.version.cuda or ''))
print('gpu_archs=' + ';'.join(sorted(archs)))
print('site=' + sysconfig.get_paths()['purelib'])
PY
)
torch_cuda=$(sed -n 's/^torch_cuda=//p' <<<"$probe")
gpu_archs=$(sed -n 's/^gpu_archs=//p' <<<"$probe")
site=$(sed -n 's/^site=//p' <<<"$probe")

# -- is a CUDA toolkit usable? Sets cuda_home, nvcc, nvcc_version, arch_list, extra_include,
#    or why_not (the reason for CPU ops).
why_not=""
cuda_home=""
nvcc=""
nvcc_version=""
arch_list=""
extra_include=""
find_toolkit() {
    if [ -z "$torch_cuda" ]; then
        why_not="torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') is a CPU build"
        return
    fi
    if [ -n "${CUDA_HOME:-}" ]; then
        if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
            why_not="CUDA_HOME=$CUDA_HOME has no bin/nvcc"
            return
        fi
        nvcc=$CUDA_HOME/bin/nvcc
    elif nvcc=$(command -v nvcc); then
        :
    else
        why_not="no CUDA compiler: nvcc is not on PATH and CUDA_HOME is not set"
        return
    fi
    nvcc_version=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
    if [ -z "$nvcc_version" ]; then
        why_not="$nvcc does not report a CUDA release (nvcc --version)"
        return
    fi
    if [ "${nvcc_version%%.*}" != "${torch_cuda%%.*}" ]; then
        why_not="nvcc $nvcc_version ($nvcc) does not match torch's CUDA $torch_cuda (major versions differ)"
        return
    fi
    cuda_home=${CUDA_HOME:-}
    if [ -z "$cuda_home" ]; then
        # nvcc may be a wrapper script outside the toolkit: ask it where it lives
        top=$("$nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
        if [ -n "$top" ] && [ -d "$top" ]; then
            cuda_home=$(cd "$top" && pwd -P)
        else
            cuda_home=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd -P)
        fi
    fi
    if [ ! -f "$cuda_home/include/cuda_runtime.h" ] && [ ! -f "$cuda_home/targets/x86_64-linux/include/cuda_runtime.h" ]; then
        why_not="the CUDA toolkit at $cuda_home has no include/cuda_runtime.h"
        return
    fi
    # torch's CUDA headers include the math libraries' headers; torch's CUDA wheels bring
    # them (nvidia/*/include) where the toolkit lacks them
    local header dir found
    for header in cublas_v2.h cusparse.h cusolverDn.h; do
        [ -f "$cuda_home/include/$header" ] && continue
        found=""
        for dir in "$site"/nvidia/*/include; do
            if [ -f "$dir/$header" ]; then
                found=$dir
                break
            fi
        done
        if [ -z "$found" ]; then
            why_not="$header is in neither $cuda_home/include nor torch's nvidia/*/include"
            return
        fi
        case ":$extra_include:" in *":$found:"*) ;; *) extra_include=${extra_include:+$extra_include:}$found ;; esac
    done
    arch_list=${TORCH_CUDA_ARCH_LIST:-$gpu_archs}
    if [ -z "$arch_list" ]; then
        why_not="no GPU is visible to torch and TORCH_CUDA_ARCH_LIST is not set (set it, e.g. TORCH_CUDA_ARCH_LIST=9.0, to build CUDA ops for a GPU elsewhere)"
        return
    fi
}

if [ "$ops" = cpu ]; then
    variant=cpu
    reason="TOPONET_MMCV_OPS=cpu"
else
    find_toolkit
    if [ -z "$why_not" ]; then
        variant=cuda
        reason="nvcc $nvcc_version matches torch's CUDA $torch_cuda; architectures $arch_list"
    elif [ "$ops" = cuda ]; then
        echo "error: TOPONET_MMCV_OPS=cuda but the CUDA toolkit is not usable: $why_not" >&2
        exit 1
    else
        variant=cpu
        reason=$why_not
    fi
fi

# -- the wheel of that variant -------------------------------------------------------------
if [ "$variant" = cuda ]; then
    # 9.0 -> sm90, 9.0+PTX -> sm90ptx, 9.0a -> sm90a; names (Hopper) as they are
    archs=$(tr ';, ' '\n\n\n' <<<"$arch_list" | sed -e '/^$/d' -e 's/+PTX$/ptx/I' -e 's/\.//g' -e 's/^\([0-9]\)/sm\1/' \
            | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9\n' | sort -V -u | paste -sd_ -)
    build_tag="1cu${torch_cuda//./}_$archs"
    patterns=("mmcv-$version-$build_tag-*.whl")
else
    build_tag=0cpu
    patterns=("mmcv-$version-$build_tag-*.whl" "mmcv-$version-cp*.whl" "mmcv-$version-py*.whl")
fi
cached=""
for pattern in "${patterns[@]}"; do
    for path in "$wheel_dir"/$pattern; do
        if [ -f "$path" ]; then
            cached=$path
            break 2
        fi
    done
done

if [ "$dry_run" = 1 ]; then
    echo "variant: $variant"
    echo "reason: $reason"
    echo "torch_cuda: ${torch_cuda:-none}"
    echo "nvcc: ${nvcc:-none}${nvcc_version:+ ($nvcc_version)}"
    echo "cuda_home: ${cuda_home:-none}"
    echo "arch_list: ${arch_list:-none}"
    echo "extra_include: ${extra_include:-none}"
    echo "build_tag: $build_tag"
    echo "wheel: ${cached:-none (would build mmcv-$version-$build_tag-*.whl)}"
    exit 0
fi

if [ -n "$cached" ]; then
    note "mmcv $version wheel with $variant ops already built: $cached"
    echo "$cached"
    exit 0
fi
if [ "$variant" = cpu ] && [ "$ops" = auto ]; then
    note "note: building mmcv with CPU ops only: $reason"
fi

mkdir -p "$wheel_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$venv/bin/python" -m venv "$work/build-venv"
build_site=$("$work/build-venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# .pth entries come after the build venv's own site-packages, so its old setuptools wins.
echo "$site" > "$build_site/toponet-project-venv.pth"
"$work/build-venv/bin/pip" install -q "setuptools<70" wheel ninja >&2

mkdir -p "$work/cc"
lift_std() {  # a wrapper that runs $2 with -std=c++14/17 replaced by -std=c++20
    cat > "$1" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
    if [ "\$a" = "-std=c++17" ] || [ "\$a" = "-std=c++14" ]; then a=-std=c++20; fi
    args+=("\$a")
done
exec "$2" "\${args[@]}"
WRAP
    chmod +x "$1"
}
for name in cc gcc c++ g++; do
    lift_std "$work/cc/$name" "$(command -v "$name")"
done

env_args=(PATH="$work/cc:$work/build-venv/bin:$PATH" CC="$work/cc/gcc" CXX="$work/cc/g++" MMCV_WITH_OPS=1
          MAX_JOBS="${MAX_JOBS:-$(nproc)}")
if [ "$variant" = cuda ]; then
    # nvcc reads the standard too (for its own front end); it runs gcc as its host compiler
    # through the wrapper (torch passes -ccbin $CC)
    lift_std "$work/cc/nvcc" "$nvcc"
    env_args+=(FORCE_CUDA=1 CUDA_HOME="$cuda_home" PYTORCH_NVCC="$work/cc/nvcc" TORCH_CUDA_ARCH_LIST="$arch_list"
               CPATH="${extra_include}${CPATH:+:$CPATH}")
    note "building mmcv $version with CUDA $torch_cuda ops for $arch_list (nvcc $nvcc_version at $cuda_home):" \
         "once per machine: about 1 to 1.5 CPU-core hours per architecture, 10 minutes on 8 cores (docs/setup.md)"
else
    env_args+=(FORCE_CUDA=0)
    note "building mmcv $version with CPU ops (about 15 minutes on 2 cores, once per machine)"
fi
env "${env_args[@]}" "$work/build-venv/bin/pip" wheel --no-deps --no-build-isolation \
    -w "$work/out" "mmcv==$version" >&2
tagged=$("$work/build-venv/bin/python" -m wheel tags --remove --build "$build_tag" "$work"/out/mmcv-*.whl | tail -n 1)
mv "$work/out/$(basename "$tagged")" "$wheel_dir/"
note "mmcv wheel stored in $wheel_dir"
echo "$wheel_dir/$(basename "$tagged")"
