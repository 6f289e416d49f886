// harness.h: what the core's unit tests share (harness.cc). Tests print "FAIL: ..." and count;
// main (test_main.cc) prints "N passed, M failed" and exits non-zero on failure.
#ifndef KLDIV_TESTS_HARNESS_H_
#define KLDIV_TESTS_HARNESS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kldiv_core.h"

namespace kldiv_test {

using kldiv::BroadcastPlan;
using kldiv::DType;
using kldiv::Problem;
using kldiv::Reduction;

extern int g_passed;
extern int g_failed;
void Check(bool ok, const std::string& what);

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ----------------------------------------------------------------------------- typed buffers
struct Tensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<float> f32;      // used for float32
  std::vector<uint16_t> bits;  // used for float16 / bfloat16

  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  const void* data() const {
    return dtype == DType::kFloat32 ? static_cast<const void*>(f32.data())
                                    : static_cast<const void*>(bits.data());
  }
  float at(int64_t i) const {
    switch (dtype) {
      case DType::kFloat32:
        return f32[static_cast<size_t>(i)];
      case DType::kFloat16:
        return kldiv::HalfToFloat(bits[static_cast<size_t>(i)]);
      case DType::kBFloat16:
        return kldiv::BFloat16ToFloat(bits[static_cast<size_t>(i)]);
    }
    return 0;
  }
};

Tensor MakeTensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values);
int64_t Count(const std::vector<int64_t>& shape);
// n uniform values in [lo, hi), reproducible from the seed.
std::vector<float> Random(int64_t n, float lo, float hi, uint32_t seed);
// Element i of an output buffer of the dtype, as float.
float ReadOut(DType dtype, const std::vector<uint8_t>& out, int64_t i);

// ----------------------------------------------------------------------------- reference
// The loss in long double (a value beyond float32's range becomes +-inf, as in the kernel).
long double RefLoss(float x, float t, bool log_target);
// Magnitude of the terms of the loss: the scale of float32 rounding errors.
long double RefScale(float x, float t, bool log_target);
// Broadcast index of output element i into an operand of `shape` (right-aligned).
int64_t SourceIndex(const std::vector<int64_t>& out_shape, const std::vector<int64_t>& shape,
                    int64_t i);
// Whether `got` (of the dtype) is within the dtype's rounding of `want`.
bool Close(double got, long double want, long double scale, DType dtype);

// ----------------------------------------------------------------------------- runners
// std::thread workers taking task indices from a shared counter (in reverse order if asked).
kldiv::ParallelFor Threads(int threads, bool reverse = false);
extern const kldiv::ParallelFor kSerial;
// Plans and computes one case; the output buffer (one element for reductions).
std::vector<uint8_t> Run(const Tensor& x, const Tensor& t, Reduction reduction, bool log_target,
                         const kldiv::ParallelFor& pf, BroadcastPlan* plan_out = nullptr);
// Compares every reduction of one case (2 threads) with the reference.
void CheckCase(const std::string& target, const Tensor& x, const Tensor& t, bool log_target);

// ----------------------------------------------------------------------------- test groups
void TestConversions();                                  // test_conversions.cc
void TestPlan();                                         // test_broadcast.cc
void TestStaticCheck();                                  // test_broadcast.cc
void TestTargets();                                      // test_main.cc
void TestMatrix(const std::string& target);              // test_kernels.cc
void TestSpecials(const std::string& target);            // test_kernels.cc
void TestUlps(const std::string& target);                // test_kernels.cc
void TestThreadIndependence(const std::string& target);  // test_sums.cc
void TestNaNSum(const std::string& target);              // test_sums.cc
void TestAccuracy(const std::string& target);            // test_sums.cc
void TestHugeBroadcast(const std::string& target);       // test_sums.cc
void TestRowKL(const std::string& target);               // test_row_kl.cc
void TestSveMatchesNeon();                               // test_sve.cc
void TestThreadPool();                                   // test_thread_pool.cc
void TestThreadPoolFork();                               // test_thread_pool_fork.cc

}  // namespace kldiv_test

#endif  // KLDIV_TESTS_HARNESS_H_
