// simd_log_avx2-inl.h: the loss t * (log t - x) of N float vectors on AVX2, with the core's own
// log (a degree-8 polynomial: no division) and a fast path for groups of ordinary targets; on
// NEON and SVE (aarch64) the same log and careful path in Highway's portable ops.

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_LOG_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_LOG_AVX2_INL_H_
#undef KLDIV_CORE_SIMD_LOG_AVX2_INL_H_
#else
#define KLDIV_CORE_SIMD_LOG_AVX2_INL_H_
#endif

#include "hwy/highway.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE

// The log: t = (1 + f) 2^e, log t = e ln2 + f + f^2 Q(f) with Q a degree-8 polynomial (e = +inf
// gives +inf). No division: Highway's Log divides once per vector, and the divider bounded the
// whole loop (about 10 cycles per AVX-512 vector).
// Coefficients b0..b8 of Q, a weighted least-squares fit (Lawson iterations towards the
// minimax) of (log1p(f) - f) / f^2 for f in [sqrt(1/2) - 1, sqrt(2) - 1], rounded to float:
// 0.08 ulp of log1p(f). The tests bound the whole loss at 2 ulps over the float32 range.
constexpr float kQ[9] = {-0.49999988079071045f, 0.33333325386047363f,  -0.25001585483551025f,
                         0.20001983642578125f,  -0.16609060764312744f, 0.14181657135486603f,
                         -0.13242970407009125f, 0.1290537416934967f,   -0.07622931152582169f};
// t = (1 + f) * 2^e with f in Q's range, for t > 0 (subnormals included) and t = +inf;
// unspecified for t < 0 and NaN t (LossFromLog masks those).
HWY_INLINE void Reduce(DF d, VF t, VF* f, VF* e) {
  const hn::RebindToSigned<DF> di;
  const auto subnormal = hn::Lt(t, hn::Set(d, 1.17549435e-38f));
  t = hn::IfThenElse(subnormal, hn::Mul(t, hn::Set(d, 33554432.0f)), t);  // * 2^25: normal
  // bits - bits(sqrt(1/2)): the exponent field becomes e with the mantissa in [sqrt(1/2),
  // sqrt(2)); subtracting e from the exponent of t leaves m.
  const auto bits = hn::BitCast(di, t);
  const auto k = hn::ShiftRight<23>(hn::Sub(bits, hn::Set(di, 0x3F3504F3)));
  const VF m = hn::BitCast(d, hn::Sub(bits, hn::ShiftLeft<23>(k)));
  *e = hn::IfThenElse(subnormal, hn::Sub(hn::ConvertTo(d, k), hn::Set(d, 25.0f)),
                      hn::ConvertTo(d, k));
  *f = hn::Sub(m, hn::Set(d, 1.0f));
}

// t * (lg - x), 0 where t == 0 (and -0); t < 0 gives NaN, t = +inf gives +inf (inf * (inf - x));
// NaN t propagates through the product.
HWY_INLINE VF LossFromLog(DF d, VF x, VF t, VF lg) {
  lg = hn::IfThenElse(hn::Lt(t, hn::Zero(d)), hn::NaN(d), lg);
  lg = hn::IfThenElse(hn::Eq(t, hn::Inf(d)), hn::Inf(d), lg);
  return hn::IfThenZeroElse(hn::Eq(t, hn::Zero(d)), hn::Mul(t, hn::Sub(lg, x)));
}

#if HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE
// NEON and SVE (aarch64): AVX2's log and careful path below, in Highway's portable ops (the same
// polynomial, Estrin's scheme and fma order, so the same results); no fast path for ordinary
// lanes.
HWY_INLINE VF LogOfReducedPortable(DF d, VF f, VF e) {
  const VF f2 = hn::Mul(f, f);
  const VF f4 = hn::Mul(f2, f2);
  const auto c = [d](int i) { return hn::Set(d, kQ[i]); };
  VF q03 = hn::MulAdd(hn::MulAdd(c(3), f, c(2)), f2, hn::MulAdd(c(1), f, c(0)));
  const VF q47 = hn::MulAdd(hn::MulAdd(c(7), f, c(6)), f2, hn::MulAdd(c(5), f, c(4)));
  q03 = hn::MulAdd(hn::MulAdd(c(8), f4, q47), f4, q03);
  return hn::MulAdd(e, hn::Set(d, 0.693147182464599609375f), hn::MulAdd(f2, q03, f));
}

#if HWY_TARGET == HWY_SVE
// SVE's vectors are sizeless (no arrays of them): the loss of one vector, as NEON's LogLosses
// computes each of its N.
HWY_INLINE VF LogLoss(DF d, VF x, VF t) {
  VF f, e;
  Reduce(d, t, &f, &e);
  return LossFromLog(d, x, t, LogOfReducedPortable(d, f, e));
}
#else   // NEON
template <int N>
HWY_INLINE void LogLosses(DF d, const VF* x, const VF* t, VF* out) {
  for (int k = 0; k < N; ++k) {
    VF f, e;
    Reduce(d, t[k], &f, &e);
    out[k] = LossFromLog(d, x[k], t[k], LogOfReducedPortable(d, f, e));
  }
}
#endif  // HWY_TARGET == HWY_SVE
#else   // AVX2

