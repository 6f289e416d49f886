// simd_loss-inl.h: the per-element loss of one and of four float vectors, in both modes:
// t * (log t - x) (simd_log_avx3-inl.h, simd_log_avx2-inl.h) and exp(t) * (t - x) (Highway's
// Exp, whose NaN and inf lanes are fixed up with masks).

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_LOSS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_LOSS_INL_H_
#undef KLDIV_CORE_SIMD_LOSS_INL_H_
#else
#define KLDIV_CORE_SIMD_LOSS_INL_H_
#endif

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "simd_common-inl.h"
#include "simd_log_avx2-inl.h"
#include "simd_log_avx3-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || \
    HWY_TARGET == HWY_SVE

template <bool kLogTarget>
HWY_INLINE VF Loss(DF d, VF x, VF t) {
  if constexpr (kLogTarget) {
    // exp(t) * (t - x). Exp is valid on [-FLT_MAX, 104]: above ln(FLT_MAX) the result is +inf,
    // below -104 it is 0 (exp(-104) is under half the smallest subnormal). NaN t: t - x is NaN.
    VF e = hn::Exp(d, t);
    e = hn::IfThenElse(hn::Gt(t, hn::Set(d, 88.72283935546875f)), hn::Inf(d), e);
    e = hn::IfThenZeroElse(hn::Lt(t, hn::Set(d, -104.0f)), e);
    return hn::Mul(e, hn::Sub(t, x));
  } else {
#if HWY_TARGET == HWY_SVE
    return LogLoss(d, x, t);
#else
    VF out;
    LogLosses<1>(d, &x, &t, &out);
    return out;
#endif
  }
}

// SVE's sizeless vectors make no arrays: the SVE branches of the loops take one loss at a time.
#if HWY_TARGET != HWY_SVE

// The losses of four vectors (see LogLosses).
template <bool kLogTarget>
HWY_INLINE void Losses4(DF d, const VF* x, const VF* t, VF* out) {
  if constexpr (kLogTarget) {
#if HWY_TARGET == HWY_AVX2  // clang left this loop rolled, the arrays in memory (LogLosses)
    HWY_UNROLL(4)
#endif
    for (int k = 0; k < 4; ++k) out[k] = Loss<true>(d, x[k], t[k]);
  } else {
    LogLosses<4>(d, x, t, out);
  }
}
#endif  // HWY_TARGET != HWY_SVE

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON ||
        // HWY_TARGET == HWY_SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_LOSS_INL_H_
