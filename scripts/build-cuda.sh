#!/usr/bin/env bash
# Builds the CUDA `shimmer` binary (and the random-vectors plugin) for Hopper
# (compute capability 9.0) on a machine without a CUDA toolkit or driver:
#
#   1. installs NVIDIA's CUDA 13.0 wheels from PyPI (nvcc, NVVM, CRT headers,
#      runtime, NVRTC, cuBLAS, cuRAND, and CCCL, whose <nv/target> header
#      cuda_fp16.h includes; about 1.2 GB) into target/cuda-venv;
#   2. assembles them into one toolkit tree, target/cuda-toolkit/
#      (bin/ include/ lib64/ nvvm/), with the unversioned `lib*.so` links the
#      linker needs;
#   3. builds a stub `libcuda.so` (soname `libcuda.so.1`) defining every
#      driver-API `cu*` function cudarc declares, so the binary links without
#      a driver; the real libcuda.so.1 of the GPU machine's driver is used at
#      run time (the stub is never loaded: it is only in the link path);
#   4. `cargo build --release --features cuda` with CUDA_COMPUTE_CAP=90 into
#      target/cuda/ (its own target folder: the CPU build is untouched).
#
#   scripts/build-cuda.sh            # -> target/cuda/release/shimmer
#
# The build takes about 8 minutes on 2 cores. At run time the binary needs
# libcuda.so.1 (driver >= 580, CUDA 13.0) and libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libcudart.so.13 on LD_LIBRARY_PATH:
# a CUDA 13 PyTorch's `site-packages/nvidia/*/lib` has them (scripts/bench
# --cuda looks there), or target/cuda-toolkit/lib64 of this build.
# Pins can be changed with CUDA_WHEELS="nvidia-cuda-nvcc==... ...".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CUDA_WHEELS=${CUDA_WHEELS:-"nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85"}
venv="$root/target/cuda-venv"
tk="$root/target/cuda-toolkit"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

# --- 1. wheels ------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $CUDA_WHEELS
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
nv="$site/nvidia"
nvcc_real=$(find "$nv" -path '*/bin/nvcc' -type f | head -1)
if [ -z "$nvcc_real" ]; then
  echo "build-cuda: no nvcc in the installed wheels under $nv" >&2
  exit 1
fi
echo "nvcc: $nvcc_real" >&2

# --- 2. one toolkit tree ----------------------------------------------------
# Every wheel's bin/ include/ lib/ nvvm/ merged; files are linked, except
# nvcc and its profile, copied so that nvcc finds the tree's nvvm/ and
# include/ relative to itself.
rm -rf "$tk"
mkdir -p "$tk/bin" "$tk/include" "$tk/lib64" "$tk/nvvm"
merge() { # merge SRC_DIR DEST_DIR: link every file of SRC into DEST, recursively
  local src=$1 dest=$2 f rel
  while IFS= read -r -d '' f; do
    rel=${f#"$src"/}
    mkdir -p "$dest/$(dirname "$rel")"
    ln -sf "$f" "$dest/$rel"
  done < <(find "$src" \( -type f -o -type l \) -print0)
}
for pkg in "$nv"/*/; do
  pkg=${pkg%/}
  [ -d "$pkg/bin" ] && merge "$pkg/bin" "$tk/bin"
  [ -d "$pkg/include" ] && merge "$pkg/include" "$tk/include"
  [ -d "$pkg/lib" ] && merge "$pkg/lib" "$tk/lib64"
  [ -d "$pkg/lib64" ] && merge "$pkg/lib64" "$tk/lib64"
  [ -d "$pkg/nvvm" ] && merge "$pkg/nvvm" "$tk/nvvm"
done
for f in nvcc nvcc.profile; do
  src="$(dirname "$nvcc_real")/$f"
  [ -e "$src" ] && { rm -f "$tk/bin/$f"; cp "$src" "$tk/bin/$f"; }
done
chmod +x "$tk/bin/"* 2>/dev/null || true
# Unversioned names for the linker (-lcublas, -lcurand, ...).
for lib in "$tk"/lib64/lib*.so.*; do
  [ -e "$lib" ] || continue
  base=$(basename "$lib")
  plain="$tk/lib64/${base%%.so.*}.so"
  [ -e "$plain" ] || ln -s "$base" "$plain"
done

# --- 3. stub libcuda.so ------------------------------------------------------
cargo fetch --quiet
cudarc_ver=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_ver" | head -1)
if [ ! -d "$cudarc_src/src/driver/sys" ]; then
  echo "build-cuda: cudarc $cudarc_ver sources not found (looked for $cudarc_src/src/driver/sys)" >&2
  exit 1
fi
{
  echo "/* Stub of the CUDA driver API for linking only; never loaded. */"
  grep -rhoE '\bfn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys" \
    | sed -E 's/^fn //; s/\($//' | sort -u \
    | sed 's/.*/int &(void) { return 999; }/'
} > "$tk/cuda_stub.c"
echo "stub libcuda.so: $(grep -c '^int' "$tk/cuda_stub.c") symbols from cudarc $cudarc_ver" >&2
mkdir -p "$tk/stub"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tk/stub/libcuda.so" "$tk/cuda_stub.c"
ln -sf libcuda.so "$tk/stub/libcuda.so.1"

# --- 4. cargo build --------------------------------------------------------
export CUDA_ROOT="$tk" CUDA_PATH="$tk" CUDA_TOOLKIT_ROOT_DIR="$tk"
export PATH="$tk/bin:$PATH"
export LIBRARY_PATH="$tk/stub:$tk/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$tk/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$tk/stub -L native=$tk/lib64"
export CARGO_TARGET_DIR="$root/target/cuda"
nvcc --version | tail -2 >&2
cargo build --release --features cuda -p shimmer-host --bin shimmer
cargo build --release -p random-vectors
bin="$CARGO_TARGET_DIR/release/shimmer"
echo "built $bin ($(du -h "$bin" | cut -f1)); it needs at run time:" >&2
ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc' >&2 || true
