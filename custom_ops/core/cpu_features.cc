// cpu_features.cc: see cpu_features.h. Bit positions: Intel SDM vol. 2A (CPUID leaves 1 and 7,
// XGETBV) and Linux's arch/arm64 uapi hwcap.h.
#include "cpu_features.h"

#if defined(__x86_64__)
#include <cpuid.h>

#include <cstdint>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace kldiv {
namespace detail {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
             f16c = c & (1u << 29);
  if (!(osxsave && avx)) return f;
  uint32_t xcr0_lo = 0, xcr0_hi = 0;  // XGETBV(0): the register state the OS saves
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6u) != 0x6u) return f;  // XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool bmi1 = b & (1u << 3), avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31);
  f.avx2 = avx2 && fma && bmi1 && bmi2 && f16c;
  const bool zmm_state = (xcr0_lo & 0xE0u) == 0xE0u;  // opmask, ZMM0-15 upper, ZMM16-31
  f.avx3 = f.avx2 && zmm_state && avx512f && avx512vl && avx512dq && avx512bw;
#elif defined(__aarch64__) && defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.neon = hwcap & (1ul << 1);  // HWCAP_ASIMD
  f.sve = hwcap & (1ul << 22);  // HWCAP_SVE
#endif
  return f;
}

}  // namespace

const CpuFeatures& Cpu() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace detail
}  // namespace kldiv
