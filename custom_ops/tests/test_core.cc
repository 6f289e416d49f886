// test_core.cc: unit tests of the numeric core (no onnxruntime). Every supported SIMD target is
// checked against a long-double reference; prints "N passed, M failed", exits non-zero on failure.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kldiv_core.h"

using kldiv::BroadcastPlan;
using kldiv::DType;
using kldiv::Problem;
using kldiv::Reduction;

namespace {

int g_passed = 0;
int g_failed = 0;

void Check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

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

Tensor MakeTensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (dtype == DType::kFloat32) {
    t.f32 = values;
  } else {
    for (float v : values) {
      t.bits.push_back(dtype == DType::kFloat16 ? kldiv::FloatToHalf(v) : kldiv::FloatToBFloat16(v));
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

kldiv::ParallelFor Threads(int threads, bool reverse = false) {
  return [threads, reverse](std::size_t n, void (*fn)(void*, std::size_t), void* data) {
    ThreadFor(threads, reverse, n, fn, data);
  };
}

const kldiv::ParallelFor kSerial = kldiv::SerialFor;

std::vector<uint8_t> Run(const Tensor& x, const Tensor& t, Reduction reduction, bool log_target,
                         const kldiv::ParallelFor& pf, BroadcastPlan* plan_out = nullptr) {
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
    if (n == 0 && (r == Reduction::kMean || (r == Reduction::kBatchMean && !x.shape.empty() &&
                                             x.shape[0] == 0))) {
      want = std::numeric_limits<long double>::quiet_NaN();
    }
    const float got = ReadOut(x.dtype, out, 0);
    if (!Close(got, want, want_scale, x.dtype)) {
      std::printf("  got %.9g want %.9Lg\n", got, want);
    }
    Check(Close(got, want, want_scale, x.dtype), what);
  }
}

// ----------------------------------------------------------------------------- tests

void TestConversions() {
  // float16: every bit pattern survives float16 -> float32 -> float16 (NaN stays NaN).
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = kldiv::HalfToFloat(static_cast<uint16_t>(h));
    const _Float16 ref = [&] {
      _Float16 r;
      uint16_t b = static_cast<uint16_t>(h);
      std::memcpy(&r, &b, 2);
      return r;
    }();
    if (std::isnan(f) != std::isnan(static_cast<float>(ref))) ++bad;
    if (!std::isnan(f) && f != static_cast<float>(ref)) ++bad;
    if (!std::isnan(f) && kldiv::FloatToHalf(f) != h) ++bad;
  }
  Check(bad == 0, "float16 -> float32 exact and round trip");
  // float32 -> float16 rounding against the compiler's _Float16 conversion (round to nearest
  // even), over random bit patterns and the values around every float16.
  std::mt19937 gen(7);
  bad = 0;
  auto check_half = [&](float f) {
    const _Float16 r = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &r, 2);
    const uint16_t got = kldiv::FloatToHalf(f);
    if (std::isnan(f)) {
      if ((got & 0x7C00u) != 0x7C00u || (got & 0x3FFu) == 0) ++bad;
    } else if (got != want) {
      if (bad < 3) std::printf("  FloatToHalf(%.9g) = %04x want %04x\n", f, got, want);
      ++bad;
    }
  };
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t b = gen();
    float f;
    std::memcpy(&f, &b, 4);
    check_half(f);
  }
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    const float f = kldiv::HalfToFloat(static_cast<uint16_t>(h));
    const float next = kldiv::HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = f + (next - f) / 2;  // a tie: rounds to the even one
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf), f}) {
      check_half(v);
      check_half(-v);
    }
  }
  Check(bad == 0, "float32 -> float16 round to nearest even");
  // bfloat16: reference by distances in double, ties to even.
  bad = 0;
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t b = gen();
    float f;
    std::memcpy(&f, &b, 4);
    const uint16_t got = kldiv::FloatToBFloat16(f);
    if (std::isnan(f)) {
      if (!std::isnan(kldiv::BFloat16ToFloat(got))) ++bad;
      continue;
    }
    const uint16_t lo = static_cast<uint16_t>(b >> 16);
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double dlo = std::fabs(static_cast<double>(kldiv::BFloat16ToFloat(lo)) - f);
    const double dhi = (hi & 0x7F80u) == 0x7F80u && (lo & 0x7F80u) != 0x7F80u
                           ? std::fabs(3.4028236692093846346e38 - std::fabs(static_cast<double>(f)))
                           : std::fabs(static_cast<double>(kldiv::BFloat16ToFloat(hi)) - f);
    const uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
    if (got != want) {
      if (bad < 3) std::printf("  FloatToBFloat16(%.9g) = %04x want %04x\n", f, got, want);
      ++bad;
    }
  }
  Check(bad == 0, "float32 -> bfloat16 round to nearest even");
  // double -> float16 / bfloat16 in one rounding (a reduction's result), near ties especially.
  bad = 0;
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int i = 0; i < 1000000; ++i) {
    const uint16_t h = static_cast<uint16_t>(gen() & 0x7BFFu);  // finite halves
    const double lo = kldiv::HalfToFloat(h);
    const double hi = kldiv::HalfToFloat(static_cast<uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    const double d = mid + unit(gen) * (hi - lo) * (i % 2 ? 1e-9 : 0.5);
    const _Float16 r = static_cast<_Float16>(d);  // libgcc: one correct rounding
    uint16_t want;
    std::memcpy(&want, &r, 2);
    if (kldiv::DoubleToHalf(d) != want) {
      if (bad < 3) std::printf("  DoubleToHalf(%.17g) = %04x want %04x\n", d,
                               kldiv::DoubleToHalf(d), want);
      ++bad;
    }
    // bfloat16: nearest of the two neighbours, ties to even
    const uint16_t b = static_cast<uint16_t>(gen() & 0x7F7Eu);
    const double blo = kldiv::BFloat16ToFloat(b);
    const double bhi = kldiv::BFloat16ToFloat(static_cast<uint16_t>(b + 1));
    const double bd = (blo + bhi) / 2 + unit(gen) * (bhi - blo) * (i % 2 ? 1e-12 : 0.5);
    const double dl = std::fabs(bd - blo), dh = std::fabs(bhi - bd);
    const uint16_t bwant = dl < dh ? b : dh < dl ? static_cast<uint16_t>(b + 1)
                                               : ((b & 1u) ? static_cast<uint16_t>(b + 1) : b);
    if (kldiv::DoubleToBFloat16(bd) != bwant) ++bad;
  }
  Check(bad == 0, "double -> float16 / bfloat16 rounded once");
}

