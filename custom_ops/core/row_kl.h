// row_kl.h: KL(P_base || P_candidate) along the last axis, one value per row, for `compare`
// (the KLDivRows op). Plain C++17; knows nothing of onnxruntime.
//
// Each row of `classes` float32 values is turned into a distribution by its kind:
//   logits:    P = softmax(z / temperature)
//   log-probs: P = softmax(z)          (normalised log-probabilities are left as they are; the
//                                       float32 rounding of their normaliser is removed)
//   probs:     P = z / sum(z)
// and the row's value is sum_j P_j (log P_j - log Q_j), with the limit 0 * log 0 = 0 where
// P_j = 0 (unless the candidate's value is NaN). A NaN anywhere in the row gives NaN.
//
// Accuracy. The textbook float32 form, exp(lp) * (lp - lq) summed in double, cannot resolve a KL
// below about 1e-7: the float32 log-softmax rounds each term by ~1e-7 * |lp| and those errors do
// not cancel (measured: median relative error 20x at KL ~ 4e-9). The SIMD path therefore sums,
// in double, w_j = exp((b_j - max b) / T), w_j u_j and w_j g(u_j), with
// u_j = ((c_j - b_j) - (max c - max b)) / T (the per-class log-ratio before normalisation,
// shifted by the ratio of the maxima) and g(u) = expm1(u) - u (a series for |u| < 1/2), and
// returns (G + R) / A + (log1p(x) - x), x = (C + G + R) / A, with R the candidate's mass where P
// is 0: the exact identity
//   KL = -E_P[u] + log(E_P[e^u] + R / A)
// written so that nothing cancels (for |x| > 1/2 nothing can: log1p(x) - C / A). float32 math per
// element, double sums; relative error about 1e-7 at any KL size. Rows where the identity is
// ill-conditioned (|u| > 80 with P_j > 0, an infinite max, E_P[e^u] < 1e-6) and every row of the
// scalar target take the float64 path, RowKLDouble.
#ifndef KLDIV_CORE_ROW_KL_H_
#define KLDIV_CORE_ROW_KL_H_

#include <cstdint>
#include <string>

#include "kldiv_core.h"

namespace kldiv {

enum class RowKind { kLogits, kLogProbs, kProbs };

// "logits", "log-probs", "probs"; false if `name` is none of them.
bool ParseRowKind(const std::string& name, RowKind* out);
const char* RowKindName(RowKind kind);

struct RowProblem {
  const float* base = nullptr;       // rows x classes, row-major
  const float* candidate = nullptr;  // same shape
  int64_t rows = 0;
  int64_t classes = 0;  // > 0
  RowKind kind = RowKind::kLogits;
  float temperature = 1.0f;  // finite, > 0; used by kLogits only
};

// "" or a message naming the bad value (classes <= 0, temperature not finite and > 0).
std::string CheckRowProblem(const RowProblem& problem);

// Elements per task of ComputeRowKL by default: enough work to pay for a hand-off to
// onnxruntime's pool.
constexpr int64_t kRowTaskElements = 1 << 15;

// kl[r]: the row's KL in double; agree[r]: whether the first index of the row's maximum (numpy's
// argmax: the first NaN where there is one) is the same in base and candidate. Rows run on
// parallel_for in tasks of about task_elements (whole blocks of 16 rows); each row's value
// depends only on the row (not on the thread count or the task size).
void ComputeRowKL(const RowProblem& problem, double* kl, bool* agree,
                  const ParallelFor& parallel_for, int64_t task_elements = kRowTaskElements);

// The KL from the sums of row_kl.h: A = sum w, C = sum w u, G = sum w g(u), R = the candidate's
// mass where w = 0; NaN where the identity is ill-conditioned (E_P[e^u] < 1e-6).
double KLFromSums(double a, double c, double g, double r);

// One row in float64 throughout (the reference path).
double RowKLDouble(const float* base, const float* candidate, int64_t classes, RowKind kind,
                   float temperature);

// numpy's argmax of one row: the first maximum, or the first NaN.
int64_t RowArgMax(const float* row, int64_t classes);

}  // namespace kldiv

#endif  // KLDIV_CORE_ROW_KL_H_
