// test_main.cc: unit tests of the numeric core (no onnxruntime). Every supported SIMD target is
// checked against a long-double reference; prints "N passed, M failed", exits non-zero on failure.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "harness.h"

namespace kldiv_test {

// Target selection: CapTarget takes the best supported target at or below the cap and refuses
// unknown names, naming them and the known ones.
// KLDIV_TEST_EXPECT_TARGET (scripts/aarch64_tests.sh: sve under QEMU's -cpu max, neon under a
// Cortex-A72) names the target the dispatch must have chosen on this CPU.
void TestTargets() {
  const auto supported = kldiv::SupportedTargets();
  const auto known = kldiv::KnownTargets();  // x86-64: avx3, avx2, scalar; aarch64: sve, neon,
                                             // scalar
  if (const char* want = std::getenv("KLDIV_TEST_EXPECT_TARGET")) {
    Check(std::string(kldiv::ActiveTarget()) == want,
          std::string("dispatch chose ") + kldiv::ActiveTarget() + ", expected " + want);
  }
  Check(!supported.empty() && supported.back() == "scalar", "scalar is always supported");
  Check(known.size() >= 2 && known.back() == "scalar", "scalar is the last known target");
  Check(kldiv::CapTarget("scalar").empty() && std::string(kldiv::ActiveTarget()) == "scalar",
        "cap scalar");
  Check(kldiv::CapTarget(known.front()).empty() && kldiv::ActiveTarget() == supported.front(),
        "cap " + known.front() + " gives the best supported");
  // The second-best known target (avx2 on x86-64, neon on aarch64): active if supported, else
  // the next below.
  std::string below = "scalar";
  for (std::size_t i = 1; i < known.size() && below == "scalar"; ++i) {
    for (const auto& s : supported) {
      if (s == known[i]) below = s;
    }
  }
  Check(kldiv::CapTarget(known[1]).empty() && std::string(kldiv::ActiveTarget()) == below,
        "cap " + known[1]);
  std::string names;
  for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
  const std::string e = kldiv::CapTarget("sse9");
  Check(e == "'sse9' is not one of " + names, "unknown target message: " + e);
#if defined(__x86_64__)
  Check(names == "avx3, avx2, scalar", "x86-64 targets: " + names);
#elif defined(__aarch64__)
  Check(names == "sve, neon, scalar", "aarch64 targets: " + names);
  Check(supported.front() == "sve" || supported.front() == "neon",
        "every aarch64 CPU has NEON (ASIMD)");
  Check(kldiv::CapTarget("neon").empty() && std::string(kldiv::ActiveTarget()) == "neon",
        "cap neon runs NEON on any aarch64 CPU");
#endif
  Check(kldiv::SetTarget(supported.front()), "reset target");
}

}  // namespace kldiv_test

int main() {
  using namespace kldiv_test;
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  // Under emulation (scripts/aarch64_tests.sh sets KLDIV_TEST_EMULATED), the two tests that
  // stream 2**24 and 2**31 elements per target are left out: they would take most of an hour
  // in QEMU. Native runs always run them.
  const bool emulated = std::getenv("KLDIV_TEST_EMULATED") != nullptr;
  if (emulated) std::printf("emulated: 2**24-element sums and the 2**31 broadcast left out\n");
  TestConversions();
  TestPlan();
  TestStaticCheck();
  TestTargets();
  const auto targets = kldiv::SupportedTargets();
  std::printf("targets: ");
  for (const auto& t : targets) std::printf("%s ", t.c_str());
  std::printf("(default %s)\n", kldiv::ActiveTarget());
  // KLDIV_TEST_TARGETS (space-separated; unset or empty: every supported target) limits the
  // targets the suite below runs for: scripts/aarch64_tests.sh runs the SVE CPUs' suite for sve
  // alone (their NEON and scalar loops are the Cortex-A72 run's).
  const char* only = std::getenv("KLDIV_TEST_TARGETS");
  const std::string only_list = only ? " " + std::string(only) + " " : "";
  int suites = 0;
  for (const auto& target : targets) {
    if (only_list.find_first_not_of(' ') != std::string::npos &&
        only_list.find(" " + target + " ") == std::string::npos) {
      continue;
    }
    ++suites;
    std::printf("suite: %s\n", target.c_str());
    Check(kldiv::SetTarget(target), "select target " + target);
    TestMatrix(target);
    TestSpecials(target);
    TestUlps(target);
    TestThreadIndependence(target);
    TestNaNSum(target);
    TestRowKL(target);
    if (target != "scalar" && !emulated) TestAccuracy(target);
  }
  Check(suites > 0, "KLDIV_TEST_TARGETS names a supported target");
  TestSveMatchesNeon();
  kldiv::SetTarget(targets.front());
  if (!emulated) TestHugeBroadcast(targets.front());
  TestThreadPool();
  TestThreadPoolFork();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
