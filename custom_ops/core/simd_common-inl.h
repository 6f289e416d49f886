// simd_common-inl.h: the names every vectorised loop of the core uses (the float vector type of
// the target being compiled and the widest target's lane count), for the AVX-512 and AVX2
// targets of simd_targets.h and, on aarch64, NEON and SVE (simd_tables_sve.cc).

// Per-target include guard: foreach_target includes the file once per target (Highway's
// -inl.h convention: the guard's state toggles with HWY_TARGET_TOGGLE).
#if defined(KLDIV_CORE_SIMD_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KLDIV_CORE_SIMD_COMMON_INL_H_
#undef KLDIV_CORE_SIMD_COMMON_INL_H_
#else
#define KLDIV_CORE_SIMD_COMMON_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kldiv {
namespace HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON || \
    HWY_TARGET == HWY_SVE

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<hn::RebindToSigned<DF>>;
#if HWY_TARGET == HWY_SVE
// SVE's vector length is known only at run time: up to 2048 bits (HWY_MAX_BYTES), 64 floats.
constexpr int kMaxLanes = 64;
#else
constexpr int kMaxLanes = 16;  // float lanes of the widest fixed-width target (AVX-512)
#endif

#endif  // HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_NEON ||
        // HWY_TARGET == HWY_SVE

}  // namespace HWY_NAMESPACE
}  // namespace kldiv
HWY_AFTER_NAMESPACE();

#endif  // KLDIV_CORE_SIMD_COMMON_INL_H_
