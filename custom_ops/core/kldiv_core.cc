// kldiv_core.cc: broadcast planning, work partition, ISA selection, scalar loops and
// conversions of the fused KLDivLoss kernel. See kldiv_core.h for the contract.
#include "kldiv_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>

#include "kldiv_kernels.h"

namespace kldiv {
namespace {

constexpr int kMaxRank = 64;          // numpy's limit (NPY_MAXDIMS)
constexpr int64_t kMaxTasks = 512;    // bounds the partial sums: O(1) extra memory
constexpr int64_t kMinDirectRun = 64;  // shorter inner runs are gathered into buffers
constexpr int64_t kGather = 2048;     // elements per gather buffer

}  // namespace

bool ParseReduction(const std::string& name, Reduction* out) {
  static const struct {
    const char* name;
    Reduction value;
  } kNames[] = {{"none", Reduction::kNone},
                {"mean", Reduction::kMean},
                {"sum", Reduction::kSum},
                {"batchmean", Reduction::kBatchMean}};
  for (const auto& entry : kNames) {
    if (name == entry.name) {
      *out = entry.value;
      return true;
    }
  }
  return false;
}

const char* ReductionName(Reduction r) {
  switch (r) {
    case Reduction::kNone:
      return "none";
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
    case Reduction::kBatchMean:
      return "batchmean";
  }
  return "?";
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

std::size_t DTypeSize(DType t) { return t == DType::kFloat32 ? 4 : 2; }

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Broadcast plan

std::string MakeBroadcastPlan(const std::vector<int64_t>& x_shape,
                              const std::vector<int64_t>& t_shape, BroadcastPlan* plan) {
  const auto shapes = [&] {
    return "input shape " + ShapeToString(x_shape) + " and target shape " + ShapeToString(t_shape);
  };
  if (x_shape.size() > kMaxRank || t_shape.size() > kMaxRank) {
    return shapes() + ": rank above " + std::to_string(kMaxRank) + " is not supported";
  }
  for (const auto* shape : {&x_shape, &t_shape}) {
    for (int64_t d : *shape) {
      if (d < 0) return shapes() + ": negative dimension";
    }
  }
  const std::size_t rank = std::max(x_shape.size(), t_shape.size());
  std::vector<int64_t> xs(rank, 1), ts(rank, 1), out(rank, 1);
  std::copy(x_shape.begin(), x_shape.end(), xs.begin() + (rank - x_shape.size()));
  std::copy(t_shape.begin(), t_shape.end(), ts.begin() + (rank - t_shape.size()));
  for (std::size_t j = 0; j < rank; ++j) {
    if (xs[j] != ts[j] && xs[j] != 1 && ts[j] != 1) {
      std::ostringstream os;
      os << shapes() << " are not broadcastable (dim " << static_cast<int64_t>(j) - int64_t(rank)
         << ": " << xs[j] << " vs " << ts[j] << ")";
      return os.str();
    }
    out[j] = xs[j] == 1 ? ts[j] : xs[j];
  }
  // Element counts, with overflow checks (a broadcast can be far larger than either input).
  const auto product = [](const std::vector<int64_t>& s, int64_t* result) {
    int64_t p = 1;
    bool zero = false;
    bool overflow = false;
    for (int64_t d : s) {
      if (d == 0) zero = true;
      if (!overflow && __builtin_mul_overflow(p, d, &p)) overflow = true;
    }
    *result = zero ? 0 : p;
    return zero || !overflow;
  };
  BroadcastPlan p;
  if (!product(out, &p.count) || !product(xs, &p.x_count) || !product(ts, &p.t_count)) {
    return shapes() + ": the broadcast shape " + ShapeToString(out) +
           " has more than 2**63 elements";
  }
  p.out_shape = out;
  if (p.count > 1) {
    // Row-major element strides of each operand in the padded rank; 0 where broadcast.
    std::vector<int64_t> sx(rank), st(rank);
    int64_t ax = 1, at = 1;
    for (std::size_t jj = rank; jj-- > 0;) {
      sx[jj] = xs[jj] == 1 ? 0 : ax;
      st[jj] = ts[jj] == 1 ? 0 : at;
      ax *= xs[jj];
      at *= ts[jj];
    }
    for (std::size_t j = 0; j < rank; ++j) {
      if (out[j] == 1) continue;  // size-1 dims index nothing
      if (!p.dims.empty() && p.x_strides.back() == sx[j] * out[j] &&
          p.t_strides.back() == st[j] * out[j]) {
        // The previous (outer) dim steps both operands exactly like one more run of this dim.
        p.dims.back() *= out[j];
        p.x_strides.back() = sx[j];
        p.t_strides.back() = st[j];
      } else {
        p.dims.push_back(out[j]);
        p.x_strides.push_back(sx[j]);
        p.t_strides.push_back(st[j]);
      }
    }
  }
  *plan = std::move(p);
  return "";
}

std::vector<int64_t> OutputShape(const BroadcastPlan& plan, Reduction reduction) {
  return reduction == Reduction::kNone ? plan.out_shape : std::vector<int64_t>{};
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  uint32_t bits;
  if (em >= 0x7C00u) {
    bits = 0x7F800000u | (em & 0x3FFu) << 13;  // inf or NaN (payload kept)
  } else if (em >= 0x0400u) {
    bits = (em << 13) + ((127u - 15u) << 23);  // normal
  } else {
    const float v = static_cast<float>(em) * 5.9604644775390625e-8f;  // subnormal: em * 2**-24
    std::memcpy(&bits, &v, sizeof(bits));
  }
  bits |= sign;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520
  if (abs >= 0x38800000u) {                                                // normal half
    const uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - ((127u - 15u) << 23)) >> 13));
  }
  // Subnormal half (or zero): value = m * 2**-24 with m rounded to nearest even.
  float a;
  std::memcpy(&a, &abs, sizeof(a));
  const float scaled = a * 16777216.0f;  // exact: a power of two
  const float m = std::nearbyint(scaled);  // default rounding mode: nearest even
  return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

