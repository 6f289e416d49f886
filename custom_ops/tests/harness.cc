// harness.cc: the test harness of the core's unit tests: typed buffers, the long-double
// reference, tolerances, thread runners, and CheckCase (every reduction of one case).
#include "harness.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

namespace kldiv_test {

int g_passed = 0;
int g_failed = 0;

const kldiv::ParallelFor kSerial = kldiv::SerialFor;

void Check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

Tensor MakeTensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (dtype == DType::kFloat32) {
    t.f32 = values;
  } else {
    for (float v : values) {
      t.bits.push_back(dtype == DType::kFloat16 ? kldiv::FloatToHalf(v)
                                                : kldiv::FloatToBFloat16(v));
    }
  }
  return t;
}

int64_t Count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> Random(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = dist(gen);
  return v;
}

float ReadOut(DType dtype, const std::vector<uint8_t>& out, int64_t i) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, out.data() + 4 * i, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, out.data() + 2 * i, 2);
  return dtype == DType::kFloat16 ? kldiv::HalfToFloat(b) : kldiv::BFloat16ToFloat(b);
}

// ----------------------------------------------------------------------------- reference

// The loss in long double, except that a value beyond float32's range becomes +-inf, as it
// does in the kernel's float32 arithmetic (exp(t) and the final product).
long double RefLoss(float x, float t, bool log_target) {
  const long double lx = x, lt = t;
  const long double kMax = 3.40282356779733661637e38L;  // FLT_MAX + half an ulp
  const auto f32 = [&](long double v) {
    return std::fabs(v) >= kMax ? std::copysign(std::numeric_limits<long double>::infinity(), v)
                                : v;
  };
  if (log_target) return f32(f32(std::exp(lt)) * (lt - lx));
  if (t == 0.0f) return 0.0L;
  return f32(lt * (std::log(lt) - lx));
}

// Magnitude of the terms of the loss: the scale of float32 rounding errors.
long double RefScale(float x, float t, bool log_target) {
  const long double lx = std::fabs(static_cast<long double>(x));
  const long double lt = std::fabs(static_cast<long double>(t));
  if (log_target) return std::exp(static_cast<long double>(t)) * (lt + lx);
  if (t == 0.0f) return 0.0L;
  return lt * (std::fabs(std::log(lt)) + lx);
}

// Broadcast index of output element i into an operand of `shape` (right-aligned).
int64_t SourceIndex(const std::vector<int64_t>& out_shape, const std::vector<int64_t>& shape,
                    int64_t i) {
  int64_t index = 0, stride = 1;
  const size_t off = out_shape.size() - shape.size();
  for (size_t jj = out_shape.size(); jj-- > 0;) {
    const int64_t c = i % out_shape[jj];
    i /= out_shape[jj];
    if (jj >= off) {
      const int64_t d = shape[jj - off];
      if (d != 1) index += c * stride;
      stride *= d;
    }
  }
  return index;
}

double Epsilon(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 6e-8;
    case DType::kFloat16:
      return 1.0 / 2048;
    case DType::kBFloat16:
      return 1.0 / 256;
  }
  return 0;
}

// Largest finite value of the dtype plus half an ulp: results beyond it round to inf.
long double Overflow(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 3.40282356779733661637e38L;
    case DType::kFloat16:
      return 65520.0L;
    case DType::kBFloat16:
      return 3.39617752923046005e38L;
  }
  return 0;
}

bool Close(double got, long double want, long double scale, DType dtype) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::fabs(want) >= Overflow(dtype) * (1 - 1e-5L) && std::isinf(got)) {
    return (got > 0) == (want > 0);
  }
  if (std::isinf(want) || std::isinf(got)) return static_cast<long double>(got) == want;
  const long double tol = Epsilon(dtype) * std::fabs(want) + 2e-6L * scale + 1e-30L +
                          (dtype == DType::kFloat16 ? 6e-8L : 0.0L);
  return std::fabs(static_cast<long double>(got) - want) <= tol;
}

// ----------------------------------------------------------------------------- runners

void ThreadFor(int threads, bool reverse, std::size_t n, void (*fn)(void*, std::size_t),
               void* data) {
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w) {
    pool.emplace_back([&] {
      for (std::size_t k; (k = next.fetch_add(1)) < n;) fn(data, reverse ? n - 1 - k : k);
    });
  }
  for (auto& th : pool) th.join();
}

