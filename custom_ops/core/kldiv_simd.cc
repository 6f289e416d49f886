// kldiv_simd.cc: the vectorised loops, compiled once per ISA with Highway's foreach_target
// (GCC target attributes, so one binary carries AVX-512 and AVX2 code; dispatch.cc picks one
// at load time with __builtin_cpu_supports; CPUs with neither use scalar_kernels.cc).
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
#define HWY_TARGET_INCLUDE "kldiv_simd.cc"
// foreach_target.h must come first (after the targets): not sorted.
// clang-format off
#include "simd_targets.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

#include <cstdint>
#include <cstring>

#include "kldiv_core.h"
#include "kldiv_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr int kMaxLanes = 16;  // float lanes of the widest target (AVX-512)

template <DType kT>
struct Storage;
template <>
struct Storage<DType::kFloat32> {
  using type = float;
};
template <>
struct Storage<DType::kFloat16> {
  using type = hwy::float16_t;
};
template <>
struct Storage<DType::kBFloat16> {
  using type = uint16_t;
};

template <DType kT>
HWY_INLINE VF LoadVec(DF d, const typename Storage<kT>::type* p) {
  if constexpr (kT == DType::kFloat32) {
    return hn::LoadU(d, p);
  } else if constexpr (kT == DType::kFloat16) {
    const hn::Rebind<hwy::float16_t, DF> dh;  // F16C: exact
    return hn::PromoteTo(d, hn::LoadU(dh, p));
  } else {
    const hn::Rebind<uint16_t, DF> du16;
    const hn::RebindToUnsigned<DF> du32;
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
  }
}

template <DType kT>
HWY_INLINE void StoreVec(DF d, VF v, typename Storage<kT>::type* p) {
  if constexpr (kT == DType::kFloat32) {
    hn::StoreU(v, d, p);
  } else if constexpr (kT == DType::kFloat16) {
    const hn::Rebind<hwy::float16_t, DF> dh;  // F16C vcvtps2ph: round to nearest even
    hn::StoreU(hn::DemoteTo(dh, v), dh, p);
  } else {
    // Round to nearest even on the bits; NaN keeps its sign and becomes a quiet NaN.
    const hn::RebindToUnsigned<DF> du32;
    const hn::RebindToSigned<DF> di32;
    const hn::Rebind<uint16_t, DF> du16;
    const auto bits = hn::BitCast(du32, v);
    const auto lsb = hn::And(hn::ShiftRight<16>(bits), hn::Set(du32, 1u));
    const auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du32, 0x7FFFu), lsb)));
    const auto quiet = hn::Or(hn::ShiftRight<16>(bits), hn::Set(du32, 0x40u));
    const auto is_nan = hn::RebindMask(du32, hn::IsNaN(v));
    const auto r = hn::IfThenElse(is_nan, quiet, rounded);
#if HWY_TARGET == HWY_AVX3
    (void)di32;
    (void)du16;  // the values fit 16 bits: truncate (vpmovdw), no saturation needed
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r.raw));
#else
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di32, r)), du16, p);
#endif
  }
}

template <DType kT>
HWY_INLINE float LoadScalar(const typename Storage<kT>::type* p) {
  if constexpr (kT == DType::kFloat32) {
    return *p;
  } else if constexpr (kT == DType::kFloat16) {
    uint16_t bits;
    std::memcpy(&bits, p, sizeof(bits));
    return HalfToFloat(bits);
  } else {
    return BFloat16ToFloat(*p);
  }
}

