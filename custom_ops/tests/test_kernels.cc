// test_kernels.cc: every target's loops against the long-double reference: a matrix of shapes
// (broadcasts, tails, empty) x reductions x log_target x dtypes, and the special values.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "harness.h"

namespace kldiv_test {

void TestMatrix(const std::string& target) {
  struct Shapes {
    std::vector<int64_t> x, t;
  };
  const std::vector<Shapes> cases = {
      {{}, {}},
      {{1}, {}},
      {{}, {37}},
      {{37}, {}},
      {{1000}, {1000}},
      {{3, 5}, {3, 5}},
      {{4, 300}, {300}},                   // leading broadcast of t
      {{300}, {4, 300}},                   // leading broadcast of x
      {{70, 3}, {70, 1}},                  // trailing broadcast, short rows (gather path)
      {{6, 200}, {6, 1}},                  // trailing broadcast, long rows
      {{4, 1, 90}, {4, 3, 90}},            // middle broadcast
      {{5, 1}, {1, 129}},                  // outer product
      {{2, 3, 1, 5, 2}, {1, 3, 4, 1, 2}},  // rank 5, mixed
      {{0}, {0}},
      {{3, 0}, {1}},
      {{0, 4}, {4}},
      {{40000}, {40000}},        // several tasks
      {{3, 17, 1023}, {17, 1}},  // odd sizes, tails
  };
  int seed = 1;
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (bool lt : {false, true}) {
      for (const auto& c : cases) {
        ++seed;
        const auto xv = Random(Count(c.x), -4.0f, 1.0f, static_cast<uint32_t>(seed));
        const auto tv = lt ? Random(Count(c.t), -5.0f, 2.0f, static_cast<uint32_t>(seed + 1000))
                           : Random(Count(c.t), 0.0f, 1.0f, static_cast<uint32_t>(seed + 1000));
        CheckCase(target, MakeTensor(dtype, c.x, xv), MakeTensor(dtype, c.t, tv), lt);
      }
    }
  }
}

