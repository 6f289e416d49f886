// row_kl_long-inl.h: the passes over one row of 128 classes or more (row_kl.h): one for the
// maxima (and NaN, inf and sign checks), a short scan for each argmax, and one that sums the
// weights, w u and w g(u) in double.

#include <cmath>
#include <cstdint>
#include <limits>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_ROW_KL_LONG_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_ROW_KL_LONG_INL_H_
#undef KLDIV_CORE_ROW_KL_LONG_INL_H_
#else
#define KLDIV_CORE_ROW_KL_LONG_INL_H_
#endif

#include "hwy/highway.h"
#include "row_kl.h"
#include "row_kl_terms-inl.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

struct Scan {
  float max_b, min_b, max_c, min_c;
  bool nan;
};

// The last count (< lanes) values of a row, padded with `fill` (a masked load: nothing past the
// row is read).
HWY_INLINE VF LoadTail(DF d, const float* p, int64_t count, float fill) {
  const auto valid = hn::FirstN(d, static_cast<size_t>(count));
  return hn::IfThenElse(valid, hn::MaskedLoad(valid, d, p), hn::Set(d, fill));
}

// The minima are needed for probabilities only (their sign).
template <RowKind kKind>
Scan ScanRow(const float* b, const float* c, int64_t n) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  VF max_b = hn::Set(d, b[0]), min_b = max_b, max_c = hn::Set(d, c[0]), min_c = max_c;
  auto nan = hn::IsNaN(max_b);
  const auto take = [&](VF vb, VF vc) {
    max_b = hn::Max(max_b, vb);
    max_c = hn::Max(max_c, vc);
    if constexpr (kKind == RowKind::kProbs) {
      min_b = hn::Min(min_b, vb);
      min_c = hn::Min(min_c, vc);
    }
    nan = hn::Or(nan, hn::Or(hn::IsNaN(vb), hn::IsNaN(vc)));
  };
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) take(hn::LoadU(d, b + i), hn::LoadU(d, c + i));
  if (i < n) take(LoadTail(d, b + i, n - i, b[0]), LoadTail(d, c + i, n - i, c[0]));
  return {hn::GetLane(hn::MaxOfLanes(d, max_b)), hn::GetLane(hn::MinOfLanes(d, min_b)),
          hn::GetLane(hn::MaxOfLanes(d, max_c)), hn::GetLane(hn::MinOfLanes(d, min_c)),
          !hn::AllFalse(d, nan)};
}

// The first index holding `value` (present in the row).
inline int64_t FirstEqual(const float* row, int64_t n, float value) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF v = hn::Set(d, value);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto hit = hn::Eq(hn::LoadU(d, row + i), v);
    if (!hn::AllFalse(d, hit)) return i + static_cast<int64_t>(hn::FindKnownFirstTrue(d, hit));
  }
  for (; i < n; ++i) {
    if (row[i] == value) return i;
  }
  return 0;
}

struct Sums {
  double a = 0.0, c = 0.0, g = 0.0, r = 0.0;
  bool ill = false;  // some |u| > kMaxRatio with weight > 0
};

template <RowKind kKind>
Sums SumRow(const float* b, const float* c, int64_t n, float max_b, float max_c, float inv_t) {
  const DF d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF vmax_b = hn::Set(d, max_b), vmax_c = hn::Set(d, max_c), vinv = hn::Set(d, inv_t);
  DoubleSums sums;
  VF max_u = hn::Zero(d);
  const auto contribute = [&](VF vb, VF vc) {
    return Contribute<kKind>(d, vb, vc, vmax_b, vmax_c, vinv, &max_u);
  };
  int64_t i = 0;
  // Eight vectors per step, summed in float (at most eight positive or small terms per lane)
  // and promoted once: the sums' error stays far below the KL's (row_kl.h).
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    Contributions t = contribute(hn::LoadU(d, b + i), hn::LoadU(d, c + i));
    for (int k = 1; k < 8; ++k) {
      t = Add(t, contribute(hn::LoadU(d, b + i + k * lanes), hn::LoadU(d, c + i + k * lanes)));
    }
    sums.Add(t);
  }
  for (; i + lanes <= n; i += lanes) sums.Add(contribute(hn::LoadU(d, b + i), hn::LoadU(d, c + i)));
  if (i < n) {  // padding of weight and mass 0: -inf logits, 0 probabilities
    const float fill = kKind == RowKind::kProbs ? 0.0f : -std::numeric_limits<float>::infinity();
    sums.Add(contribute(LoadTail(d, b + i, n - i, fill), LoadTail(d, c + i, n - i, fill)));
  }
  const DoubleSums::DD dd;
  double total[4];
  for (int k = 0; k < 4; ++k) {
    total[k] = hn::GetLane(hn::SumOfLanes(dd, hn::Add(sums.lo[k], sums.hi[k])));
  }
  Sums s;
  s.a = total[0];
  s.c = total[1];
  s.g = total[2];
  s.r = total[3];
  s.ill = !(hn::GetLane(hn::MaxOfLanes(d, max_u)) <= kMaxRatio);
  return s;
}

// Whether the row's scan rules out the SIMD identity (NaN rows are handled before).
template <RowKind kKind>
bool NeedsDouble(const Scan& s) {
  const bool finite = std::isfinite(s.max_b) && std::isfinite(s.max_c);
  if constexpr (kKind == RowKind::kProbs) {
    return !finite || s.min_b < 0.0f || s.min_c < 0.0f || !(s.max_b > 0.0f);
  } else {
    return !finite;
  }
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_ROW_KL_LONG_INL_H_
