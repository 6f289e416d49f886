// simd_tables_sve.cc: the SVE target's table of loops (kldiv_kernels.h), for aarch64 CPUs with
// SVE; dispatch.cc picks it when cpu_features.cc finds SVE in the hwcaps.
//
// A translation unit of its own, compiled with SVE enabled (CMakeLists.txt: -mcpu=generic+sve
// for clang and zig, -march=armv8-a+sve for GCC), so that Highway's static target here is
// HWY_SVE: Highway 1.0 dispatches at run time on Arm only when GCC compiles it (per-function
// target attributes), and the wheels are built with zig (clang). Everything else of the core is
// compiled for the baseline (armv8-a, NEON: simd_tables.cc). This file must hold nothing that
// runs before dispatch has seen SVE: no static initialiser (the table is constant-initialised)
// and no function a non-SVE CPU calls (dispatch.cc asks the CPU before calling SveKernels).
// The loops are the SVE branches of simd_pointwise-inl.h and simd_sum-inl.h, with NEON's
// per-element loss (simd_loss-inl.h); the per-row KL keeps row_kl.cc's float64 path, as on
// NEON.
// Built without SVE (x86-64, or a compiler without it), SveKernels() is nullptr.

// clang-format off
#include "simd_targets.h"
#include "hwy/highway.h"
// clang-format on

#include "kldiv_core.h"
#include "kldiv_kernels.h"
#include "simd_pointwise-inl.h"
#include "simd_sum-inl.h"

#if HWY_TARGET == HWY_SVE && defined(__aarch64__)

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {
namespace {

constexpr detail::Kernels kTable = {
    "sve",
    {{Pointwise<DType::kFloat32, false>, Pointwise<DType::kFloat32, true>},
     {Pointwise<DType::kFloat16, false>, Pointwise<DType::kFloat16, true>},
     {Pointwise<DType::kBFloat16, false>, Pointwise<DType::kBFloat16, true>}},
    {{Sum<DType::kFloat32, false>, Sum<DType::kFloat32, true>},
     {Sum<DType::kFloat16, false>, Sum<DType::kFloat16, true>},
     {Sum<DType::kBFloat16, false>, Sum<DType::kBFloat16, true>}},
    nullptr,  // row_kl: the float64 path (row_kl_short-inl.h is written for 8 or 16 lanes)
};

}  // namespace
}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

namespace kldiv {
namespace detail {
const Kernels* SveKernels() { return &HWY_NAMESPACE::kTable; }
}  // namespace detail
}  // namespace kldiv

#else

namespace kldiv {
namespace detail {
const Kernels* SveKernels() { return nullptr; }
}  // namespace detail
}  // namespace kldiv

#endif  // HWY_TARGET == HWY_SVE && defined(__aarch64__)