void TestSpecials(const std::string& target) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  // t == 0 (and -0) gives 0 whatever x; t < 0 and NaN t give NaN; t = inf as IEEE.
  const std::vector<float> x = {-kInf, kNaN, 1.0f, kInf,  0.0f, 2.0f, 1.0f, -kInf, kInf,
                                3.0f,  0.5f, 1.0f, -1.0f, 5.0f, 0.0f, 1.0f, -3.0f};
  const std::vector<float> t = {0.0f,   -0.0f, -1.0f,  0.0f,  kNaN,  kInf, tiny, 1.0f,  kInf,
                                1e-40f, 1e30f, 1e-30f, 3e38f, 0.25f, 1.0f, 2.0f, 1e-20f};
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (bool lt : {false, true}) {
      const Tensor xt = MakeTensor(dtype, {static_cast<int64_t>(x.size())}, x);
      const Tensor tt = MakeTensor(dtype, {static_cast<int64_t>(t.size())}, t);
      CheckCase(target, xt, tt, lt);
      // and broadcast: a scalar target / input against the vector
      for (size_t i = 0; i < t.size(); ++i) {
        CheckCase(target, xt, MakeTensor(dtype, {}, {t[i]}), lt);
        CheckCase(target, MakeTensor(dtype, {}, {x[i]}), tt, lt);
      }
    }
  }
  // Explicit values, float32.
  auto one = [&](float xv, float tv, bool lt) {
    const auto out = Run(MakeTensor(DType::kFloat32, {}, {xv}),
                         MakeTensor(DType::kFloat32, {}, {tv}), Reduction::kNone, lt, kSerial);
    return ReadOut(DType::kFloat32, out, 0);
  };
  Check(one(-kInf, 0.0f, false) == 0.0f && one(kNaN, 0.0f, false) == 0.0f,
        target + " t == 0 gives 0 for x = -inf and NaN");
  Check(std::isnan(one(1.0f, -1.0f, false)) && std::isnan(one(1.0f, kNaN, false)),
        target + " t < 0 and t NaN give NaN");
  Check(one(1.0f, kInf, false) == kInf && std::isnan(one(kInf, kInf, false)),
        target + " t = inf gives inf (NaN for x = inf)");
  Check(std::isnan(one(1.0f, -kInf, true)), target + " log_target t = -inf gives NaN");
  Check(one(0.0f, 0.0f, true) == 0.0f && one(0.0f, 100.0f, true) == kInf,
        target + " log_target exp overflow");
  // One special target among ordinary ones, at every position of a few vector groups: the
  // loops check a group of vectors at once and send it down a careful path when any lane needs
  // a fix-up (zeros stay on the fast one); x is inf or NaN where t is 0 or -0.
  const float specials[] = {0.0f, -0.0f,           tiny,         1e-39f, -1.0f, kInf,
                            kNaN, 1.17549435e-38f, 3.4028235e38f};
  for (float special : specials) {
    for (int64_t pos = 0; pos < 80; ++pos) {
      std::vector<float> xs(80, -1.1f), ts(80, 0.37f);
      ts[static_cast<size_t>(pos)] = special;
      if (special == 0.0f) xs[static_cast<size_t>(pos)] = pos % 2 ? kNaN : -kInf;
      if (special == kInf) xs[static_cast<size_t>(pos)] = pos % 2 ? 100.0f : kInf;
      CheckCase(target, MakeTensor(DType::kFloat32, {80}, xs),
                MakeTensor(DType::kFloat32, {80}, ts), false);
    }
  }
  // Subnormal targets (log over the whole float range) against libm, pointwise.
  std::vector<float> ts, xs;
  for (float v = tiny; v < 1e38f; v = std::max(v * 1.37f, std::nextafter(v, kInf))) {
    ts.push_back(v);
    xs.push_back(0.5f);
  }
  CheckCase(target, MakeTensor(DType::kFloat32, {static_cast<int64_t>(xs.size())}, xs),
            MakeTensor(DType::kFloat32, {static_cast<int64_t>(ts.size())}, ts), false);
  std::vector<float> lts;
  for (float v = -110.0f; v < 89.0f; v += 0.173f) lts.push_back(v);
  CheckCase(target, MakeTensor(DType::kFloat32, {}, {0.25f}),
            MakeTensor(DType::kFloat32, {static_cast<int64_t>(lts.size())}, lts), true);
}

// Elementwise accuracy where the loss is well conditioned: t * (log t - x) for x = 0 (the
// log's own accuracy) and x = -200 (log t - x >= 96: no cancellation), over a sweep of float32
// targets from the smallest subnormal to FLT_MAX: within 2 ulps of the long-double value rounded to
// float32.
void TestUlps(const std::string& target) {
  std::vector<float> ts;
  for (uint32_t bits = 1; bits < 0x7F800000u; bits += 997) {
    float v;
    std::memcpy(&v, &bits, sizeof(v));
    ts.push_back(v);
  }
  for (float x : {0.0f, -200.0f}) {
    const auto out = Run(MakeTensor(DType::kFloat32, {}, {x}),
                         MakeTensor(DType::kFloat32, {static_cast<int64_t>(ts.size())}, ts),
                         Reduction::kNone, false, kSerial);
    double worst = 0;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const long double exact = ts[i] * (std::log(static_cast<long double>(ts[i])) - x);
      const float want = static_cast<float>(exact);
      if (std::isinf(want)) continue;  // overflowed in the exact value too
      const float ulp = std::nextafter(std::fabs(want), kInf) - std::fabs(want);
      const float got = ReadOut(DType::kFloat32, out, static_cast<int64_t>(i));
      worst = std::max(worst, static_cast<double>(std::fabs(got - exact) / ulp));
    }
    std::printf("  %s t * (log t - %g): worst %.2f ulp\n", target.c_str(), x, worst);
    Check(worst <= 2.0,
          target + " elementwise within 2 ulps of the exact loss, x = " + std::to_string(x));
  }
}

}  // namespace kldiv_test