// Whether every lane of the N vectors of t is +-0 or a positive normal finite float: the lanes
// that LogLossFast gets right. bits + 0x7F800000 maps the bits of [FLT_MIN, FLT_MAX]
// (0x00800000 .. 0x7F7FFFFF) onto the signed integers below -2^24 and every other pattern
// (zeros, subnormals, negatives, inf, NaN) above: one add and one compare per vector.
template <int N>
HWY_INLINE bool AllOrdinary(const VF* t) {
  __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int k = 0; k < N; ++k) {
    const __m256i w =
        _mm256_add_epi32(_mm256_castps_si256(t[k].raw), _mm256_set1_epi32(0x7F800000));
    const __m256 normal = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(-(1 << 24)), w));
    const __m256 zero = _mm256_cmp_ps(t[k].raw, _mm256_setzero_ps(), _CMP_EQ_OQ);
    ok = _mm256_and_ps(ok, _mm256_or_ps(normal, zero));
  }
  return _mm256_movemask_ps(ok) == 0xFF;
}

// log(1 + f) + e ln2 with log(1 + f) = f + f^2 Q(f), Q by Estrin's scheme (half the chain of
// Horner's); the last fma takes e * ln2 whole, so the float ln2 costs only e * 1.9e-9 (at most
// 0.05 ulp of the result) and f + f^2 Q rounds at the scale of log(1 + f).
HWY_INLINE __m256 LogOfReduced(__m256 f, __m256 e) {
  const __m256 f2 = _mm256_mul_ps(f, f);
  const __m256 f4 = _mm256_mul_ps(f2, f2);
  const auto c = [](int i) { return _mm256_set1_ps(kQ[i]); };
  __m256 q03 = _mm256_fmadd_ps(_mm256_fmadd_ps(c(3), f, c(2)), f2, _mm256_fmadd_ps(c(1), f, c(0)));
  const __m256 q47 =
      _mm256_fmadd_ps(_mm256_fmadd_ps(c(7), f, c(6)), f2, _mm256_fmadd_ps(c(5), f, c(4)));
  q03 = _mm256_fmadd_ps(_mm256_fmadd_ps(c(8), f4, q47), f4, q03);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693147182464599609375f), _mm256_fmadd_ps(f2, q03, f));
}

// The loss of one vector whose t passed AllOrdinary: no fix-up but the zero mask (a zero t has
// a finite log here, -127 ln2, masked to 0 whatever x is).
HWY_INLINE __m256 LogLossFast(__m256 x, __m256 t) {
  // bits - bits(sqrt(1/2)): the exponent field becomes e with the mantissa in [sqrt(1/2),
  // sqrt(2)); subtracting e from the exponent of t leaves m.
  const __m256i bits = _mm256_castps_si256(t);
  const __m256i k = _mm256_srai_epi32(_mm256_sub_epi32(bits, _mm256_set1_epi32(0x3F3504F3)), 23);
  const __m256 m = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32(k, 23)));
  const __m256 lg = LogOfReduced(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_cvtepi32_ps(k));
  const __m256 zero = _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_EQ_OQ);
  return _mm256_andnot_ps(zero, _mm256_mul_ps(t, _mm256_sub_ps(lg, x)));
}

// The loss t * (log t - x) of N vectors: one vector after the other (with AVX2's 16 registers,
// interleaving the chains stage by stage spilled them to the stack; the out-of-order core
// overlaps consecutive vectors by itself). A group with any lane LogLossFast does not handle
// (subnormal, negative, inf or NaN t) takes the careful path, with its masks, instead.
template <int N>
HWY_INLINE void LogLosses(DF d, const VF* x, const VF* t, VF* out) {
  if (HWY_LIKELY(AllOrdinary<N>(t))) {
    for (int k = 0; k < N; ++k) out[k] = VF{LogLossFast(x[k].raw, t[k].raw)};
    return;
  }
  // Unrolled: a loop indexing the arrays at run time kept them in memory, and clang then kept
  // the caller's loaded vectors and the losses on the stack on the fast path too.
  HWY_UNROLL(4)
  for (int k = 0; k < N; ++k) {
    VF f, e;
    Reduce(d, t[k], &f, &e);
    out[k] = LossFromLog(d, x[k], t[k], VF{LogOfReduced(f.raw, e.raw)});
  }
}

#endif  // HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE
#endif  // HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || HWY_TARGET == HWY_SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_LOG_AVX2_INL_H_
