// row_kl_simd.cc: the per-row KL loops (row_kl.h), compiled for AVX-512 and AVX2 with Highway's
// foreach_target like kldiv_simd.cc (simd_targets.h); each target's table (kldiv_kernels.h)
// holds its loops. Rows of 128 classes or more, one at a time: one pass for the max (and NaN,
// inf and sign checks), a short scan for each argmax, and one pass that sums the weights, w u
// and w g(u) (row_kl.h) in double. Shorter rows, 8 or 16 at a time (ShortRows): transposed so
// that each row is one lane, the same passes as vector operations.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "row_kl_simd.cc"
// clang-format off
#include "simd_targets.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kldiv_kernels.h"
#include "row_kl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<hn::RebindToSigned<DF>>;
constexpr int kMaxLanes = 16;

// Above this |u| (with weight > 0) e^u or the sums lose their meaning in float: the row takes
// the float64 path.
constexpr float kMaxRatio = 80.0f;

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
int64_t FirstEqual(const float* row, int64_t n, float value) {
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

struct Sums {
  double a = 0.0, c = 0.0, g = 0.0, r = 0.0;
  bool ill = false;  // some |u| > kMaxRatio with weight > 0
};

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

// KLFromSums (row_kl.h) for a vector of rows in double: NaN where the identity is
// ill-conditioned. Highway's Log1p is within 2 ulp where std::log1p is within 1: the difference
// is below 1e-15 of log1p(x), far below the KL's own error.
template <class DD, class VD = hn::Vec<DD>>
HWY_INLINE VD KLFromSumsVec(DD dd, VD a, VD c, VD g, VD r) {
  const VD inv_a = hn::Div(hn::Set(dd, 1.0), a);  // one division (slow in double), not three
  const VD x = hn::Mul(hn::Add(hn::Add(c, g), r), inv_a);  // E_P[e^u] + R / A - 1
  const auto good = hn::And(hn::Gt(a, hn::Zero(dd)), hn::Gt(x, hn::Set(dd, -1.0 + 1e-6)));
  const VD log1p = hn::Log1p(dd, hn::IfThenElse(good, x, hn::Zero(dd)));
  const VD kl = hn::IfThenElse(hn::Le(hn::Abs(x), hn::Set(dd, 0.5)),
                               hn::MulAdd(hn::Add(g, r), inv_a, hn::Sub(log1p, x)),
                               hn::NegMulAdd(c, inv_a, log1p));
  return hn::IfThenElse(good, kl, hn::Set(dd, std::numeric_limits<double>::quiet_NaN()));
}

// Transposes a lanes x lanes tile: v[i] holds row i before, column i after. Interleaving lanes,
// then pairs of lanes, within 128-bit blocks, then exchanging blocks (AVX2: two per vector,
// AVX-512: four); about 4.5 shuffles per vector. Gathers, which would take each column
// straight from the rows, cost 0.8 ns per element on this project's Xeon machines.
HWY_INLINE void TransposeTile(DF d, VF* v) {
  constexpr size_t kL = hn::MaxLanes(DF());
  static_assert(kL == 8 || kL == 16, "a tile of 8 or 16 lanes");
  const hn::Repartition<double, DF> dd;
  for (size_t i = 0; i < kL; i += 2) {
    const VF lower = hn::InterleaveLower(d, v[i], v[i + 1]);
    v[i + 1] = hn::InterleaveUpper(d, v[i], v[i + 1]);
    v[i] = lower;
  }
  // v[g + k], g a multiple of 4: column 4m + k of rows g..g+3 in block m.
  for (size_t g = 0; g < kL; g += 4) {
    const auto r0 = hn::BitCast(dd, v[g]), r1 = hn::BitCast(dd, v[g + 1]);
    const auto r2 = hn::BitCast(dd, v[g + 2]), r3 = hn::BitCast(dd, v[g + 3]);
    v[g] = hn::BitCast(d, hn::InterleaveLower(dd, r0, r2));
    v[g + 1] = hn::BitCast(d, hn::InterleaveUpper(dd, r0, r2));
    v[g + 2] = hn::BitCast(d, hn::InterleaveLower(dd, r1, r3));
    v[g + 3] = hn::BitCast(d, hn::InterleaveUpper(dd, r1, r3));
  }
  for (size_t k = 0; k < 4; ++k) {
    if constexpr (kL == 8) {
      const VF u0 = v[k], u1 = v[4 + k];
      v[k] = hn::ConcatLowerLower(d, u1, u0);
      v[4 + k] = hn::ConcatUpperUpper(d, u1, u0);
    } else {
      const VF u0 = v[k], u1 = v[4 + k], u2 = v[8 + k], u3 = v[12 + k];
      const VF even01 = hn::OddEvenBlocks(hn::SwapAdjacentBlocks(u1), u0);  // blocks 0 and 2
      const VF odd01 = hn::OddEvenBlocks(u1, hn::SwapAdjacentBlocks(u0));   // blocks 1 and 3
      const VF even23 = hn::OddEvenBlocks(hn::SwapAdjacentBlocks(u3), u2);
      const VF odd23 = hn::OddEvenBlocks(u3, hn::SwapAdjacentBlocks(u2));
      v[k] = hn::ConcatLowerLower(d, even23, even01);
      v[8 + k] = hn::ConcatUpperUpper(d, even23, even01);
      v[4 + k] = hn::ConcatLowerLower(d, odd23, odd01);
      v[12 + k] = hn::ConcatUpperUpper(d, odd23, odd01);
    }
  }
}

// Rows of fewer than kShortRow classes, one row per lane: lanes() rows at a time, transposed
// tile by tile so that class j of every row is one vector and every per-row reduction (maxima,
// argmaxima, sums, the KL from the sums) is a plain vector operation: a short row's horizontal
// reductions and a scalar log1p per row would cost more than its classes. Rows with a NaN, an
// infinite maximum or an ill-conditioned identity are redone one by one.
constexpr int64_t kShortRow = 128;

// One input's rows, transposed into `block` (class-major), with their maxima, first argmaxima,
// minima (probabilities only) and NaN.
struct ShortScan {
  VF max, min;
  VI arg;
  hn::Mask<DF> nan;
};

template <RowKind kKind>
HWY_INLINE ShortScan TransposeRows(DF d, const float* rows, int64_t count, int64_t n,
                                   float* block) {
  const hn::RebindToSigned<DF> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const VF inf = hn::Set(d, std::numeric_limits<float>::infinity());
  ShortScan s{hn::Neg(inf), inf, hn::Zero(di), hn::Lt(inf, inf)};  // all -inf: class 0
  for (int64_t first = 0; first < n; first += lanes) {
    const int64_t width = std::min(lanes, n - first);
    const auto valid = hn::FirstN(d, static_cast<size_t>(width));
    VF tile[kMaxLanes];
    for (int64_t r = 0; r < lanes; ++r) {  // lanes past `count` repeat the last row
      tile[r] = hn::MaskedLoad(valid, d, rows + std::min(r, count - 1) * n + first);
    }
    TransposeTile(d, tile);
    for (int64_t i = 0; i < width; ++i) {
      const VF v = tile[i];
      hn::Store(v, d, block + (first + i) * lanes);
      const auto jv = hn::Set(di, static_cast<int32_t>(first + i));
      s.arg = hn::IfThenElse(hn::RebindMask(di, hn::Gt(v, s.max)), jv, s.arg);
      s.nan = hn::Or(s.nan, hn::IsNaN(v));
      s.max = hn::Max(s.max, v);
      if constexpr (kKind == RowKind::kProbs) s.min = hn::Min(s.min, v);
    }
  }
  return s;
}

template <RowKind kKind>
void ShortRows(const RowProblem& p, int64_t first, int64_t count, double* kl, bool* agree) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t n = p.classes;
  const float* b = p.base + first * n;
  const float* c = p.candidate + first * n;
  HWY_ALIGN float block_b[kShortRow * kMaxLanes];
  HWY_ALIGN float block_c[kShortRow * kMaxLanes];
  const ShortScan sb = TransposeRows<kKind>(d, b, count, n, block_b);
  const ShortScan sc = TransposeRows<kKind>(d, c, count, n, block_c);
  const VF max_b = sb.max, max_c = sc.max, min_b = sb.min, min_c = sc.min;
  const VI arg_b = sb.arg, arg_c = sc.arg;
  const auto nan = hn::Or(sb.nan, sc.nan);
  const float inv_t = kKind == RowKind::kLogits ? 1.0f / p.temperature : 1.0f;
  const VF vinv = hn::Set(d, inv_t);
  DoubleSums sums;
  VF max_u = hn::Zero(d);
  const auto contribute = [&](int64_t j) {  // NaN lanes are redone below
    return Contribute<kKind>(d, hn::Load(d, block_b + j * lanes), hn::Load(d, block_c + j * lanes),
                             max_b, max_c, vinv, &max_u);
  };
  // Eight classes at a time summed in float, then promoted, as SumRow does.
  for (int64_t j = 0; j < n; j += 8) {
    Contributions t = contribute(j);
    for (int64_t k = j + 1; k < std::min(n, j + 8); ++k) t = Add(t, contribute(k));
    sums.Add(t);
  }
  // Lanes whose value stands: no NaN, finite maxima (probabilities: none negative, some
  // positive), every |u| within kMaxRatio.
  auto fast = hn::AndNot(nan, hn::And(hn::IsFinite(max_b), hn::IsFinite(max_c)));
  if constexpr (kKind == RowKind::kProbs) {
    const VF zero = hn::Zero(d);
    fast = hn::And(fast, hn::And(hn::Ge(hn::Min(min_b, min_c), zero), hn::Gt(max_b, zero)));
  }
  fast = hn::And(fast, hn::Le(max_u, hn::Set(d, kMaxRatio)));
  const DoubleSums::DD dd;
  const int64_t half = lanes / 2;
  const auto value_lo = KLFromSumsVec(dd, sums.lo[0], sums.lo[1], sums.lo[2], sums.lo[3]);
  const auto value_hi = KLFromSumsVec(dd, sums.hi[0], sums.hi[1], sums.hi[2], sums.hi[3]);
  const auto same = hn::Eq(arg_b, arg_c);
  if (HWY_LIKELY(count == lanes && hn::AllTrue(d, fast) && hn::AllFalse(dd, hn::IsNaN(value_lo)) &&
                 hn::AllFalse(dd, hn::IsNaN(value_hi)))) {
    hn::StoreU(value_lo, dd, kl + first);
    hn::StoreU(value_hi, dd, kl + first + half);
    static_assert(sizeof(bool) == 1, "bool is one byte, 0 or 1");
    const hn::Rebind<uint8_t, decltype(di)> du8;
    const auto flags = hn::DemoteTo(du8, hn::IfThenElseZero(same, hn::Set(di, 1)));
    hn::StoreU(flags, du8, reinterpret_cast<uint8_t*>(agree + first));
    return;
  }
  HWY_ALIGN double value[kMaxLanes];
  hn::Store(value_lo, dd, value);
  hn::Store(value_hi, dd, value + half);
  HWY_ALIGN int32_t equal[kMaxLanes];
  HWY_ALIGN float flags[kMaxLanes];  // 1: the value stands; 2: a NaN row; 0: redo
  hn::Store(hn::VecFromMask(di, same), di, equal);
  hn::Store(hn::IfThenElse(fast, hn::Set(d, 1.0f), hn::IfThenElseZero(nan, hn::Set(d, 2.0f))), d,
            flags);
  for (int64_t k = 0; k < count; ++k) {
    const int64_t row = first + k;
    if (flags[k] == 1.0f && !std::isnan(value[k])) {
      kl[row] = value[k];
      agree[row] = equal[k] != 0;
    } else if (flags[k] == 2.0f) {
      kl[row] = std::numeric_limits<double>::quiet_NaN();
      agree[row] = RowArgMax(b + k * n, n) == RowArgMax(c + k * n, n);
    } else {
      kl[row] = RowKLDouble(b + k * n, c + k * n, n, p.kind, p.temperature);
      agree[row] = equal[k] != 0;
    }
  }
}

