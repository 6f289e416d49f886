// row_kl_exp-inl.h: the exponentials of the per-row KL loops (row_kl.h): g(u) = expm1(u) - u
// without cancellation, and e^x for x <= 0 in about half the operations of Highway's Exp.

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_ROW_KL_EXP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_ROW_KL_EXP_INL_H_
#undef KLDIV_CORE_ROW_KL_EXP_INL_H_
#else
#define KLDIV_CORE_ROW_KL_EXP_INL_H_
#endif

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

// g(u) = expm1(u) - u without cancellation: the series u^2 (1/2! + u/3! + ... + u^7/9!) for
// |u| < 1/2 (truncation below 2e-9 relative), Expm1 - u elsewhere (at most 2 bits lost).
// max_abs: the largest |u| seen, updated only where some |u| >= 1/2 (the conditioning check
// needs |u| <= kMaxRatio, which holds below 1/2).
HWY_INLINE VF ExpM1MinusX(DF d, VF u, VF* max_abs) {
  constexpr float kInvFactorial[] = {1.0f / 2,   1.0f / 6,    1.0f / 24,    1.0f / 120,
                                     1.0f / 720, 1.0f / 5040, 1.0f / 40320, 1.0f / 362880};
  VF p = hn::Set(d, kInvFactorial[7]);
  for (int k = 6; k >= 0; --k) p = hn::MulAdd(p, u, hn::Set(d, kInvFactorial[k]));
  const VF series = hn::Mul(hn::Mul(u, u), p);
  const VF abs = hn::Abs(u);
  const auto large = hn::Ge(abs, hn::Set(d, 0.5f));
  if (HWY_LIKELY(hn::AllFalse(d, large))) return series;
  *max_abs = hn::Max(*max_abs, abs);
  return hn::IfThenElse(large, hn::Sub(hn::Expm1(d, u), u), series);
}

// e^x for x <= 0 (-inf and x < -87 give 0: those weights are below 2^-125 of the largest),
// within 1 ulp (measured: 0.93): x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor series to r^7
// (truncation 5e-9), 2^n put into the exponent. About half the operations of Highway's Exp,
// which handles the whole float range; the loop below spends most of its time here.
HWY_INLINE VF ExpNonPositive(DF d, VF x) {
  const hn::RebindToSigned<DF> di;
  const VF clamped = hn::Max(x, hn::Set(d, -87.0f));
  // n = round(x / ln2) by adding 1.5 * 2^23, which leaves n in the low mantissa bits
  // (cheaper than a round and a conversion).
  const VF shifted = hn::MulAdd(clamped, hn::Set(d, 1.44269504088896341f), hn::Set(d, 12582912.0f));
  const VF n = hn::Sub(shifted, hn::Set(d, 12582912.0f));
  VF r = hn::MulAdd(n, hn::Set(d, -0.693145751953125f), clamped);  // ln2's head: n * it is exact
  r = hn::MulAdd(n, hn::Set(d, -1.428606765330187045e-06f), r);    // and its tail
  constexpr float kInvFactorial[] = {1.0f,      1.0f,       1.0f / 2,   1.0f / 6,
                                     1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
  VF p = hn::Set(d, kInvFactorial[7]);
  for (int k = 6; k >= 0; --k) p = hn::MulAdd(p, r, hn::Set(d, kInvFactorial[k]));
  // 2^n: the bits of 1.5 * 2^23 + n, less those of 1.5 * 2^23, plus the exponent bias, shifted
  // into the exponent field.
  const auto scale =
      hn::ShiftLeft<23>(hn::Add(hn::BitCast(di, shifted), hn::Set(di, 127 - 0x4B400000)));
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, -87.0f)), hn::Mul(p, hn::BitCast(d, scale)));
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_ROW_KL_EXP_INL_H_
