// row_kl_terms-inl.h: the per-class terms of the per-row KL (row_kl.h) for one vector of
// classes, by row kind: the weights, the log-ratios and the candidate's leftover mass, their
// contributions to the four sums, and those sums in double.

#include <cmath>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_ROW_KL_TERMS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_ROW_KL_TERMS_INL_H_
#undef KLDIV_CORE_ROW_KL_TERMS_INL_H_
#else
#define KLDIV_CORE_ROW_KL_TERMS_INL_H_
#endif

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "row_kl.h"
#include "row_kl_exp-inl.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

// Above this |u| (with weight > 0) e^u or the sums lose their meaning in float: the row takes
// the float64 path.
constexpr float kMaxRatio = 80.0f;

// One vector of classes: the weights w, the log-ratios u (0 where w is 0: 0 log 0 = 0) and the
// candidate's mass r where w is 0 (it still counts in the candidate's normaliser).
template <RowKind kKind>
HWY_INLINE void Terms(DF d, VF vb, VF vc, VF max_b, VF max_c, VF inv_t, VF* w, VF* u, VF* r) {
  if constexpr (kKind == RowKind::kProbs) {
    // log(c / b): log1p((c - b) / b) where c and b are close (c - b is exact there), log of
    // the ratio elsewhere (1 + x would round away a small ratio). A ratio outside
    // [1e-30, 1e30] (or 0, or a 0 weight: masked below) is made huge so that the row takes the
    // float64 path.
    *w = vb;
    const VF x = hn::Div(hn::Sub(vc, vb), vb);
    *u = hn::Log1p(d, x);
    const auto far = hn::Ge(hn::Abs(x), hn::Set(d, 0.5f));
    if (HWY_UNLIKELY(!hn::AllFalse(d, far))) {  // in double: float's Log is off by 4 ulps
      const hn::Half<DF> dh;
      const hn::Repartition<double, DF> dd;
      const auto log_ratio = [&](auto half_c, auto half_b) {
        const auto q = hn::Div(hn::PromoteTo(dd, half_c), hn::PromoteTo(dd, half_b));
        const auto normal = hn::And(hn::Ge(q, hn::Set(dd, 1e-30)), hn::Le(q, hn::Set(dd, 1e30)));
        return hn::DemoteTo(
            dh, hn::IfThenElse(normal, hn::Log(dd, hn::IfThenElse(normal, q, hn::Set(dd, 1.0))),
                               hn::Set(dd, HUGE_VAL)));
      };
      const VF log_q = hn::Combine(d, log_ratio(hn::UpperHalf(dh, vc), hn::UpperHalf(dh, vb)),
                                   log_ratio(hn::LowerHalf(dh, vc), hn::LowerHalf(dh, vb)));
      *u = hn::IfThenElse(far, log_q, *u);
    }
  } else {
    // c - b is exact where c and b are close (within a factor 2), and so is the shift by the
    // difference of the maxima; (c - max c) - (b - max b) would round at |b - max b|.
    *w = ExpNonPositive(d, hn::Mul(hn::Sub(vb, max_b), inv_t));
    *u = hn::Mul(hn::Sub(hn::Sub(vc, vb), hn::Sub(max_c, max_b)), inv_t);
  }
  const auto zero = hn::Eq(*w, hn::Zero(d));
  *u = hn::IfThenZeroElse(zero, *u);
  *r = hn::Zero(d);
  if (HWY_UNLIKELY(!hn::AllFalse(d, zero))) {
    if constexpr (kKind == RowKind::kProbs) {
      *r = hn::IfThenElseZero(zero, vc);
    } else {
      *r = hn::IfThenElseZero(zero, ExpNonPositive(d, hn::Mul(hn::Sub(vc, max_c), inv_t)));
    }
  }
}

// One vector of classes' contributions to the four sums of row_kl.h, in float.
struct Contributions {
  VF w, wu, wg, r;  // w, w u, w g(u), r
};

HWY_INLINE Contributions Add(const Contributions& x, const Contributions& y) {
  return {hn::Add(x.w, y.w), hn::Add(x.wu, y.wu), hn::Add(x.wg, y.wg), hn::Add(x.r, y.r)};
}

// The contributions of one vector of classes; max_u tracks |u| for the conditioning check.
template <RowKind kKind>
HWY_INLINE Contributions Contribute(DF d, VF vb, VF vc, VF max_b, VF max_c, VF inv_t, VF* max_u) {
  VF w, u, r;
  Terms<kKind>(d, vb, vc, max_b, max_c, inv_t, &w, &u, &r);
  return {w, hn::Mul(w, u), hn::Mul(w, ExpM1MinusX(d, u, max_u)), r};  // no NaN comes here
}

// The four sums in double, lane by lane (each in a lower and an upper half of the lanes).
struct DoubleSums {
  using DD = hn::Repartition<double, DF>;
  hn::Vec<DD> lo[4], hi[4];

  HWY_INLINE DoubleSums() {
    for (int k = 0; k < 4; ++k) lo[k] = hi[k] = hn::Zero(DD());
  }

  HWY_INLINE void Add(const Contributions& t) {
    const VF parts[4] = {t.w, t.wu, t.wg, t.r};
    const DD dd;
    const hn::Half<DF> dh;
    for (int k = 0; k < 4; ++k) {
      lo[k] = hn::Add(lo[k], hn::PromoteTo(dd, hn::LowerHalf(dh, parts[k])));
      hi[k] = hn::Add(hi[k], hn::PromoteTo(dd, hn::UpperHalf(dh, parts[k])));
    }
  }
};

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_ROW_KL_TERMS_INL_H_
