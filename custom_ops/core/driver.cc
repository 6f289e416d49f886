// driver.cc: Compute and ComputeSum. Splits the broadcast output into a fixed partition of
// tasks, walks each task's range of the collapsed dims and hands contiguous runs to the active
// target's loops; sums come back as one double per task, added in task order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kldiv_core.h"
#include "kldiv_kernels.h"

namespace kldiv {
namespace {

constexpr int64_t kMaxTasks = 512;     // bounds the partial sums: O(1) extra memory
constexpr int64_t kMinDirectRun = 64;  // shorter inner runs are gathered into buffers
constexpr int64_t kGather = 2048;      // elements per gather buffer

struct Job {
  const BroadcastPlan* plan;
  const char* x;
  const char* t;
  char* out;         // kNone: the output elements
  double* partials;  // reductions: one per task
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
  const int64_t es = static_cast<int64_t>(job.elem_size);
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
  // Pointers to the operands' elements at the odometer's position.
  const auto operands = [&](const char** xp, const char** tp) {
    int64_t a = 0, b = 0;
    for (int j = 0; j < k; ++j) {
      a += c[j] * sx[j];
      b += c[j] * st[j];
    }
    *xp = job.x + a * es;
    *tp = job.t + b * es;
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
      const char* xp;
      const char* tp;
      operands(&xp, &tp);
      if (reduce) {
        acc += job.sum(xp, isx, tp, ist, n);
      } else {
        job.pointwise(xp, isx, tp, ist, n, job.out + pos * es);
      }
      pos += n;
      advance(n);
    }
    return acc;
  }

  // Copies n elements (stride 1) or n copies of one element (stride 0) to dst.
  const auto gather = [es](char* dst, const char* src, int64_t stride, int64_t n) {
    if (stride) {
      std::memcpy(dst, src, static_cast<std::size_t>(n * es));
    } else {
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * es, src, static_cast<std::size_t>(es));
    }
  };
  alignas(64) char xb[kGather * 4];
  alignas(64) char tb[kGather * 4];
  while (pos < end) {
    const int64_t start = pos;
    int64_t filled = 0;
    while (pos < end && filled < kGather) {
      const int64_t n = std::min({inner - c[k - 1], end - pos, kGather - filled});
      const char* xp;
      const char* tp;
      operands(&xp, &tp);
      gather(xb + filled * es, xp, isx, n);
      gather(tb + filled * es, tp, ist, n);
      filled += n;
      pos += n;
      advance(n);
    }
    if (reduce) {
      acc += job.sum(xb, 1, tb, 1, filled);
    } else {
      job.pointwise(xb, 1, tb, 1, filled, job.out + start * es);
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

// The one task runner: elementwise losses into `out` (partials == nullptr), or the sum of each
// task's losses into partials[task]. Returns the number of tasks.
int64_t RunTasks(const Problem& problem, const BroadcastPlan& plan, void* out, double* partials,
                 const ParallelFor& parallel_for) {
  if (plan.count == 0) return 0;
  const detail::Kernels* kernels = detail::ActiveKernels();
  const int dt = static_cast<int>(problem.dtype);
  const int lt = problem.log_target ? 1 : 0;
  const int64_t task_elems = TaskElems(plan.count);
  const int64_t ntasks = (plan.count + task_elems - 1) / task_elems;
  Job job{&plan,
          static_cast<const char*>(problem.x),
          static_cast<const char*>(problem.t),
          static_cast<char*>(out),
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
  return ntasks;
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

void SerialFor(std::size_t n, void (*fn)(void*, std::size_t), void* data) {
  for (std::size_t i = 0; i < n; ++i) fn(data, i);
}

double ComputeSum(const Problem& problem, const BroadcastPlan& plan,
                  const ParallelFor& parallel_for) {
  double partials[kMaxTasks];
  const int64_t ntasks = RunTasks(problem, plan, nullptr, partials, parallel_for);
  double total = 0.0;
  for (int64_t i = 0; i < ntasks; ++i) total += partials[i];
  // A NaN sum is the one quiet NaN, whatever NaNs went into it: x86 passes on the first
  // operand's NaN, and compilers order the operands of an addition either way (GCC's and the
  // zig-built wheel's library returned NaNs of opposite sign for the same input).
  return std::isnan(total) ? std::numeric_limits<double>::quiet_NaN() : total;
}

void Compute(const Problem& problem, const BroadcastPlan& plan, void* out,
             const ParallelFor& parallel_for) {
  if (problem.reduction == Reduction::kNone) {
    RunTasks(problem, plan, out, nullptr, parallel_for);
    return;
  }
  double total = ComputeSum(problem, plan, parallel_for);
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
