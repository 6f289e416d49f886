// test_sve.cc: on an aarch64 CPU with SVE, the SVE loops against NEON's: the same per-element
// loss (pointwise outputs identical to the bit at any vector length, tails of every length
// included) and, at the 128-bit vector length where both take the same steps, the same sums.
// The vector length is the kernel's (prctl), printed so that scripts/aarch64_tests.sh can
// check the one it asked QEMU for.
#include <cmath>
#include <cstdio>
#include <cstring>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/prctl.h>
#endif

#include "harness.h"

namespace kldiv_test {
namespace {

// The SVE vector length in bits, 0 where there is none (or no way to ask).
int SveVectorBits() {
#if defined(__aarch64__) && defined(__linux__) && defined(PR_SVE_GET_VL)
  const int r = prctl(PR_SVE_GET_VL, 0, 0, 0, 0);
  return r < 0 ? 0 : (r & PR_SVE_VL_LEN_MASK) * 8;
#else
  return 0;
#endif
}

// Equal bits, any NaN matching any NaN (NaN payloads are not part of the contract).
bool SameOutputs(DType dtype, const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return false;
  const int64_t width = dtype == DType::kFloat32 ? 4 : 2;
  for (int64_t i = 0; i < static_cast<int64_t>(a.size()) / width; ++i) {
    const float va = ReadOut(dtype, a, i), vb = ReadOut(dtype, b, i);
    if (std::isnan(va) && std::isnan(vb)) continue;
    if (std::memcmp(a.data() + i * width, b.data() + i * width, static_cast<size_t>(width)) != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

void TestSveMatchesNeon() {
  const auto supported = kldiv::SupportedTargets();
  bool has_sve = false;
  for (const auto& s : supported) has_sve = has_sve || s == "sve";
  if (!has_sve) return;
  const int bits = SveVectorBits();
  std::printf("sve vector length: %d bits\n", bits);
  Check(bits >= 128 && bits <= 2048 && bits % 128 == 0, "SVE vector length from prctl");
  Check(kldiv::SetTarget("neon"), "an SVE CPU runs the NEON loops too");
  // Ordinary values and the specials of TestSpecials, at lengths around every tail of 4 to 64
  // lanes, each operand read in order or broadcast.
  std::vector<float> special = {0.0f, -0.0f, -1.0f, kNaN, kInf, 1e-40f, 1e30f, 3e38f, 1e-20f};
  int seed = 500;
  for (int64_t n : {1, 3, 4, 7, 17, 31, 63, 64, 65, 129, 255, 1000, 4099}) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (bool lt : {false, true}) {
        ++seed;
        auto xv = Random(n, -4.0f, 1.0f, static_cast<uint32_t>(seed));
        auto tv = lt ? Random(n, -5.0f, 2.0f, static_cast<uint32_t>(seed + 1000))
                     : Random(n, 0.0f, 1.0f, static_cast<uint32_t>(seed + 1000));
        for (size_t k = 0; k < special.size() && 5 * k < tv.size(); ++k) tv[5 * k] = special[k];
        const Tensor x = MakeTensor(dtype, {n}, xv);
        const Tensor t = MakeTensor(dtype, {n}, tv);
        const Tensor x1 = MakeTensor(dtype, {1}, {xv[0]});
        const Tensor t1 = MakeTensor(dtype, {1}, {tv[n / 2]});
        const std::vector<std::pair<const Tensor*, const Tensor*>> pairs = {
            {&x, &t}, {&x1, &t}, {&x, &t1}};
        for (const auto& [xp, tp] : pairs) {
          for (Reduction r : {Reduction::kNone, Reduction::kSum}) {
            if (r == Reduction::kSum && bits != 128) continue;  // other step sizes than NEON
            kldiv::SetTarget("sve");
            const auto with_sve = Run(*xp, *tp, r, lt, kSerial);
            kldiv::SetTarget("neon");
            const auto with_neon = Run(*xp, *tp, r, lt, kSerial);
            Check(SameOutputs(dtype, with_sve, with_neon),
                  "sve == neon, " + std::to_string(bits) + "-bit vectors, n " + std::to_string(n) +
                      " " + kldiv::DTypeName(dtype) + " " + kldiv::ReductionName(r) +
                      (lt ? " log_target" : "") + (xp == &x1 ? " x broadcast" : "") +
                      (tp == &t1 ? " t broadcast" : ""));
          }
        }
      }
    }
  }
  kldiv::SetTarget(supported.front());
}

}  // namespace kldiv_test
