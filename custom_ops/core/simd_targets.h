// simd_targets.h: the SIMD targets the vectorised loops of the core (simd_tables.cc and its
// -inl.h headers) are compiled for, set before Highway's headers; dispatch.cc picks one at load.
// AVX-512 (F/VL/DQ/BW), AVX2 (+BMI2/FMA/F16C) and the static baseline, for which we compile
// nothing (the portable loops in scalar_kernels.cc and row_kl.cc's float64 path serve it). On
// aarch64 the static target, NEON; SVE is simd_tables_sve.cc's static target (compiled with SVE).
// Highway's SSE4 target emulates float16 conversion without rounding or inf/NaN, so it is not
// used.
#ifndef KLDIV_CORE_SIMD_TARGETS_H_
#define KLDIV_CORE_SIMD_TARGETS_H_

#if defined(__x86_64__) || defined(_M_X64)
#define KLDIV_SIMD_X86 1
#else
#define KLDIV_SIMD_X86 0
#endif

#ifndef HWY_DISABLE_PCLMUL_AES
#define HWY_DISABLE_PCLMUL_AES  // not used; keeps the dispatch check to the features we need
#endif
#if !defined(HWY_TARGETS) && KLDIV_SIMD_X86
#define HWY_TARGETS (HWY_AVX3 | HWY_AVX2 | HWY_STATIC_TARGET)
#elif !defined(HWY_TARGETS)
#define HWY_TARGETS HWY_STATIC_TARGET
#endif

#endif  // KLDIV_CORE_SIMD_TARGETS_H_
