# CMake toolchain: zig (PyPI's ziglang) compiles and links against an older glibc than the
# machine's, for manylinux wheels without a manylinux container. Set in the environment:
#   KLDIV_ZIG         the zig executable (python -c "import ziglang, os; ...", see
#                     scripts/build_wheels.sh)
#   KLDIV_ZIG_TARGET  x86_64-linux-gnu.2.28 or aarch64-linux-gnu.2.28
# zig links its own libc++ statically; with an explicit target it compiles for the
# architecture's baseline CPU (x86-64, armv8-a), and the core dispatches the SIMD loops at run
# time (custom_ops/core/dispatch.cc).
if(NOT DEFINED ENV{KLDIV_ZIG} OR NOT DEFINED ENV{KLDIV_ZIG_TARGET})
  message(FATAL_ERROR "zig toolchain: set KLDIV_ZIG and KLDIV_ZIG_TARGET (scripts/build_wheels.sh does)")
endif()
string(REGEX MATCH "^[^-]+" _kldiv_zig_arch "$ENV{KLDIV_ZIG_TARGET}")
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${_kldiv_zig_arch})
set(CMAKE_C_COMPILER "${CMAKE_CURRENT_LIST_DIR}/zig-cc")
set(CMAKE_CXX_COMPILER "${CMAKE_CURRENT_LIST_DIR}/zig-c++")
set(CMAKE_AR "${CMAKE_CURRENT_LIST_DIR}/zig-ar" CACHE FILEPATH "zig ar")
set(CMAKE_RANLIB "${CMAKE_CURRENT_LIST_DIR}/zig-ranlib" CACHE FILEPATH "zig ranlib")
# Headers and libraries of the host (Highway's, the Python headers) are found by explicit paths.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
