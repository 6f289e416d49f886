// test_main.cc: unit tests of the numeric core (no onnxruntime). Every supported SIMD target is
// checked against a long-double reference; prints "N passed, M failed", exits non-zero on failure.
#include <cstdio>
#include <string>

#include "harness.h"

namespace kldiv_test {

// Target selection: CapTarget takes the best supported target at or below the cap and refuses
// unknown names, naming them and the known ones.
void TestTargets() {
  const auto supported = kldiv::SupportedTargets();
  Check(!supported.empty() && supported.back() == "scalar", "scalar is always supported");
  Check(kldiv::CapTarget("scalar").empty() && std::string(kldiv::ActiveTarget()) == "scalar",
        "cap scalar");
  Check(kldiv::CapTarget("avx3").empty() && kldiv::ActiveTarget() == supported.front(),
        "cap avx3 gives the best supported");
  Check(kldiv::CapTarget("avx2").empty() &&
            std::string(kldiv::ActiveTarget()) == (supported.size() > 1 ? "avx2" : "scalar"),
        "cap avx2");
  const std::string e = kldiv::CapTarget("sse9");
  Check(e == "'sse9' is not one of avx3, avx2, scalar", "unknown target message: " + e);
  Check(kldiv::SetTarget(supported.front()), "reset target");
}

}  // namespace kldiv_test

int main() {
  using namespace kldiv_test;
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  TestConversions();
  TestPlan();
  TestStaticCheck();
  TestTargets();
  const auto targets = kldiv::SupportedTargets();
  std::printf("targets: ");
  for (const auto& t : targets) std::printf("%s ", t.c_str());
  std::printf("(default %s)\n", kldiv::ActiveTarget());
  for (const auto& target : targets) {
    Check(kldiv::SetTarget(target), "select target " + target);
    TestMatrix(target);
    TestSpecials(target);
    TestUlps(target);
    TestThreadIndependence(target);
    TestRowKL(target);
    if (target != "scalar") TestAccuracy(target);
  }
  kldiv::SetTarget(targets.front());
  TestHugeBroadcast(targets.front());
  TestThreadPool();
  TestThreadPoolFork();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
