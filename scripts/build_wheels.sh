#!/usr/bin/env bash
# Builds the manylinux_2_28 wheels of kldiv-onnx into dist/: x86_64 and aarch64, for each Python
# in KLDIV_WHEEL_PYTHONS (default "3.10 3.11 3.13": cp310 and cp311 wheels, and from 3.13 the
# cp312-abi3 wheel that serves every Python from 3.12 on, nanobind's stable ABI; aarch64 has no
# cp310 wheel: Debian has no arm64 headers of Python 3.10). Compiler: zig (PyPI's ziglang) targeting glibc 2.28,
# through CMake's toolchain file scripts/zig/toolchain.cmake (no manylinux container needed);
# auditwheel (with patchelf) repairs and names the policy; a check then refuses any GLIBC_
# symbol version newer than 2.28 in the wheels' .so files. docs/wheels.md has the details.
#
#   bash scripts/build_wheels.sh                 # both architectures
#   KLDIV_WHEEL_ARCHS=x86_64 bash scripts/build_wheels.sh
#
# Needs: a Python per version in KLDIV_WHEEL_PYTHONS (python3.X on PATH, or pyenv's), cmake,
# libhwy-dev (Highway's headers, used header-only), readelf (binutils), network access to PyPI
# (build tools) and, for aarch64, to Debian (arm64 Python headers, unpacked, nothing installed).
# The first run builds zig's libc++ for each target (a few minutes each; cached by zig).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
archs=${KLDIV_WHEEL_ARCHS:-"x86_64 aarch64"}
pythons=${KLDIV_WHEEL_PYTHONS:-"3.10 3.11 3.13"}
glibc=2.28
work="$root/build/wheels"
start=$SECONDS
step() { echo "[build_wheels +$((SECONDS - start))s] $*"; }
die() { echo "build_wheels: $*" >&2; exit 1; }

# Runs "$@" with its output in $log; prints a line every 30 s while it runs, and the log's tail
# if it fails.
run_logged() {
  local log=$1
  shift
  "$@" > "$log" 2>&1 &
  local pid=$! said=$SECONDS
  while kill -0 "$pid" 2> /dev/null; do
    sleep 5
    if [ $((SECONDS - said)) -ge 30 ]; then
      said=$SECONDS
      local last
      last=$(grep -aE '^ *\[ *[0-9]+(%|/[0-9]+)\]' "$log" | tail -n 1 | sed 's/^ *//' || true)
      echo "[build_wheels +$((SECONDS - start))s]   ... still running ${last:+($last)}"
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$log" >&2
    die "failed: $* (log: $log)"
  fi
}

find_python() {  # python3.X on PATH (that runs: not a pyenv shim of another version), else pyenv's newest 3.X
  local v=$1 p
  p=$(command -v "python$v" || true)
  if [ -z "$p" ] || ! "$p" -c '' 2> /dev/null; then
    p=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2> /dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$p" ] || die "no Python $v (set KLDIV_WHEEL_PYTHONS to the versions at hand)"
  echo "$p"
}

mkdir -p "$work" dist
# --- build tools: one venv per Python (scikit-build-core, nanobind, ziglang, auditwheel)
declare -A venv
for v in $pythons; do
  venv[$v]="$work/venv-$v"
  if [ ! -x "${venv[$v]}/bin/auditwheel" ]; then
    step "tools venv for Python $v"
    "$(find_python "$v")" -m venv "${venv[$v]}"
    # pip 23.1 or later: older ones (3.10's venvs bring 23.0) have no -C (--config-settings)
    run_logged "$work/venv-$v.log" "${venv[$v]}/bin/pip" install --quiet --upgrade "pip>=23.1"
    run_logged "$work/venv-$v.log" "${venv[$v]}/bin/pip" install --quiet \
      "scikit-build-core>=0.10" "nanobind>=2.0" "ziglang>=0.13" "auditwheel>=6" patchelf
  fi
