// simd_io-inl.h: loads and stores of the loss loops' three dtypes as float vectors (float16
// and bfloat16 widened exactly, narrowed with round to nearest even), and the zero-padded
// tail of a run.

#include <cstdint>
#include <cstring>

// Per-target include guard (see simd_common-inl.h).
#if defined(KLDIV_CORE_SIMD_IO_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_IO_INL_H_
#undef KLDIV_CORE_SIMD_IO_INL_H_
#else
#define KLDIV_CORE_SIMD_IO_INL_H_
#endif

#include "hwy/highway.h"
#include "kldiv_core.h"
#include "simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || \
    HWY_TARGET == HWY_SVE

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
#if HWY_TARGET == HWY_AVX2 && HWY_COMPILER_CLANG
    // An empty asm hides the widening from clang, which otherwise narrows the loss's compares
    // with constants exact in float16 (t < -104, the zero masks) to compares of the halves
    // and widens their masks back with packs: 6 instructions more per vector on AVX2 (no
    // mask registers). No instruction is emitted for it.
    VF v = hn::PromoteTo(d, hn::LoadU(dh, p));
    asm("" : "+x"(v.raw));
    return v;
#else
    return hn::PromoteTo(d, hn::LoadU(dh, p));
#endif
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
#if HWY_TARGET == HWY_AVX2 && HWY_COMPILER_CLANG
    // Converted in a register, then stored: clang's vcvtps2ph to memory made the float16
    // log_target loop 4% slower here (AMD EPYC).
    auto h = hn::DemoteTo(dh, v);
    asm("" : "+x"(h.raw));
    hn::StoreU(h, dh, p);
#else
    hn::StoreU(hn::DemoteTo(dh, v), dh, p);
#endif
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

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON ||
        // HWY_TARGET == HWY_SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_IO_INL_H_
