// row_kl_rows-inl.h: the per-row KL of a range of rows (kldiv_kernels.h's RowKLFn): short rows
// by row_kl_short-inl.h, longer ones by row_kl_long-inl.h, each falling back to the float64 path
// (RowKLDouble) where the SIMD identity does not hold.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_ROW_KL_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_ROW_KL_ROWS_INL_H_
#undef KLDIV_CORE_ROW_KL_ROWS_INL_H_
#else
#define KLDIV_CORE_ROW_KL_ROWS_INL_H_
#endif

#include "hwy/highway.h"
#include "row_kl.h"
#include "row_kl_long-inl.h"
#include "row_kl_short-inl.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2

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

inline void RowsAnyKind(const RowProblem& p, int64_t begin, int64_t end, double* kl, bool* agree) {
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

#endif  // KLDIV_CORE_ROW_KL_ROWS_INL_H_
