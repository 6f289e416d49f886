// simd_tables.cc: each SIMD target's table of loops (kldiv_kernels.h), compiled once per ISA
// with Highway's foreach_target (GCC target attributes, so one binary carries AVX-512 and AVX2
// code; on aarch64, NEON, and SVE in simd_tables_sve.cc); dispatch.cc picks one at load time from
// what the CPU reports (cpu_features.cc); CPUs with none use scalar_kernels.cc and row_kl.cc's
// float64 path. The loops live in per-target -inl.h headers, one concern each:
//   simd_common-inl.h    vector types shared by every loop
//   simd_io-inl.h        float32/float16/bfloat16 loads and stores
//   simd_log_avx3-inl.h  the loss t (log t - x) on AVX-512 (the core's own log)
//   simd_log_avx2-inl.h  the same on AVX2 (and NEON, in portable ops)
//   simd_loss-inl.h      the per-element loss in both modes (log_target: Highway's Exp)
//   simd_pointwise-inl.h the loop without reduction (its SVE branch: simd_tables_sve.cc)
//   simd_sum-inl.h       the loop of the reductions (double accumulation; SVE branch too)
//   row_kl_exp-inl.h     the per-row KL's exponentials
//   row_kl_terms-inl.h   its per-class terms and sums
//   row_kl_long-inl.h    rows of 128 classes or more, one at a time
//   row_kl_short-inl.h   shorter rows, one row per lane
//   row_kl_rows-inl.h    a range of rows, each by the one or the other
//
// Why Highway (hwy/contrib/math, Debian's libhwy-dev, header-only here): measured on this
// project's machine type (see shared notes), 16M float32 logs on one thread took 0.36 ns/element
// with AVX-512 and 0.57 with AVX2 (xsimd 0.44/0.78, own polynomial + target_clones 0.52/1.17,
// SLEEF 0.61/1.5, Eigen 0.73/0.91 and no runtime dispatch), max error 0.89 ULP; it also has the
// float16 <-> float32 conversions and double promotion needed here. We use no Highway symbol from
// libhwy (no HWY_DYNAMIC_DISPATCH), so nothing but this library is needed at run time.
// The log is our own (no division; on AVX-512 a 32-entry table and a degree-4 polynomial, see
// LogLosses); Highway's Exp does not handle NaN and inf: those lanes are fixed up with masks.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd_tables.cc"
// foreach_target.h must come first (after the targets): not sorted.
// clang-format off
#include "simd_targets.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// clang-format on

#include "kldiv_core.h"
#include "kldiv_kernels.h"
#include "row_kl_rows-inl.h"
#include "simd_pointwise-inl.h"
#include "simd_sum-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON

#if HWY_TARGET == HWY_AVX3
constexpr const char* kTargetName = "avx3";
constexpr detail::RowKLFn kRowKL = RowsAnyKind;
#elif HWY_TARGET == HWY_AVX2
constexpr const char* kTargetName = "avx2";
constexpr detail::RowKLFn kRowKL = RowsAnyKind;
#else
// NEON keeps row_kl.cc's float64 path for the per-row KL: the short-row tile transpose
// (row_kl_short-inl.h) is written for 8 or 16 lanes.
constexpr const char* kTargetName = "neon";
constexpr detail::RowKLFn kRowKL = nullptr;
#endif

const detail::Kernels* Table() {
  static const detail::Kernels table = {
      kTargetName,
      {{Pointwise<DType::kFloat32, false>, Pointwise<DType::kFloat32, true>},
       {Pointwise<DType::kFloat16, false>, Pointwise<DType::kFloat16, true>},
       {Pointwise<DType::kBFloat16, false>, Pointwise<DType::kBFloat16, true>}},
      {{Sum<DType::kFloat32, false>, Sum<DType::kFloat32, true>},
       {Sum<DType::kFloat16, false>, Sum<DType::kFloat16, true>},
       {Sum<DType::kBFloat16, false>, Sum<DType::kBFloat16, true>}},
      kRowKL,
  };
  return &table;
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kldiv {
namespace detail {

#if (HWY_TARGETS & HWY_AVX3) && KLDIV_SIMD_X86
const Kernels* Avx3Kernels() { return N_AVX3::Table(); }
#else
const Kernels* Avx3Kernels() { return nullptr; }
#endif
#if (HWY_TARGETS & HWY_AVX2) && KLDIV_SIMD_X86
const Kernels* Avx2Kernels() { return N_AVX2::Table(); }
#else
const Kernels* Avx2Kernels() { return nullptr; }
#endif
#if (HWY_TARGETS & HWY_NEON) && defined(__aarch64__)
const Kernels* NeonKernels() { return N_NEON::Table(); }
#else
const Kernels* NeonKernels() { return nullptr; }
#endif

}  // namespace detail
}  // namespace kldiv
#endif  // HWY_ONCE
