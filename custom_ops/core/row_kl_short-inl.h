// row_kl_short-inl.h: rows of fewer than 128 classes, 8 or 16 at a time (row_kl.h): transposed
// so that each row is one lane, the passes of row_kl_long-inl.h as vector operations, and each
// row's KL finished in vectors.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_ROW_KL_SHORT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_ROW_KL_SHORT_INL_H_
#undef KLDIV_CORE_ROW_KL_SHORT_INL_H_
#else
#define KLDIV_CORE_ROW_KL_SHORT_INL_H_
#endif

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "row_kl.h"
#include "row_kl_terms-inl.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

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

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_ROW_KL_SHORT_INL_H_