#if HWY_TARGET == HWY_AVX3
// AVX-512: t = m 2^e with m in [1, 2) (getmant/getexp: exact for subnormals, no compare, no
// blend). The top 5 bits of m's fraction pick c ~ 1/m from a 32-entry table (vpermt2ps, no
// gather), so that r = m c - 1 lies in [-1/64, 1/32):
//   log t = e ln2 + A + log1p(r),  A = -log c,  log1p(r) = r + r^2 (b0 + b1 r + b2 r^2):
// a degree-4 polynomial where getmant's [0.75, 1.5) needed degree 10 (4 flops instead of 10).
// The sum is arranged so that its large part is exact: ln2 and A are split into a head on a
// 2^-16 grid (kLn2Hi, kLogAHi: e * kLn2Hi + AHi is exact in float for |e| <= 149) and a tail
// (kLn2Lo, kLogALo) added to the small terms, so the only roundings at the result's scale are
// r + (the rest) and the final sum. c = 1 for m in [1, 1 + 1/32) (r = m - 1 exactly) and
// c = 1/2 for m in [2 - 1/32, 2), where e = -1 cancels the head and the tail exactly: log t
// near 1 keeps its relative accuracy. Worst error of the log over every 7th float: 1.07 ulp
// (the loss tests bound t (log t - x) at 2 ulps).
// Tables: c = float(1 / (1 + (k + 1/2) / 32)), A = -log c split as above (mpmath, 200 bits).
// b1, b2: weighted least-squares fit (Lawson iterations towards the minimax) of log1p over
// r's range, 0.31 ulp before rounding to float.
alignas(64) constexpr float kLogC[32] = {1.0f,
                                         0.9552238583564758f,
                                         0.9275362491607666f,
                                         0.9014084339141846f,
                                         0.8767123222351074f,
                                         0.8533333539962769f,
                                         0.8311688303947449f,
                                         0.8101266026496887f,
                                         0.790123462677002f,
                                         0.7710843086242676f,
                                         0.7529411911964417f,
                                         0.7356321811676025f,
                                         0.7191011309623718f,
                                         0.7032967209815979f,
                                         0.6881720423698425f,
                                         0.6736842393875122f,
                                         0.6597937941551208f,
                                         0.6464646458625793f,
                                         0.6336633563041687f,
                                         0.6213592290878296f,
                                         0.6095238327980042f,
                                         0.5981308221817017f,
                                         0.5871559381484985f,
                                         0.5765765905380249f,
                                         0.5663716793060303f,
                                         0.5565217137336731f,
                                         0.5470085740089417f,
                                         0.5378151535987854f,
                                         0.5289255976676941f,
                                         0.5203251838684082f,
                                         0.5120000243186951f,
                                         0.5f};
alignas(64) constexpr float kLogAHi[32] = {0.0f,
                                           0.045806884765625f,
                                           0.075225830078125f,
                                           0.103790283203125f,
                                           0.1315765380859375f,
                                           0.158599853515625f,
                                           0.1849212646484375f,
                                           0.2105712890625f,
                                           0.235565185546875f,
                                           0.2599639892578125f,
                                           0.2837677001953125f,
                                           0.3070220947265625f,
                                           0.3297576904296875f,
                                           0.3519744873046875f,
                                           0.37371826171875f,
                                           0.394989013671875f,
                                           0.41583251953125f,
                                           0.4362335205078125f,
                                           0.45623779296875f,
                                           0.4758453369140625f,
                                           0.4950714111328125f,
                                           0.513946533203125f,
                                           0.532470703125f,
                                           0.5506439208984375f,
                                           0.568511962890625f,
                                           0.5860443115234375f,
                                           0.6032867431640625f,
                                           0.6202392578125f,
                                           0.63690185546875f,
                                           0.6533050537109375f,
                                           0.66943359375f,
                                           0.693145751953125f};
alignas(64) constexpr float kLogALo[32] = {0.0f,
                                           2.6745487957668956e-06f,
                                           -2.4274670522572706e-06f,
                                           6.529105121444445e-06f,
                                           -1.7284664011185669e-07f,
                                           5.152446647116449e-06f,
                                           1.074776946552447e-06f,
                                           -6.5451008595118765e-06f,
                                           8.78315290719911e-07f,
                                           -6.427567768696463e-06f,
                                           4.533775666004658e-07f,
                                           2.944293555628974e-06f,
                                           -4.414301656652242e-06f,
                                           1.910706714625121e-06f,
                                           -1.8509938399802195e-06f,
                                           4.751728283736156e-06f,
                                           -4.593654011841863e-06f,
                                           3.2471984923176933e-06f,
                                           -3.436546762713988e-07f,
                                           5.586426823356305e-07f,
                                           5.817480996483937e-06f,
                                           -7.504359018639661e-07f,
                                           -5.861414592800429e-06f,
                                           3.172839797116467e-06f,
                                           -7.223812644951977e-06f,
                                           4.779114988195943e-06f,
                                           4.058913873450365e-06f,
                                           1.1007166449417127e-06f,
                                           5.64867787034018e-06f,
                                           -3.744445393749629e-06f,
                                           -2.9873049243178684e-06f,
                                           1.428606765330187e-06f};
constexpr float kLn2Hi = 0.693145751953125f;  // 45426 / 2^16
constexpr float kLn2Lo = 1.428606765330187e-06f;
constexpr float kLog1p[3] = {-0.5f, 0.333372563123703f, -0.24576151371002197f};

