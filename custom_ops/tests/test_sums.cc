// test_sums.cc: the reductions' guarantees: bitwise identical for any thread count, a NaN sum
// is the one quiet NaN, float32 sums of 2**24 elements within 2e-6 of float64, and 64-bit
// indexing past 2**31 elements.
#include <cmath>
#include <cstdio>
#include <limits>

#include "harness.h"

namespace kldiv_test {

void TestThreadIndependence(const std::string& target) {
  const int64_t n = (1 << 20) + 12345;
  const auto xv = Random(n, -6.0f, 0.0f, 11);
  const auto tv = Random(n, 0.0f, 1.0f, 12);
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (bool lt : {false, true}) {
      const Tensor x = MakeTensor(dtype, {n}, xv);
      const Tensor t = MakeTensor(dtype, {n}, tv);
      const Tensor tb = MakeTensor(dtype, {1024, 1}, Random(1024, 0.0f, 1.0f, 13));
      const Tensor xb = MakeTensor(dtype, {1024, 1025}, Random(1024 * 1025, -3.0f, 0.0f, 14));
      for (Reduction r : {Reduction::kSum, Reduction::kNone}) {
        const auto serial = Run(x, t, r, lt, kSerial);
        const auto serial_b = Run(xb, tb, r, lt, kSerial);
        bool same = true;
        for (int threads : {1, 2, 3, 7}) {
          same = same && Run(x, t, r, lt, Threads(threads, threads == 3)) == serial;
          same = same && Run(xb, tb, r, lt, Threads(threads, threads == 7)) == serial_b;
        }
        Check(same, target + " bitwise identical for 1, 2, 3, 7 threads " +
                        kldiv::DTypeName(dtype) + " " + kldiv::ReductionName(r));
      }
    }
  }
}

void TestNaNSum(const std::string& target) {
  // Only negative NaNs in the input: x86 passes them on, so a sum that just added them up
  // would be negative; the reductions return the positive quiet NaN, whatever the compiler
  // made of the order of the additions.
  const int64_t n = 1000;
  auto xv = Random(n, -6.0f, 0.0f, 41);
  xv[333] = -std::numeric_limits<float>::quiet_NaN();
  const auto tv = Random(n, 0.1f, 1.0f, 42);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Tensor x = MakeTensor(dtype, {n}, xv);
    const Tensor t = MakeTensor(dtype, {n}, tv);
    for (bool lt : {false, true}) {
      for (Reduction r : {Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
        const float got = ReadOut(dtype, Run(x, t, r, lt, kSerial), 0);
        Check(std::isnan(got) && !std::signbit(got), target + " NaN " + kldiv::ReductionName(r) +
                                                         " is +NaN, " + kldiv::DTypeName(dtype) +
                                                         (lt ? " log_target" : ""));
      }
    }
  }
}

void TestAccuracy(const std::string& target) {
  // float32 sum over 2**24 elements within 2e-6 relative of float64 (the 'sum' of a
  // log_softmax/softmax-like pair, positive and negative terms).
  const int64_t n = 1 << 24;
  auto xv = Random(n, -20.0f, 0.0f, 21);
  auto tv = Random(n, 0.0f, 1.0f, 22);
  for (bool lt : {false, true}) {
    if (lt) {
      for (auto& v : tv) v = std::log(v + 1e-6f);
    }
    Problem p;
    p.dtype = DType::kFloat32;
    p.reduction = Reduction::kSum;
    p.log_target = lt;
    p.x = xv.data();
    p.t = tv.data();
    p.x_shape = {n};
    p.t_shape = {n};
    BroadcastPlan plan;
    kldiv::MakeBroadcastPlan(p.x_shape, p.t_shape, &plan);
    const double got = kldiv::ComputeSum(p, plan, Threads(2));
    double want = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double x = xv[static_cast<size_t>(i)], t = tv[static_cast<size_t>(i)];
      want += lt ? std::exp(t) * (t - x) : (t == 0 ? 0.0 : t * (std::log(t) - x));
    }
    const double rel = std::fabs(got - want) / std::fabs(want);
    std::printf("  %s 2**24 sum%s: relative error %.3g\n", target.c_str(), lt ? " log_target" : "",
                rel);
    Check(rel < 2e-6, target + " 2**24-element float32 sum within 2e-6 of float64");
  }
}

void TestHugeBroadcast(const std::string& target) {
  // (N, 1) x (1, M) with N * M > 2**31: 64-bit indexing. Closed form:
  // sum_ij t_j (log t_j - x_i) = N sum_j t_j log t_j - (sum_i x_i)(sum_j t_j).
  const int64_t N = 65537, M = 32771;  // 2.15e9 elements
  const auto xv = Random(N, -3.0f, -1.0f, 31);
  const auto tv = Random(M, 0.1f, 1.0f, 32);
  const Tensor x = MakeTensor(DType::kFloat32, {N, 1}, xv);
  const Tensor t = MakeTensor(DType::kFloat32, {1, M}, tv);
  long double sx = 0, st = 0, stl = 0;
  for (float v : xv) sx += v;
  for (float v : tv) {
    st += v;
    stl += static_cast<long double>(v) * std::log(static_cast<long double>(v));
  }
  const long double want = N * stl - sx * st;
  const auto out = Run(x, t, Reduction::kMean, false, Threads(2));
  const long double want_mean = want / (static_cast<long double>(N) * M);
  const float got = ReadOut(DType::kFloat32, out, 0);
  std::printf("  %s (65537,1)x(1,32771) mean: got %.9g want %.9Lg\n", target.c_str(), got,
              want_mean);
  Check(std::fabs(got - want_mean) <= 1e-5L * std::fabs(want_mean),
        target + " > 2**31-element broadcast mean");
}

}  // namespace kldiv_test