done
first=${pythons%% *}
tools="${venv[$first]}/bin"
export PATH="$tools:$PATH"  # auditwheel runs patchelf
# zig caches its libc++ per installation: KLDIV_ZIG may name one already warmed.
KLDIV_ZIG=${KLDIV_ZIG:-$("$tools/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')}
export KLDIV_ZIG
step "zig $("$KLDIV_ZIG" version)"

# --- headers: onnxruntime's (fetched), Highway's (only hwy/, so that no other header of the
# machine's newer glibc gets on the include path), arm64 Python's (Debian's libpython3.X-dev)
if [ -n "${ORT_INCLUDE_DIR:-}" ]; then
  ort_include=$ORT_INCLUDE_DIR
else
  [ -f third_party/onnxruntime/include/onnxruntime_cxx_api.h ] || bash scripts/fetch_ort_headers.sh
  ort_include="$root/third_party/onnxruntime/include"
fi
hwy=${HWY_INCLUDE_DIR:-/usr/include}/hwy
[ -f "$hwy/highway.h" ] || die "Highway headers not found at $hwy (apt-get install -y libhwy-dev)"
mkdir -p "$work/hwy-include"
ln -sfn "$hwy" "$work/hwy-include/hwy"

arm64_python_headers() {  # $1 = 3.11: prints the include dir of Debian's arm64 libpython3.11-dev
  local v=$1 dest="$work/arm64-python$v"
  if [ ! -f "$dest/include/python$v/Python.h" ]; then
    step "arm64 Python $v headers (Debian libpython$v-dev:arm64, unpacked into $dest)" >&2
    local scratch suite
    scratch=$(mktemp -d)
    case $v in 3.11) suite=bookworm ;; 3.13) suite=trixie ;; *) die "no Debian release with Python $v for arm64 headers (3.11, 3.13)" ;; esac
    local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2> /dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    mkdir -p "$scratch/lists/partial" "$scratch/archives/partial" "$scratch/etc"
    echo "deb [arch=arm64 signed-by=$keyring] $mirror $suite main" > "$scratch/etc/sources.list"
    touch "$scratch/etc/status"
    local apt_opts=(-o "Dir::Etc::SourceList=$scratch/etc/sources.list" -o "Dir::Etc::SourceParts=-"
      -o "Dir::State::Lists=$scratch/lists" -o "Dir::State::Status=$scratch/etc/status"
      -o "Dir::Cache::Archives=$scratch/archives" -o "Dir::Cache=$scratch"
      -o "APT::Architecture=arm64" -o "APT::Architectures=arm64" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" -qq update >&2
    (cd "$scratch" && apt-get "${apt_opts[@]}" -qq download "libpython$v-dev:arm64" >&2)
    dpkg -x "$scratch"/libpython"$v"-dev_*_arm64.deb "$scratch/pkg"
    rm -rf "$dest"
    mkdir -p "$dest/include"
    cp -r "$scratch/pkg/usr/include/python$v" "$dest/include/"
    # Debian splits pyconfig.h by architecture; one folder holding both is what CMake expects.
    cp "$scratch/pkg/usr/include/aarch64-linux-gnu/python$v/pyconfig.h" "$dest/include/python$v/"
    rm -rf "$scratch"
  fi
  echo "$dest/include/python$v"
}