// The loss t * (log t - x) of N vectors, computed stage by stage across the N so that the
// instruction stream interleaves N independent dependency chains. 0 where t == 0 (one
// zero-masked multiply); t < 0 gives NaN (getmant's sign control), t = +inf gives +inf
// (getexp), NaN t propagates.
template <int N>
HWY_INLINE void LogLosses(DF d, const VF* x, const VF* t, VF* out) {
  (void)d;
  const __m512 c_lo = _mm512_load_ps(kLogC), c_hi = _mm512_load_ps(kLogC + 16);
  const __m512 h_lo = _mm512_load_ps(kLogAHi), h_hi = _mm512_load_ps(kLogAHi + 16);
  const __m512 l_lo = _mm512_load_ps(kLogALo), l_hi = _mm512_load_ps(kLogALo + 16);
  __m512 m[N], e[N], r[N], head[N], lo[N], r2[N], q[N];
  for (int k = 0; k < N; ++k) {
    m[k] = _mm512_getmant_ps(t[k].raw, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_nan);
    e[k] = _mm512_getexp_ps(t[k].raw);
  }
  for (int k = 0; k < N; ++k) {
    const __m512i idx = _mm512_srli_epi32(_mm512_castps_si512(m[k]), 18);  // low 5 bits used
    r[k] = _mm512_fmsub_ps(m[k], _mm512_permutex2var_ps(c_lo, idx, c_hi), _mm512_set1_ps(1.0f));
    head[k] = _mm512_fmadd_ps(e[k], _mm512_set1_ps(kLn2Hi),
                              _mm512_permutex2var_ps(h_lo, idx, h_hi));  // exact
    lo[k] = _mm512_fmadd_ps(e[k], _mm512_set1_ps(kLn2Lo), _mm512_permutex2var_ps(l_lo, idx, l_hi));
  }
  for (int k = 0; k < N; ++k) r2[k] = _mm512_mul_ps(r[k], r[k]);
  for (int k = 0; k < N; ++k) {
    q[k] = _mm512_fmadd_ps(_mm512_set1_ps(kLog1p[2]), r[k], _mm512_set1_ps(kLog1p[1]));
  }
  for (int k = 0; k < N; ++k) q[k] = _mm512_fmadd_ps(q[k], r[k], _mm512_set1_ps(kLog1p[0]));
  for (int k = 0; k < N; ++k) {
    const __m512 lg =
        _mm512_add_ps(head[k], _mm512_add_ps(r[k], _mm512_fmadd_ps(r2[k], q[k], lo[k])));
    // One zero-masked multiply: lanes where t == 0 (or -0) get 0; NaN t compares unequal.
    const __mmask16 nonzero = _mm512_cmp_ps_mask(t[k].raw, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    out[k] = VF{_mm512_maskz_mul_ps(nonzero, t[k].raw, _mm512_sub_ps(lg, x[k].raw))};
  }
}
#else  // AVX2

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

#if HWY_TARGET == HWY_NEON
// NEON (aarch64): AVX2's log and careful path below, in Highway's portable ops (the same
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

template <int N>
HWY_INLINE void LogLosses(DF d, const VF* x, const VF* t, VF* out) {
  for (int k = 0; k < N; ++k) {
    VF f, e;
    Reduce(d, t[k], &f, &e);
    out[k] = LossFromLog(d, x[k], t[k], LogOfReducedPortable(d, f, e));
  }
}
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
  for (int k = 0; k < N; ++k) {
    VF f, e;
    Reduce(d, t[k], &f, &e);
    out[k] = LossFromLog(d, x[k], t[k], VF{LogOfReduced(f.raw, e.raw)});
  }
}
#endif  // HWY_TARGET == HWY_NEON

#endif  // HWY_TARGET == HWY_AVX3

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
    VF out;
    LogLosses<1>(d, &x, &t, &out);
    return out;
  }
}

// The losses of four vectors (see LogLosses).
template <bool kLogTarget>
HWY_INLINE void Losses4(DF d, const VF* x, const VF* t, VF* out) {
  if constexpr (kLogTarget) {
    for (int k = 0; k < 4; ++k) out[k] = Loss<true>(d, x[k], t[k]);
  } else {
    LogLosses<4>(d, x, t, out);
  }
}

