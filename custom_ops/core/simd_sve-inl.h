// simd_sve-inl.h: the loss loops (kldiv_kernels.h's PointwiseFn and SumFn) on SVE, built by
// simd_tables_sve.cc. SVE's vector types are sizeless: no arrays of them, so these loops keep
// named vectors where simd_pointwise-inl.h and simd_sum-inl.h keep arrays of four, with the
// same order of operations: the per-element loss is NEON's (simd_loss-inl.h), and a sum takes
// the same steps as NEON's (eight vectors added pairwise in float, promoted to double once per
// step), so at SVE's 128-bit vector length it gives NEON's result to the bit. The vector length
// is known only at run time (128 to 2048 bits); the tail of a run goes through buffers of
// kMaxLanes (64) elements.

#include <cstdint>
#include <cstring>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_SVE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_SVE_INL_H_
#undef KLDIV_CORE_SIMD_SVE_INL_H_
#else
#define KLDIV_CORE_SIMD_SVE_INL_H_
#endif

#include "hwy/highway.h"
#include "kldiv_core.h"
#include "simd_common-inl.h"
#include "simd_io-inl.h"
#include "simd_loss-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_SVE

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
  const auto loss_at = [&](int64_t at) {
    return Loss<kLogTarget>(d, kSX ? LoadVec<kT>(d, x + at) : xs,
                            kST ? LoadVec<kT>(d, t + at) : ts);
  };
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {  // two independent chains per step
    const VF l0 = loss_at(i);
    const VF l1 = loss_at(i + lanes);
    StoreVec<kT>(d, l0, out + i);
    StoreVec<kT>(d, l1, out + i + lanes);
  }
  for (; i + lanes <= n; i += lanes) StoreVec<kT>(d, loss_at(i), out + i);
  if (i < n) {
    HWY_ALIGN S xb[kMaxLanes];
    HWY_ALIGN S tb[kMaxLanes];
    HWY_ALIGN S ob[kMaxLanes];
    FillTail<kT, kSX, kST>(x, t, i, n - i, xb, tb);
    StoreVec<kT>(d, Loss<kLogTarget>(d, LoadVec<kT>(d, xb), LoadVec<kT>(d, tb)), ob);
    std::memcpy(static_cast<void*>(out + i), ob, sizeof(S) * static_cast<size_t>(n - i));
  }
}

template <DType kT, bool kLogTarget>
void Pointwise(const void* x, int64_t sx, const void* t, int64_t st, int64_t n, void* out) {
  if (sx && st) return PointwiseRun<kT, kLogTarget, 1, 1>(x, t, n, out);
  if (sx) return PointwiseRun<kT, kLogTarget, 1, 0>(x, t, n, out);
  if (st) return PointwiseRun<kT, kLogTarget, 0, 1>(x, t, n, out);
  return PointwiseRun<kT, kLogTarget, 0, 0>(x, t, n, out);
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
  const auto loss_at = [&](int64_t at) {
    return Loss<kLogTarget>(d, kSX ? LoadVec<kT>(d, x + at) : xs,
                            kST ? LoadVec<kT>(d, t + at) : ts);
  };
  int64_t i = 0;
  // Eight vectors per step (simd_sum-inl.h): independent log/exp chains, added pairwise in float
  // and promoted to double once per step; a step whose float sum is not finite adds its eight
  // vectors in double instead.
  for (; i + 8 * lanes <= n; i += 8 * lanes) {
    const VF l0 = loss_at(i), l1 = loss_at(i + lanes), l2 = loss_at(i + 2 * lanes),
             l3 = loss_at(i + 3 * lanes), l4 = loss_at(i + 4 * lanes), l5 = loss_at(i + 5 * lanes),
             l6 = loss_at(i + 6 * lanes), l7 = loss_at(i + 7 * lanes);
    const VF partial = hn::Add(hn::Add(hn::Add(l0, l1), hn::Add(l2, l3)),
                               hn::Add(hn::Add(l4, l5), hn::Add(l6, l7)));
    if (HWY_LIKELY(hn::AllTrue(d, hn::IsFinite(partial)))) {
      accumulate(partial);
    } else {
      accumulate(l0), accumulate(l1), accumulate(l2), accumulate(l3);
      accumulate(l4), accumulate(l5), accumulate(l6), accumulate(l7);
    }
  }
  if (i + 4 * lanes <= n) {
    const VF l0 = loss_at(i), l1 = loss_at(i + lanes), l2 = loss_at(i + 2 * lanes),
             l3 = loss_at(i + 3 * lanes);
    const VF partial = hn::Add(hn::Add(l0, l1), hn::Add(l2, l3));
    if (HWY_LIKELY(hn::AllTrue(d, hn::IsFinite(partial)))) {
      accumulate(partial);
    } else {
      accumulate(l0), accumulate(l1), accumulate(l2), accumulate(l3);
    }
    i += 4 * lanes;
  }
  for (; i + lanes <= n; i += lanes) accumulate(loss_at(i));
  if (i < n) {
    HWY_ALIGN S xb[kMaxLanes];
    HWY_ALIGN S tb[kMaxLanes];
    FillTail<kT, kSX, kST>(x, t, i, n - i, xb, tb);
    accumulate(Loss<kLogTarget>(d, LoadVec<kT>(d, xb), LoadVec<kT>(d, tb)));
  }
  return hn::GetLane(hn::SumOfLanes(dd, hn::Add(acc_lo, acc_hi)));
}

template <DType kT, bool kLogTarget>
double Sum(const void* x, int64_t sx, const void* t, int64_t st, int64_t n) {
  if (sx && st) return SumRun<kT, kLogTarget, 1, 1>(x, t, n);
  if (sx) return SumRun<kT, kLogTarget, 1, 0>(x, t, n);
  if (st) return SumRun<kT, kLogTarget, 0, 1>(x, t, n);
  return SumRun<kT, kLogTarget, 0, 0>(x, t, n);
}

#endif  // HWY_TARGET == HWY_SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_SVE_INL_H_