namespace {

// double -> float rounded to odd (inexact results get their last bit set): a later rounding to
// nearest even of that float to a format with at most 22 bits of precision then equals a
// single rounding of the double.
float RoundToOddFloat(double d) {
  float f = static_cast<float>(d);
  if (std::isnan(d) || static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits |= 1u;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

uint16_t DoubleToHalf(double d) { return FloatToHalf(RoundToOddFloat(d)); }
uint16_t DoubleToBFloat16(double d) { return FloatToBFloat16(RoundToOddFloat(d)); }

// ---------------------------------------------------------------------------------------------
// Scalar loops: the fallback for CPUs without AVX2 (plain libm log/exp, same semantics).

namespace detail {
namespace {

template <DType kT>
float Load(const void* p, int64_t i) {
  if constexpr (kT == DType::kFloat32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (kT == DType::kFloat16) {
    return HalfToFloat(static_cast<const uint16_t*>(p)[i]);
  } else {
    return BFloat16ToFloat(static_cast<const uint16_t*>(p)[i]);
  }
}

template <DType kT>
void Store(void* p, int64_t i, float v) {
  if constexpr (kT == DType::kFloat32) {
    static_cast<float*>(p)[i] = v;
  } else if constexpr (kT == DType::kFloat16) {
    static_cast<uint16_t*>(p)[i] = FloatToHalf(v);
  } else {
    static_cast<uint16_t*>(p)[i] = FloatToBFloat16(v);
  }
}

template <bool kLogTarget>
float ScalarLoss(float x, float t) {
  if constexpr (kLogTarget) {
    return std::exp(t) * (t - x);
  } else {
    return t == 0.0f ? 0.0f : t * (std::log(t) - x);
  }
}

template <DType kT, bool kLogTarget>
void ScalarPointwise(const void* x, int64_t sx, const void* t, int64_t st, int64_t n, void* out) {
  for (int64_t i = 0; i < n; ++i) {
    Store<kT>(out, i, ScalarLoss<kLogTarget>(Load<kT>(x, i * sx), Load<kT>(t, i * st)));
  }
}

template <DType kT, bool kLogTarget>
double ScalarSum(const void* x, int64_t sx, const void* t, int64_t st, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += ScalarLoss<kLogTarget>(Load<kT>(x, i * sx), Load<kT>(t, i * st));
  }
  return acc;
}

}  // namespace

const Kernels* ScalarKernels() {
  static const Kernels table = {
      "scalar",
      {{ScalarPointwise<DType::kFloat32, false>, ScalarPointwise<DType::kFloat32, true>},
       {ScalarPointwise<DType::kFloat16, false>, ScalarPointwise<DType::kFloat16, true>},
       {ScalarPointwise<DType::kBFloat16, false>, ScalarPointwise<DType::kBFloat16, true>}},
      {{ScalarSum<DType::kFloat32, false>, ScalarSum<DType::kFloat32, true>},
       {ScalarSum<DType::kFloat16, false>, ScalarSum<DType::kFloat16, true>},
       {ScalarSum<DType::kBFloat16, false>, ScalarSum<DType::kBFloat16, true>}},
  };
  return &table;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// ISA selection

namespace {

bool CpuHasAvx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();  // idempotent; needed if we run before libgcc's constructor
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool CpuHasAvx3() {
#if defined(__x86_64__) && defined(__GNUC__)
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw");
#else
  return false;
#endif
}

std::vector<const detail::Kernels*> SupportedKernels() {
  std::vector<const detail::Kernels*> result;
  if (detail::Avx3Kernels() && CpuHasAvx3()) result.push_back(detail::Avx3Kernels());
  if (detail::Avx2Kernels() && CpuHasAvx2()) result.push_back(detail::Avx2Kernels());
  result.push_back(detail::ScalarKernels());
  return result;
}

const detail::Kernels* ChooseKernels() {
  const auto supported = SupportedKernels();
  if (const char* cap = std::getenv("KLDIV_ONNX_ISA")) {
    for (std::size_t i = 0; i < supported.size(); ++i) {
      if (std::strcmp(supported[i]->name, cap) == 0) return supported[i];
    }
  }
  return supported.front();
}

const detail::Kernels*& ActiveKernelsSlot() {
  static const detail::Kernels* active = ChooseKernels();
  return active;
}

}  // namespace

std::vector<std::string> SupportedTargets() {
  std::vector<std::string> names;
  for (const auto* k : SupportedKernels()) names.emplace_back(k->name);
  return names;
}

const char* ActiveTarget() { return ActiveKernelsSlot()->name; }

bool SetTarget(const std::string& name) {
  for (const auto* k : SupportedKernels()) {
    if (name == k->name) {
      ActiveKernelsSlot() = k;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Driver

void SerialFor(std::size_t n, void (*fn)(void*, std::size_t), void* data) {
  for (std::size_t i = 0; i < n; ++i) fn(data, i);
}

namespace {

struct Job {
  const BroadcastPlan* plan;
  const char* x;
  const char* t;
  char* out;          // kNone: the output elements
  double* partials;   // reductions: one per task
  std::size_t elem_size;
  detail::PointwiseFn pointwise;
  detail::SumFn sum;
  int64_t task_elems;
};

// Processes the flat output range [begin, end): walks the collapsed dims like an odometer and
// hands each inner run to the kernel, or, when inner runs are short, gathers runs into buffers
// first so the vector loop sees long contiguous stretches.
double RunRange(const Job& job, int64_t begin, int64_t end) {
  const BroadcastPlan& plan = *job.plan;
  const std::size_t es = job.elem_size;
  const bool reduce = job.partials != nullptr;
  double acc = 0.0;
  if (plan.dims.empty()) {  // a single element
    if (reduce) return job.sum(job.x, 0, job.t, 0, 1);
    job.pointwise(job.x, 0, job.t, 0, 1, job.out);
    return 0.0;
  }
  const int k = static_cast<int>(plan.dims.size());
  const int64_t* dims = plan.dims.data();
  const int64_t* sx = plan.x_strides.data();
  const int64_t* st = plan.t_strides.data();
  const int64_t inner = dims[k - 1];
  const int64_t isx = sx[k - 1];
  const int64_t ist = st[k - 1];

  int64_t c[kMaxRank];
  int64_t rest = begin;
  for (int j = k - 1; j >= 0; --j) {
    c[j] = rest % dims[j];
    rest /= dims[j];
  }
  const auto offsets = [&](int64_t* xo, int64_t* to) {
    int64_t a = 0, b = 0;
    for (int j = 0; j < k; ++j) {
      a += c[j] * sx[j];
      b += c[j] * st[j];
    }
    *xo = a;
    *to = b;
  };
  const auto advance = [&](int64_t n) {
    c[k - 1] += n;
    if (c[k - 1] < inner) return;
    c[k - 1] = 0;
    for (int j = k - 2; j >= 0; --j) {
      if (++c[j] < dims[j]) break;
      c[j] = 0;
    }
  };

  int64_t pos = begin;
  if (inner >= kMinDirectRun || k == 1) {
    while (pos < end) {
      const int64_t n = std::min(inner - c[k - 1], end - pos);
      int64_t xo, to;
      offsets(&xo, &to);
      const char* xp = job.x + xo * static_cast<int64_t>(es);
      const char* tp = job.t + to * static_cast<int64_t>(es);
      if (reduce) {
        acc += job.sum(xp, isx, tp, ist, n);
      } else {
        job.pointwise(xp, isx, tp, ist, n, job.out + pos * static_cast<int64_t>(es));
      }
      pos += n;
      advance(n);
    }
    return acc;
  }

  alignas(64) char xb[kGather * 4];
  alignas(64) char tb[kGather * 4];
  while (pos < end) {
    const int64_t start = pos;
    int64_t filled = 0;
    while (pos < end && filled < kGather) {
      const int64_t n = std::min({inner - c[k - 1], end - pos, kGather - filled});
      int64_t xo, to;
      offsets(&xo, &to);
      const char* xp = job.x + xo * static_cast<int64_t>(es);
      const char* tp = job.t + to * static_cast<int64_t>(es);
      char* xd = xb + filled * static_cast<int64_t>(es);
      char* td = tb + filled * static_cast<int64_t>(es);
      const std::size_t bytes = static_cast<std::size_t>(n) * es;
      if (isx) {
        std::memcpy(xd, xp, bytes);
      } else {
        for (int64_t i = 0; i < n; ++i) std::memcpy(xd + i * static_cast<int64_t>(es), xp, es);
      }
      if (ist) {
        std::memcpy(td, tp, bytes);
      } else {
        for (int64_t i = 0; i < n; ++i) std::memcpy(td + i * static_cast<int64_t>(es), tp, es);
      }
      filled += n;
      pos += n;
      advance(n);
    }
    if (reduce) {
      acc += job.sum(xb, 1, tb, 1, filled);
    } else {
      job.pointwise(xb, 1, tb, 1, filled, job.out + start * static_cast<int64_t>(es));
    }
  }
  return acc;
}

void RunTask(void* data, std::size_t i) {
  const Job& job = *static_cast<const Job*>(data);
  const int64_t begin = static_cast<int64_t>(i) * job.task_elems;
  const int64_t end = std::min(job.plan->count, begin + job.task_elems);
  const double s = RunRange(job, begin, end);
  if (job.partials) job.partials[i] = s;
}

// Fixed partition of [0, count): whole blocks of kBlockElements, at most kMaxTasks tasks.
int64_t TaskElems(int64_t count) {
  const int64_t blocks = (count + kBlockElements - 1) / kBlockElements;
  const int64_t per_task = (blocks + kMaxTasks - 1) / kMaxTasks;
  return std::max<int64_t>(per_task, 1) * kBlockElements;
}

double Sum(const Problem& problem, const BroadcastPlan& plan, const ParallelFor& parallel_for) {
  if (plan.count == 0) return 0.0;
  const detail::Kernels* kernels = ActiveKernelsSlot();
  const int dt = static_cast<int>(problem.dtype);
  const int lt = problem.log_target ? 1 : 0;
  const int64_t task_elems = TaskElems(plan.count);
  const int64_t ntasks = (plan.count + task_elems - 1) / task_elems;
  double partials[kMaxTasks];
  Job job{&plan,
          static_cast<const char*>(problem.x),
          static_cast<const char*>(problem.t),
          nullptr,
          partials,
          DTypeSize(problem.dtype),
          kernels->pointwise[dt][lt],
          kernels->sum[dt][lt],
          task_elems};
  if (ntasks == 1) {
    RunTask(&job, 0);
  } else {
    parallel_for(static_cast<std::size_t>(ntasks), RunTask, &job);
  }
  double total = 0.0;
  for (int64_t i = 0; i < ntasks; ++i) total += partials[i];
  return total;
}

void StoreScalar(DType dtype, double value, void* out) {
  switch (dtype) {
    case DType::kFloat32: {
      const float f = static_cast<float>(value);
      std::memcpy(out, &f, sizeof(f));
      break;
    }
    case DType::kFloat16: {
      const uint16_t h = DoubleToHalf(value);
      std::memcpy(out, &h, sizeof(h));
      break;
    }
    case DType::kBFloat16: {
      const uint16_t b = DoubleToBFloat16(value);
      std::memcpy(out, &b, sizeof(b));
      break;
    }
  }
}

}  // namespace

double ComputeSum(const Problem& problem, const BroadcastPlan& plan,
                  const ParallelFor& parallel_for) {
  return Sum(problem, plan, parallel_for);
}

void Compute(const Problem& problem, const BroadcastPlan& plan, void* out,
             const ParallelFor& parallel_for) {
  if (problem.reduction == Reduction::kNone) {
    if (plan.count == 0) return;
    const detail::Kernels* kernels = ActiveKernelsSlot();
    const int dt = static_cast<int>(problem.dtype);
    const int lt = problem.log_target ? 1 : 0;
    const int64_t task_elems = TaskElems(plan.count);
    const int64_t ntasks = (plan.count + task_elems - 1) / task_elems;
    Job job{&plan,
            static_cast<const char*>(problem.x),
            static_cast<const char*>(problem.t),
            static_cast<char*>(out),
            nullptr,
            DTypeSize(problem.dtype),
            kernels->pointwise[dt][lt],
            kernels->sum[dt][lt],
            task_elems};
    if (ntasks == 1) {
      RunTask(&job, 0);
    } else {
      parallel_for(static_cast<std::size_t>(ntasks), RunTask, &job);
    }
    return;
  }
  double total = Sum(problem, plan, parallel_for);
  // Division in double, then a single rounding to the output dtype. 0/0 gives NaN (empty mean,
  // batchmean over 0 rows).
  if (problem.reduction == Reduction::kMean) {
    total /= static_cast<double>(plan.count);
  } else if (problem.reduction == Reduction::kBatchMean && !problem.x_shape.empty()) {
    total /= static_cast<double>(problem.x_shape[0]);
  }
  StoreScalar(problem.dtype, total, out);
}

}  // namespace kldiv