void TestPlan() {
  BroadcastPlan p;
  Check(kldiv::MakeBroadcastPlan({2, 3, 4}, {2, 3, 4}, &p).empty() && p.dims == std::vector<int64_t>{24},
        "plan: equal shapes collapse to one dim");
  Check(kldiv::MakeBroadcastPlan({5, 1}, {1, 7}, &p).empty() &&
            p.dims == std::vector<int64_t>({5, 7}) && p.x_strides == std::vector<int64_t>({1, 0}) &&
            p.t_strides == std::vector<int64_t>({0, 1}),
        "plan: outer product");
  Check(kldiv::MakeBroadcastPlan({8, 3, 4}, {3, 4}, &p).empty() &&
            p.dims == std::vector<int64_t>({8, 12}) && p.t_strides == std::vector<int64_t>({0, 1}),
        "plan: leading broadcast");
  Check(kldiv::MakeBroadcastPlan({}, {}, &p).empty() && p.count == 1 && p.dims.empty() &&
            p.out_shape.empty(),
        "plan: 0-d");
  Check(kldiv::MakeBroadcastPlan({3, 0}, {1}, &p).empty() && p.count == 0 &&
            p.out_shape == std::vector<int64_t>({3, 0}),
        "plan: empty");
  const std::string e = kldiv::MakeBroadcastPlan({2, 3}, {4}, &p);
  Check(e.find("not broadcastable") != std::string::npos && e.find("[2, 3]") != std::string::npos &&
            e.find("[4]") != std::string::npos && e.find("3 vs 4") != std::string::npos,
        "plan error message: " + e);
  Check(!kldiv::MakeBroadcastPlan({0}, {2}, &p).empty(), "plan: 0 vs 2 is an error");
  Check(!kldiv::MakeBroadcastPlan({1LL << 40, 1}, {1, 1LL << 40}, &p).empty(),
        "plan: broadcast overflowing int64 is an error");
  Check(!kldiv::MakeBroadcastPlan({-1}, {2}, &p).empty(), "plan: negative dim is an error");
}

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
      {{4, 300}, {300}},             // leading broadcast of t
      {{300}, {4, 300}},             // leading broadcast of x
      {{70, 3}, {70, 1}},            // trailing broadcast, short rows (gather path)
      {{6, 200}, {6, 1}},            // trailing broadcast, long rows
      {{4, 1, 90}, {4, 3, 90}},      // middle broadcast
      {{5, 1}, {1, 129}},            // outer product
      {{2, 3, 1, 5, 2}, {1, 3, 4, 1, 2}},  // rank 5, mixed
      {{0}, {0}},
      {{3, 0}, {1}},
      {{0, 4}, {4}},
      {{40000}, {40000}},            // several tasks
      {{3, 17, 1023}, {17, 1}},      // odd sizes, tails
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
  const std::vector<float> x = {-kInf, kNaN, 1.0f, kInf, 0.0f, 2.0f, 1.0f, -kInf, kInf, 3.0f,
                                0.5f,  1.0f, -1.0f, 5.0f, 0.0f, 1.0f, -3.0f};
  const std::vector<float> t = {0.0f, -0.0f, -1.0f, 0.0f, kNaN, kInf, tiny, 1.0f, kInf, 1e-40f,
                                1e30f, 1e-30f, 3e38f, 0.25f, 1.0f, 2.0f, 1e-20f};
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
    const auto out = Run(MakeTensor(DType::kFloat32, {}, {xv}), MakeTensor(DType::kFloat32, {}, {tv}),
                         Reduction::kNone, lt, kSerial);
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
    std::printf("  %s 2**24 sum%s: relative error %.3g\n", target.c_str(),
                lt ? " log_target" : "", rel);
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

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  TestConversions();
  TestPlan();
  const auto targets = kldiv::SupportedTargets();
  std::printf("targets: ");
  for (const auto& t : targets) std::printf("%s ", t.c_str());
  std::printf("(default %s)\n", kldiv::ActiveTarget());
  for (const auto& target : targets) {
    Check(kldiv::SetTarget(target), "select target " + target);
    TestMatrix(target);
    TestSpecials(target);
    TestThreadIndependence(target);
    if (target != "scalar") TestAccuracy(target);
  }
  kldiv::SetTarget(targets.front());
  TestHugeBroadcast(targets.front());
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
