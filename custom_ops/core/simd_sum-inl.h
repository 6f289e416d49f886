// simd_sum-inl.h: the loss loop of the reductions (kldiv_kernels.h's SumFn): one run's losses
// summed in float per step and accumulated in double.

#include <cstdint>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_SUM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_SUM_INL_H_
#undef KLDIV_CORE_SIMD_SUM_INL_H_
#else
#define KLDIV_CORE_SIMD_SUM_INL_H_
#endif

#include "hwy/highway.h"
#include "kldiv_core.h"
#include "simd_common-inl.h"
#include "simd_io-inl.h"
#include "simd_loss-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || \
    HWY_TARGET == HWY_SVE

#if HWY_TARGET == HWY_SVE
// SVE's vector types are sizeless: no arrays of them, so this loop keeps named vectors
// where the one below keeps arrays, in the same order of operations.
// A sum takes NEON's steps, so at SVE's 128-bit vector length it gives NEON's result to the
// bit.
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

#else

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

// The losses of four vectors for the sum loop: Losses4, except on AVX-512 without log_target,
// where the log runs two chains at a time (LogLosses<2> twice: the same arithmetic per element).
// With four chains at a time in the sum loop clang (the wheels' compiler) ran out of vector
// registers (values spilled, the log's tables reloaded every step) and the float32 sum took 10%
// longer than GCC's code (docs/wheels.md); GCC's code is as fast either way.
template <bool kLogTarget>
HWY_INLINE void SumLosses4(DF d, const VF* x, const VF* t, VF* out) {
#if HWY_TARGET == HWY_AVX3
  if constexpr (!kLogTarget) {
    LogLosses<2>(d, x, t, out);
    LogLosses<2>(d, x + 2, t + 2, out + 2);
    return;
  }
#endif
  Losses4<kLogTarget>(d, x, t, out);
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
    // Each group's prefetches before its loads: clang put one block of 16 at the top of the
    // loop, which cost it 1% on the float32 sum; GCC spreads them either way.
    PrefetchAhead<S, kSX, kST>(x, t, i, 4 * lanes);
    load4(i, xk, tk);
    SumLosses4<kLogTarget>(d, xk, tk, l);
    PrefetchAhead<S, kSX, kST>(x, t, i + 4 * lanes, 4 * lanes);
    load4(i + 4 * lanes, xk, tk);
    SumLosses4<kLogTarget>(d, xk, tk, l + 4);
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

#endif  // HWY_TARGET == HWY_SVE

template <DType kT, bool kLogTarget>
double Sum(const void* x, int64_t sx, const void* t, int64_t st, int64_t n) {
  if (sx && st) return SumRun<kT, kLogTarget, 1, 1>(x, t, n);
  if (sx) return SumRun<kT, kLogTarget, 1, 0>(x, t, n);
  if (st) return SumRun<kT, kLogTarget, 0, 1>(x, t, n);
  return SumRun<kT, kLogTarget, 0, 0>(x, t, n);
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_SUM_INL_H_