// Software prefetch 2 KiB ahead of the sum loop's reads, on AVX-512 (where the loop is fast
// enough to outrun the hardware prefetchers once the inputs no longer fit L2: 2**18 float32
// elements summed 0.39 -> 0.35 ns per element; no change in L2, and none for AVX2 or for the
// pointwise loop, which also writes). Addresses are computed as integers: a prefetch past the
// end of an input is harmless, a pointer past it is not.
template <typename S, int kSX, int kST>
HWY_INLINE void PrefetchAhead(const S* x, const S* t, int64_t i, int64_t count) {
#if HWY_TARGET == HWY_AVX3
  constexpr int64_t kAheadBytes = 2048;
  for (int64_t k = 0; k < count * static_cast<int64_t>(sizeof(S)); k += 64) {
    const auto at = [&](const S* p) {
      return reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) +
                                           static_cast<uintptr_t>(i) * sizeof(S) +
                                           static_cast<uintptr_t>(k + kAheadBytes));
    };
    if (kSX) _mm_prefetch(at(x), _MM_HINT_T0);
    if (kST) _mm_prefetch(at(t), _MM_HINT_T0);
  }
#else
  (void)x, (void)t, (void)i, (void)count;
#endif
}

// Copies the last r (< lanes) elements of a run into zero-padded buffers; a zero x and t give a
// zero loss in both modes, so padded lanes add nothing to sums.
template <DType kT, int kSX, int kST>
HWY_INLINE void FillTail(const typename Storage<kT>::type* x, const typename Storage<kT>::type* t,
                         int64_t i, int64_t r, typename Storage<kT>::type* xb,
                         typename Storage<kT>::type* tb) {
  std::memset(static_cast<void*>(xb), 0, sizeof(*xb) * kMaxLanes);
  std::memset(static_cast<void*>(tb), 0, sizeof(*tb) * kMaxLanes);
  for (int64_t j = 0; j < r; ++j) {
    xb[j] = x[kSX ? i + j : 0];
    tb[j] = t[kST ? i + j : 0];
  }
}

template <DType kT, bool kLogTarget, int kSX, int kST>
void PointwiseRun(const void* xv, const void* tv, int64_t n, void* outv) {
  using S = typename Storage<kT>::type;
  const S* x = static_cast<const S*>(xv);
  const S* t = static_cast<const S*>(tv);
  S* out = static_cast<S*>(outv);
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF xs = hn::Set(d, kSX ? 0.0f : LoadScalar<kT>(x));
  const VF ts = hn::Set(d, kST ? 0.0f : LoadScalar<kT>(t));
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {  // four independent chains per step
    VF xk[4], tk[4], l[4];
    for (int k = 0; k < 4; ++k) {
      xk[k] = kSX ? LoadVec<kT>(d, x + i + k * lanes) : xs;
      tk[k] = kST ? LoadVec<kT>(d, t + i + k * lanes) : ts;
    }
    Losses4<kLogTarget>(d, xk, tk, l);
    for (int k = 0; k < 4; ++k) StoreVec<kT>(d, l[k], out + i + k * lanes);
  }
  for (; i + lanes <= n; i += lanes) {
    const VF xi = kSX ? LoadVec<kT>(d, x + i) : xs;
    const VF ti = kST ? LoadVec<kT>(d, t + i) : ts;
    StoreVec<kT>(d, Loss<kLogTarget>(d, xi, ti), out + i);
  }
  if (i < n) {
    HWY_ALIGN S xb[kMaxLanes];
    HWY_ALIGN S tb[kMaxLanes];
    HWY_ALIGN S ob[kMaxLanes];
    FillTail<kT, kSX, kST>(x, t, i, n - i, xb, tb);
    StoreVec<kT>(d, Loss<kLogTarget>(d, LoadVec<kT>(d, xb), LoadVec<kT>(d, tb)), ob);
    std::memcpy(static_cast<void*>(out + i), ob, sizeof(S) * static_cast<size_t>(n - i));
  }
}

