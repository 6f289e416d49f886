// row_kl.cc: the per-row KL driver (the active target's loops, row chunks on the thread pool)
// and the float64 path (the scalar target, and the SIMD path's ill-conditioned rows).
#include "row_kl.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kldiv_kernels.h"

namespace kldiv {
namespace {

constexpr struct {
  const char* name;
  RowKind kind;
} kKinds[] = {
    {"logits", RowKind::kLogits}, {"log-probs", RowKind::kLogProbs}, {"probs", RowKind::kProbs}};

// Rows per task are a multiple of this: the short-row loops take 8 or 16 rows at a time.
constexpr int64_t kRowBlock = 16;

// The row's log-probabilities in double: log softmax(z * scale) for logits and log-probs,
// log(z / sum z) for probs.
void LogProbs(const float* z, int64_t n, RowKind kind, double scale, double* out) {
  if (kind == RowKind::kProbs) {
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) sum += z[j];
    for (int64_t j = 0; j < n; ++j) out[j] = std::log(z[j] / sum);
    return;
  }
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    out[j] = z[j] * scale;
    m = std::isnan(out[j]) ? out[j] : std::max(m, out[j]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(out[j] - m);
  const double lse = m + std::log(sum);
  for (int64_t j = 0; j < n; ++j) out[j] -= lse;
}

// expm1(u) - u without cancellation: its series below |u| = 1/2 (terms to u^18/18!).
double ExpM1MinusX(double u) {
  if (std::fabs(u) >= 0.5) return std::expm1(u) - u;
  double term = u, sum = 0.0;
  for (int k = 2; k <= 18; ++k) {
    term *= u / k;
    sum += term;
  }
  return sum;
}

struct Task {
  const RowProblem* problem;
  detail::RowKLFn simd;  // nullptr: the float64 path
  int64_t rows_per_task;
  double* kl;
  bool* agree;
};

void RunTask(void* data, std::size_t index) {
  const Task& task = *static_cast<const Task*>(data);
  const RowProblem& p = *task.problem;
  const int64_t begin = static_cast<int64_t>(index) * task.rows_per_task;
  const int64_t end = std::min(p.rows, begin + task.rows_per_task);
  if (task.simd != nullptr) {
    task.simd(p, begin, end, task.kl, task.agree);
    return;
  }
  for (int64_t r = begin; r < end; ++r) {
    const float* b = p.base + r * p.classes;
    const float* c = p.candidate + r * p.classes;
    task.kl[r] = RowKLDouble(b, c, p.classes, p.kind, p.temperature);
    task.agree[r] = RowArgMax(b, p.classes) == RowArgMax(c, p.classes);
  }
}

}  // namespace

bool ParseRowKind(const std::string& name, RowKind* out) {
  for (const auto& k : kKinds) {
    if (name == k.name) {
      *out = k.kind;
      return true;
    }
  }
  return false;
}

const char* RowKindName(RowKind kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

std::string CheckRowProblem(const RowProblem& problem) {
  if (problem.classes <= 0) {
    return "the class axis (the last) has " + std::to_string(problem.classes) +
           " entries: a distribution needs at least one";
  }
  if (!(std::isfinite(problem.temperature) && problem.temperature > 0.0f)) {
    return "temperature " + std::to_string(problem.temperature) + " must be finite and > 0";
  }
  return "";
}

int64_t RowArgMax(const float* row, int64_t classes) {
  int64_t best = 0;
  for (int64_t j = 0; j < classes; ++j) {
    if (std::isnan(row[j])) return j;
    if (row[j] > row[best]) best = j;
  }
  return best;
}

double RowKLDouble(const float* base, const float* candidate, int64_t classes, RowKind kind,
                   float temperature) {
  const double scale = kind == RowKind::kLogits ? 1.0 / static_cast<double>(temperature) : 1.0;
  std::vector<double> lp(static_cast<std::size_t>(classes));
  std::vector<double> lq(lp.size());
  LogProbs(base, classes, kind, scale, lp.data());
  LogProbs(candidate, classes, kind, scale, lq.data());
  // The textbook sum: right for NaN, inf and large values, cancels for small ones.
  double direct = 0.0;
  for (int64_t j = 0; j < classes; ++j) {
    const double p = std::exp(lp[j]);
    if (p == 0.0 && !std::isnan(lq[j]) && !std::isnan(lp[j])) continue;  // 0 log 0 = 0
    direct += p * (lp[j] - lq[j]);
  }
  if (!std::isfinite(direct)) return direct;
  // The identity of row_kl.h in double, where it is well conditioned.
  const bool probs = kind == RowKind::kProbs;
  const double mb = probs ? 0.0 : *std::max_element(base, base + classes) * scale;
  const double mc = probs ? 0.0 : *std::max_element(candidate, candidate + classes) * scale;
  double a = 0.0, c = 0.0, g = 0.0, r = 0.0;
  for (int64_t j = 0; j < classes; ++j) {
    const double b = base[j], q = candidate[j];
    const double w = probs ? b : std::exp(b * scale - mb);
    if (w == 0.0) {
      r += probs ? q : std::exp(q * scale - mc);
      continue;
    }
    const double u = probs ? std::log1p((q - b) / b) : ((q - b) - (mc - mb) / scale) * scale;
    if (!(std::fabs(u) <= 700.0)) return direct;
    a += w;
    c += w * u;
    g += w * ExpM1MinusX(u);
  }
  const double kl = KLFromSums(a, c, g, r);
  return std::isnan(kl) ? direct : kl;
}

double KLFromSums(double a, double c, double g, double r) {
  if (!(a > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  const double x = (c + g + r) / a;  // E_P[e^u] + R / A - 1
  if (!(x > -1.0 + 1e-6)) return std::numeric_limits<double>::quiet_NaN();
  if (std::fabs(x) <= 0.5) return (g + r) / a + (std::log1p(x) - x);
  return std::log1p(x) - c / a;
}

void ComputeRowKL(const RowProblem& problem, double* kl, bool* agree,
                  const ParallelFor& parallel_for, int64_t task_elements) {
  if (problem.rows <= 0) return;
  int64_t rows = std::max<int64_t>(1, task_elements / problem.classes);
  if (rows >= kRowBlock) rows = (rows + kRowBlock - 1) / kRowBlock * kRowBlock;
  Task task{&problem, detail::ActiveKernels()->row_kl, rows, kl, agree};
  const int64_t tasks = (problem.rows + task.rows_per_task - 1) / task.rows_per_task;
  if (tasks == 1) {
    RunTask(&task, 0);
  } else {
    parallel_for(static_cast<std::size_t>(tasks), RunTask, &task);
  }
}

}  // namespace kldiv