# --- one wheel per architecture and Python
raw="$work/raw"
mkdir -p "$raw" "$work/repaired"
for arch in $archs; do
  case $arch in x86_64 | aarch64) ;; *) die "unknown architecture '$arch' (x86_64, aarch64)" ;; esac
  rm -f "$raw"/*_"$arch".whl "$work"/repaired/*_"$arch".whl
  export KLDIV_ZIG_TARGET="$arch-linux-gnu.$glibc"
  warm="$work/zig-warm-$arch-$(echo "$KLDIV_ZIG" | cksum | cut -d' ' -f1)"
  if [ ! -f "$warm.ok" ]; then
    step "zig: libc++ for $KLDIV_ZIG_TARGET (first run only, a few minutes)"
    # A shared library, as the wheel's are: zig builds a separate (PIC) libc++ for those.
    printf '#include <string>\nint f() { return static_cast<int>(std::string("x").size()); }\n' > "$warm.cc"
    run_logged "$warm.log" "$root/scripts/zig/zig-c++" -O2 -fPIC -shared "$warm.cc" -o "$warm.so"
    touch "$warm.ok"
  fi
  for v in $pythons; do
    tag="cp${v/./}"
    args=(-DCMAKE_TOOLCHAIN_FILE="$root/scripts/zig/toolchain.cmake"
      -DORT_INCLUDE_DIR="$ort_include" -DHWY_INCLUDE_DIR="$work/hwy-include")
    envs=()
    if [ "$arch" = aarch64 ]; then
      case $v in 3.11 | 3.13) ;; *)
        step "wheel $tag aarch64: skipped (Debian has no arm64 headers of Python $v; 3.11 and 3.13 it has)"
        continue ;;
      esac
      inc=$(arm64_python_headers "$v")
      args+=(-DPython_INCLUDE_DIR="$inc" -DPython3_INCLUDE_DIR="$inc")
      envs=(_PYTHON_HOST_PLATFORM=linux-aarch64
        SETUPTOOLS_EXT_SUFFIX=".cpython-${v/./}-aarch64-linux-gnu.so")
    fi
    step "wheel $tag $arch: zig c++ -target $KLDIV_ZIG_TARGET (log: $work/build-$tag-$arch.log)"
    run_logged "$work/build-$tag-$arch.log" env "${envs[@]}" CMAKE_BUILD_PARALLEL_LEVEL="${KLDIV_JOBS:-2}" \
      "${venv[$v]}/bin/pip" wheel . -v --no-deps --no-build-isolation -w "$raw" \
      -Cbuild-dir="$work/cmake/{wheel_tag}" -Ccmake.args="$(IFS=';'; echo "${args[*]}")"
  done
done

# --- repair (retag: the library needs nothing but glibc), show, check the glibc versions
plat_of() { case $1 in *x86_64.whl) echo "manylinux_${glibc/./_}_x86_64" ;; *) echo auto ;; esac; }
for whl in $(for arch in $archs; do ls "$raw"/*_"$arch".whl 2> /dev/null; done); do
  name=$(basename "$whl")
  step "auditwheel repair $name"
  # auditwheel refuses --plat manylinux_2_28_aarch64 on an x86_64 machine; 'auto' picks the
  # oldest policy the wheel meets, which the check below bounds by glibc 2.28.
  "$tools/auditwheel" repair --plat "$(plat_of "$name")" -w "$work/repaired" "$whl" > "$work/repair.log" 2>&1 \
    || { cat "$work/repair.log" >&2; die "auditwheel repair failed for $name"; }
done
status=0
for whl in $(for arch in $archs; do ls "$work"/repaired/*_"$arch".whl 2> /dev/null; done); do
  name=$(basename "$whl")
  "$tools/auditwheel" show "$whl" | tr '\n' ' ' | sed 's/  */ /g'
  echo
  case $name in *manylinux_2_28_*.whl | *manylinux_2_2[0-7]_*.whl | *manylinux_2_1[0-9]_*.whl | *manylinux2014_*.whl) ;;
    *) echo "build_wheels: $name is tagged newer than manylinux_2_28" >&2; status=1 ;;
  esac
  # The newest GLIBC_ version any .so in the wheel needs (readelf reads both architectures).
  scratch=$(mktemp -d)
  "$tools/python" -m zipfile -e "$whl" "$scratch"
  newest=$(find "$scratch" -name '*.so' -exec readelf -W --version-info {} + \
    | grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/GLIBC_//' | sort -V | tail -n 1)
  sos=$(cd "$scratch" && find . -name '*.so' | sed 's|^\./||' | sort | tr '\n' ' ')
  rm -rf "$scratch"
  if [ -z "$newest" ] || [ "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]; then
    echo "build_wheels: $name needs GLIBC_$newest, newer than $glibc" >&2
    status=1
  fi
  echo "  $name: ${sos}newest glibc symbol version GLIBC_$newest (limit $glibc)"
  cp "$whl" dist/
done
[ $status -eq 0 ] || die "a wheel failed its checks (above)"
step "done: $(cd dist && ls ./*.whl | sed 's|^\./||' | tr '\n' ' ')"
