// simd_pointwise-inl.h: the loss loop without reduction (kldiv_kernels.h's PointwiseFn): one
// run of elements, each operand either read in order or broadcast.

#include <cstdint>
#include <cstring>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_POINTWISE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_POINTWISE_INL_H_
#undef KLDIV_CORE_SIMD_POINTWISE_INL_H_
#else
#define KLDIV_CORE_SIMD_POINTWISE_INL_H_
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

#else

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
  // log_target on AVX2 (16 vector registers): one vector at a time, in the loop below. With four
  // per step clang (the wheels' compiler) kept the four loaded vectors and the four losses in
  // memory until the stores and ran 3-12% slower than GCC; GCC is as fast either way.
  constexpr bool kOneAtATime = HWY_TARGET == HWY_AVX2 && kLogTarget;
  for (; !kOneAtATime && i + 4 * lanes <= n; i += 4 * lanes) {  // four independent chains per step
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

#endif  // HWY_TARGET == HWY_SVE

template <DType kT, bool kLogTarget>
void Pointwise(const void* x, int64_t sx, const void* t, int64_t st, int64_t n, void* out) {
  if (sx && st) return PointwiseRun<kT, kLogTarget, 1, 1>(x, t, n, out);
  if (sx) return PointwiseRun<kT, kLogTarget, 1, 0>(x, t, n, out);
  if (st) return PointwiseRun<kT, kLogTarget, 0, 1>(x, t, n, out);
  return PointwiseRun<kT, kLogTarget, 0, 0>(x, t, n, out);
}

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_POINTWISE_INL_H_