template <RowKind kKind>
void Rows(const RowProblem& p, int64_t begin, int64_t end, double* kl, bool* agree) {
  const int64_t n = p.classes;
  if (n < kShortRow) {
    const int64_t lanes = static_cast<int64_t>(hn::Lanes(DF()));
    for (int64_t r = begin; r < end; r += lanes) {
      ShortRows<kKind>(p, r, std::min(lanes, end - r), kl, agree);
    }
    return;
  }
  const float inv_t = kKind == RowKind::kLogits ? 1.0f / p.temperature : 1.0f;
  for (int64_t r = begin; r < end; ++r) {
    const float* b = p.base + r * n;
    const float* c = p.candidate + r * n;
    const Scan scan = ScanRow<kKind>(b, c, n);
    if (scan.nan) {
      kl[r] = std::numeric_limits<double>::quiet_NaN();
      agree[r] = RowArgMax(b, n) == RowArgMax(c, n);
      continue;
    }
    agree[r] = FirstEqual(b, n, scan.max_b) == FirstEqual(c, n, scan.max_c);
    double value = 0.0;
    bool exact = NeedsDouble<kKind>(scan);
    if (!exact) {
      const Sums s = SumRow<kKind>(b, c, n, scan.max_b, scan.max_c, inv_t);
      value = KLFromSums(s.a, s.c, s.g, s.r);
      exact = s.ill || std::isnan(value);
    }
    kl[r] = exact ? RowKLDouble(b, c, n, p.kind, p.temperature) : value;
  }
}

void RowsAnyKind(const RowProblem& p, int64_t begin, int64_t end, double* kl, bool* agree) {
  switch (p.kind) {
    case RowKind::kLogits:
      return Rows<RowKind::kLogits>(p, begin, end, kl, agree);
    case RowKind::kLogProbs:
      return Rows<RowKind::kLogProbs>(p, begin, end, kl, agree);
    case RowKind::kProbs:
      return Rows<RowKind::kProbs>(p, begin, end, kl, agree);
  }
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kldiv {
namespace detail {

#if (HWY_TARGETS & HWY_AVX3) && KLDIV_SIMD_X86
RowKLFn RowKLAvx3() { return N_AVX3::RowsAnyKind; }
#else
RowKLFn RowKLAvx3() { return nullptr; }
#endif
#if (HWY_TARGETS & HWY_AVX2) && KLDIV_SIMD_X86
RowKLFn RowKLAvx2() { return N_AVX2::RowsAnyKind; }
#else
RowKLFn RowKLAvx2() { return nullptr; }
#endif

}  // namespace detail
}  // namespace kldiv
#endif  // HWY_ONCE
