// cpu_features.h: what the CPU running us can execute, asked of the CPU and the kernel directly
// (cpuid/xgetbv on x86-64, the auxiliary vector's hwcaps on aarch64), not through the compiler's
// runtime: built with zig (clang and its compiler-rt, for an older glibc),
// __builtin_cpu_supports("avx2") answered false on an AVX-512 CPU, and Highway 1.0's own
// detection (libhwy) is not linked. dispatch.cc picks the loops from this.
#ifndef KLDIV_CORE_CPU_FEATURES_H_
#define KLDIV_CORE_CPU_FEATURES_H_

namespace kldiv {
namespace detail {

struct CpuFeatures {
  bool avx2 = false;  // AVX2, FMA, BMI1/2, F16C, with the OS saving the AVX state
  bool avx3 = false;  // avx2, AVX-512 F/VL/DQ/BW, with the OS saving the AVX-512 state
  bool neon = false;  // aarch64 Advanced SIMD (ASIMD)
  bool sve = false;   // aarch64 SVE
};

// Read once (thread-safe static) and cached.
const CpuFeatures& Cpu();

}  // namespace detail
}  // namespace kldiv

#endif  // KLDIV_CORE_CPU_FEATURES_H_