kldiv::ParallelFor Threads(int threads, bool reverse) {
  return [threads, reverse](std::size_t n, void (*fn)(void*, std::size_t), void* data) {
    ThreadFor(threads, reverse, n, fn, data);
  };
}

std::vector<uint8_t> Run(const Tensor& x, const Tensor& t, Reduction reduction, bool log_target,
                         const kldiv::ParallelFor& pf, BroadcastPlan* plan_out) {
  Problem p;
  p.dtype = x.dtype;
  p.reduction = reduction;
  p.log_target = log_target;
  p.x = x.data();
  p.t = t.data();
  p.x_shape = x.shape;
  p.t_shape = t.shape;
  BroadcastPlan plan;
  const std::string err = kldiv::MakeBroadcastPlan(x.shape, t.shape, &plan);
  if (!err.empty()) {
    Check(false, "unexpected plan error: " + err);
    return {};
  }
  const int64_t n = reduction == Reduction::kNone ? plan.count : 1;
  std::vector<uint8_t> out(static_cast<size_t>(std::max<int64_t>(n, 1)) * kldiv::DTypeSize(x.dtype),
                           0xAB);
  kldiv::Compute(p, plan, out.data(), pf);
  if (plan_out) *plan_out = plan;
  return out;
}

std::string Describe(const std::string& target, DType dtype, const std::vector<int64_t>& xs,
                     const std::vector<int64_t>& ts, Reduction r, bool lt) {
  return target + " " + kldiv::DTypeName(dtype) + " x" + kldiv::ShapeToString(xs) + " t" +
         kldiv::ShapeToString(ts) + " " + kldiv::ReductionName(r) + (lt ? " log_target" : "");
}

// Compares every reduction of one case with the reference.
void CheckCase(const std::string& target, const Tensor& x, const Tensor& t, bool log_target) {
  std::vector<int64_t> out_shape;
  BroadcastPlan plan;
  Check(kldiv::MakeBroadcastPlan(x.shape, t.shape, &plan).empty(), "plan");
  out_shape = plan.out_shape;
  const int64_t n = plan.count;
  std::vector<long double> ref(static_cast<size_t>(n)), scale(static_cast<size_t>(n));
  long double total = 0, total_scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float xv = x.at(SourceIndex(out_shape, x.shape, i));
    const float tv = t.at(SourceIndex(out_shape, t.shape, i));
    ref[static_cast<size_t>(i)] = RefLoss(xv, tv, log_target);
    scale[static_cast<size_t>(i)] = RefScale(xv, tv, log_target);
    total += ref[static_cast<size_t>(i)];
    total_scale += scale[static_cast<size_t>(i)];
  }
  for (Reduction r : {Reduction::kNone, Reduction::kSum, Reduction::kMean, Reduction::kBatchMean}) {
    const std::string what = Describe(target, x.dtype, x.shape, t.shape, r, log_target);
    const auto out = Run(x, t, r, log_target, Threads(2));
    if (r == Reduction::kNone) {
      int bad = 0;
      for (int64_t i = 0; i < n && bad < 3; ++i) {
        const float got = ReadOut(x.dtype, out, i);
        if (!Close(got, ref[static_cast<size_t>(i)], scale[static_cast<size_t>(i)], x.dtype)) {
          ++bad;
          std::printf("  element %lld: got %.9g want %.9Lg\n", static_cast<long long>(i), got,
                      ref[static_cast<size_t>(i)]);
        }
      }
      Check(bad == 0, what);
      continue;
    }
    long double want = total;
    long double want_scale = total_scale;
    if (r == Reduction::kMean) {
      want /= static_cast<long double>(n);
      want_scale /= static_cast<long double>(n);
    } else if (r == Reduction::kBatchMean && !x.shape.empty()) {
      want /= static_cast<long double>(x.shape[0]);
      want_scale /= static_cast<long double>(x.shape[0]);
    }
    if (n == 0 && (r == Reduction::kMean ||
                   (r == Reduction::kBatchMean && !x.shape.empty() && x.shape[0] == 0))) {
      want = std::numeric_limits<long double>::quiet_NaN();
    }
    const float got = ReadOut(x.dtype, out, 0);
    if (!Close(got, want, want_scale, x.dtype)) {
      std::printf("  got %.9g want %.9Lg\n", got, want);
    }
    Check(Close(got, want, want_scale, x.dtype), what);
  }
}

}  // namespace kldiv_test
