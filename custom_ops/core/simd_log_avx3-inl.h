// simd_log_avx3-inl.h: the loss t * (log t - x) of N float vectors on AVX-512, with the core's
// own log (a 32-entry table and a degree-4 polynomial: no division).

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_LOG_AVX3_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_LOG_AVX3_INL_H_
#undef KLDIV_CORE_SIMD_LOG_AVX3_INL_H_
#else
#define KLDIV_CORE_SIMD_LOG_AVX3_INL_H_
#endif

#include "hwy/highway.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

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

#endif  // HWY_TARGET == HWY_AVX3

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_LOG_AVX3_INL_H_