template <DType kT, bool kLogTarget, int kSX, int kST>
double SumRun(const void* xv, const void* tv, int64_t n) {
  using S = typename Storage<kT>::type;
  const S* x = static_cast<const S*>(xv);
  const S* t = static_cast<const S*>(tv);
  const DF d;
  const hn::Half<DF> dh;
  const hn::Repartition<double, DF> dd;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF xs = hn::Set(d, kSX ? 0.0f : LoadScalar<kT>(x));
  const VF ts = hn::Set(d, kST ? 0.0f : LoadScalar<kT>(t));
  auto acc_lo = hn::Zero(dd);
  auto acc_hi = hn::Zero(dd);
  // Adds a float vector of partial sums to the double accumulators.
  const auto accumulate = [&](VF v) {
    acc_lo = hn::Add(acc_lo, hn::PromoteTo(dd, hn::LowerHalf(dh, v)));
    acc_hi = hn::Add(acc_hi, hn::PromoteTo(dd, hn::UpperHalf(dh, v)));
  };
  int64_t i = 0;
  // Eight vectors per step, in two groups of four: independent log/exp chains for the
  // out-of-order core, added pairwise in float (three roundings per lane, each within half an
  // ulp of the partial) and promoted to double once per step instead of once per vector.
  const auto load4 = [&](int64_t at, VF* xk, VF* tk) {
    for (int k = 0; k < 4; ++k) {
      xk[k] = kSX ? LoadVec<kT>(d, x + at + k * lanes) : xs;
      tk[k] = kST ? LoadVec<kT>(d, t + at + k * lanes) : ts;
    }
  };
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    VF xk[4], tk[4], l[8];
    PrefetchAhead<S, kSX, kST>(x, t, i, 8 * lanes);
    load4(i, xk, tk);
    Losses4<kLogTarget>(d, xk, tk, l);
    load4(i + 4 * lanes, xk, tk);
    Losses4<kLogTarget>(d, xk, tk, l + 4);
    const VF partial = hn::Add(hn::Add(hn::Add(l[0], l[1]), hn::Add(l[2], l[3])),
                               hn::Add(hn::Add(l[4], l[5]), hn::Add(l[6], l[7])));
    if (HWY_LIKELY(hn::AllTrue(d, hn::IsFinite(partial)))) {
      accumulate(partial);
    } else {  // inf/NaN terms, or finite terms whose float sum overflows: add them in double
      for (int k = 0; k < 8; ++k) accumulate(l[k]);
    }
  }
  if (i + 4 * lanes <= n) {
    VF xk[4], tk[4], l[4];
    load4(i, xk, tk);
    Losses4<kLogTarget>(d, xk, tk, l);
    const VF partial = hn::Add(hn::Add(l[0], l[1]), hn::Add(l[2], l[3]));
    if (HWY_LIKELY(hn::AllTrue(d, hn::IsFinite(partial)))) {
      accumulate(partial);
    } else {
      for (int k = 0; k < 4; ++k) accumulate(l[k]);
    }
    i += 4 * lanes;
  }
  for (; i + lanes <= n; i += lanes) {
    const VF xi = kSX ? LoadVec<kT>(d, x + i) : xs;
    const VF ti = kST ? LoadVec<kT>(d, t + i) : ts;
    accumulate(Loss<kLogTarget>(d, xi, ti));
  }
  if (i < n) {
    HWY_ALIGN S xb[kMaxLanes];
    HWY_ALIGN S tb[kMaxLanes];
    FillTail<kT, kSX, kST>(x, t, i, n - i, xb, tb);
    accumulate(Loss<kLogTarget>(d, LoadVec<kT>(d, xb), LoadVec<kT>(d, tb)));
  }
  return hn::GetLane(hn::SumOfLanes(dd, hn::Add(acc_lo, acc_hi)));
}

template <DType kT, bool kLogTarget>
void Pointwise(const void* x, int64_t sx, const void* t, int64_t st, int64_t n, void* out) {
  if (sx && st) return PointwiseRun<kT, kLogTarget, 1, 1>(x, t, n, out);
  if (sx) return PointwiseRun<kT, kLogTarget, 1, 0>(x, t, n, out);
  if (st) return PointwiseRun<kT, kLogTarget, 0, 1>(x, t, n, out);
  return PointwiseRun<kT, kLogTarget, 0, 0>(x, t, n, out);
}

template <DType kT, bool kLogTarget>
double Sum(const void* x, int64_t sx, const void* t, int64_t st, int64_t n) {
  if (sx && st) return SumRun<kT, kLogTarget, 1, 1>(x, t, n);
  if (sx) return SumRun<kT, kLogTarget, 1, 0>(x, t, n);
  if (st) return SumRun<kT, kLogTarget, 0, 1>(x, t, n);
  return SumRun<kT, kLogTarget, 0, 0>(x, t, n);
}

#if HWY_TARGET == HWY_AVX3
constexpr const char* kTargetName = "avx3";
constexpr auto kRowKL = detail::RowKLAvx3;  // row_kl_simd.cc
#elif HWY_TARGET == HWY_AVX2
constexpr const char* kTargetName = "avx2";
constexpr auto kRowKL = detail::RowKLAvx2;
#else
constexpr const char* kTargetName = "neon";
constexpr auto kRowKL = detail::RowKLNeon;
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
      kRowKL(),
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
