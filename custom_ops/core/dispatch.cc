// dispatch.cc: which loops run. The best target the CPU supports is active from the start;
// CapTarget (called by the ORT layer with the KLDIV_ONNX_ISA value it read) and SetTarget (tests)
// change it. The core reads no environment.
#include <atomic>

#include "cpu_features.h"
#include "kldiv_core.h"
#include "kldiv_kernels.h"

namespace kldiv {
namespace {

// Every target this build knows, best first (whether or not this CPU supports it).
#if defined(__aarch64__)
constexpr const char* kKnownTargets[] = {"sve", "neon", "scalar"};
#else
constexpr const char* kKnownTargets[] = {"avx3", "avx2", "scalar"};
#endif

// The CPU is asked directly (cpu_features.cc), not through __builtin_cpu_supports, which a
// zig-built library answered with "no AVX2" on an AVX-512 machine.
std::vector<const detail::Kernels*> SupportedKernels() {
  const detail::CpuFeatures& cpu = detail::Cpu();
  std::vector<const detail::Kernels*> result;
  // SveKernels is compiled for SVE (simd_tables_sve.cc): the CPU is asked first.
  if (cpu.sve && detail::SveKernels()) result.push_back(detail::SveKernels());
  if (detail::Avx3Kernels() && cpu.avx3) result.push_back(detail::Avx3Kernels());
  if (detail::Avx2Kernels() && cpu.avx2) result.push_back(detail::Avx2Kernels());
  if (detail::NeonKernels() && cpu.neon) result.push_back(detail::NeonKernels());
  result.push_back(detail::ScalarKernels());
  return result;
}

std::atomic<const detail::Kernels*>& ActiveSlot() {
  static std::atomic<const detail::Kernels*> active{SupportedKernels().front()};
  return active;
}

}  // namespace

namespace detail {
const Kernels* ActiveKernels() { return ActiveSlot().load(std::memory_order_acquire); }
}  // namespace detail

std::vector<std::string> KnownTargets() {
  return std::vector<std::string>(std::begin(kKnownTargets), std::end(kKnownTargets));
}

std::vector<std::string> SupportedTargets() {
  std::vector<std::string> names;
  for (const auto* k : SupportedKernels()) names.emplace_back(k->name);
  return names;
}

const char* ActiveTarget() { return detail::ActiveKernels()->name; }

bool SetTarget(const std::string& name) {
  for (const auto* k : SupportedKernels()) {
    if (name == k->name) {
      ActiveSlot().store(k, std::memory_order_release);
      return true;
    }
  }
  return false;
}

std::string CapTarget(const std::string& cap) {
  std::size_t rank = 0;
  while (rank < std::size(kKnownTargets) && cap != kKnownTargets[rank]) ++rank;
  if (rank == std::size(kKnownTargets)) {
    std::string allowed;
    for (const char* name : kKnownTargets)
      allowed += std::string(allowed.empty() ? "" : ", ") + name;
    return "'" + cap + "' is not one of " + allowed;
  }
  // The best supported target at or below the cap (scalar is always supported).
  for (const auto* k : SupportedKernels()) {
    std::size_t k_rank = 0;
    while (k_rank < std::size(kKnownTargets) && std::string(k->name) != kKnownTargets[k_rank]) {
      ++k_rank;
    }
    if (k_rank >= rank) {
      ActiveSlot().store(k, std::memory_order_release);
      return "";
    }
  }
  return "";  // unreachable: the scalar target is always supported
}

}  // namespace kldiv
