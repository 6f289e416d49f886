// test_row_kl.cc: the per-row KL (row_kl.h) against a long-double reference: accuracy from
// KL ~ 1e-10 to ~10 for every kind, the special values, numpy's argmax, thread independence.
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "harness.h"
#include "row_kl.h"

namespace kldiv_test {
namespace {

using kldiv::RowKind;

// KL of one row in long double, the textbook way (right to ~1e-19 * |log p|).
long double RefRowKL(const float* b, const float* c, int64_t n, RowKind kind, float temperature) {
  const long double scale = kind == RowKind::kLogits ? 1.0L / temperature : 1.0L;
  const auto log_probs = [&](const float* z, std::vector<long double>* out) {
    out->resize(static_cast<size_t>(n));
    if (kind == RowKind::kProbs) {
      long double sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += z[j];
      for (int64_t j = 0; j < n; ++j) (*out)[j] = std::log(z[j] / sum);
      return;
    }
    long double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = std::fmax(m, z[j] * scale);
    long double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(z[j] * scale - m);
    for (int64_t j = 0; j < n; ++j) (*out)[j] = z[j] * scale - m - std::log(sum);
  };
  std::vector<long double> lp, lq;
  log_probs(b, &lp);
  log_probs(c, &lq);
  long double kl = 0;
  for (int64_t j = 0; j < n; ++j) {
    const long double p = std::exp(lp[j]);
    if (p == 0 && !std::isnan(lq[j])) continue;
    kl += p * (lp[j] - lq[j]);
  }
  return kl;
}

struct Rows {
  int64_t rows, classes;
  std::vector<float> b, c;
};

// Rows of logits (scale 3) and a copy perturbed by `noise`, as the kind wants them.
Rows MakeRows(int64_t rows, int64_t classes, double noise, RowKind kind, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  Rows r{rows, classes, {}, {}};
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<double> zb(static_cast<size_t>(classes)), zc(zb.size());
    for (auto k = 0u; k < zb.size(); ++k) {
      zb[k] = 3.0 * normal(gen);
      zc[k] = zb[k] + noise * normal(gen);
    }
    for (auto* z : {&zb, &zc}) {
      if (kind == RowKind::kLogits) continue;
      double m = -INFINITY, sum = 0;
      for (double v : *z) m = std::fmax(m, v);
      for (double v : *z) sum += std::exp(v - m);
      for (double& v : *z)
        v = kind == RowKind::kProbs ? std::exp(v - m) / sum : v - m - std::log(sum);
    }
    for (auto k = 0u; k < zb.size(); ++k) {
      r.b.push_back(static_cast<float>(zb[k]));
      r.c.push_back(static_cast<float>(zc[k]));
    }
  }
  return r;
}

void RunRows(const Rows& r, RowKind kind, float temperature, const kldiv::ParallelFor& pf,
             std::vector<double>* kl, std::vector<char>* agree) {
  kldiv::RowProblem p;
  p.base = r.b.data();
  p.candidate = r.c.data();
  p.rows = r.rows;
  p.classes = r.classes;
  p.kind = kind;
  p.temperature = temperature;
  kl->assign(static_cast<size_t>(r.rows), -1.0);
  std::unique_ptr<bool[]> a(new bool[static_cast<size_t>(r.rows)]);
  kldiv::ComputeRowKL(p, kl->data(), a.get(), pf);
  agree->assign(a.get(), a.get() + r.rows);
}

// numpy's argmax in long double terms: first maximum, first NaN.
int64_t RefArgMax(const float* z, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (std::isnan(z[j])) return j;
    if (z[j] > z[best]) best = j;
  }
  return best;
}

std::string Label(const std::string& target, RowKind kind, int64_t classes, double noise) {
  return target + " " + kldiv::RowKindName(kind) + " classes " + std::to_string(classes) +
         " noise " + std::to_string(noise);
}

}  // namespace

void TestRowKL(const std::string& target) {
  // Accuracy: relative error of each row within 2e-6 of the long-double value, from
  // near-identical rows (KL ~ 1e-10) to unrelated ones. Short rows (below 128 classes) are taken
  // a tile of 8 or 16 rows and classes at a time: a partial tile, a full one, and up to eight, with
  // a partial block of rows at the end.
  for (RowKind kind : {RowKind::kLogits, RowKind::kLogProbs, RowKind::kProbs}) {
    for (int64_t classes : {1, 7, 8, 10, 16, 17, 33, 39, 100, 127, 128, 1000, 32001}) {
      for (double noise : {1e-5, 1e-3, 1e-1, 3.0}) {
        const Rows r = MakeRows(classes > 1000 ? 3 : 37, classes, noise, kind, 7);
        const float temperature = kind == RowKind::kLogits ? 2.5f : 1.0f;
        std::vector<double> kl;
        std::vector<char> agree;
        RunRows(r, kind, temperature, Threads(2), &kl, &agree);
        double worst = 0;
        bool argmax_ok = true;
        for (int64_t i = 0; i < r.rows; ++i) {
          const float* b = r.b.data() + i * classes;
          const float* c = r.c.data() + i * classes;
          const long double want = RefRowKL(b, c, classes, kind, temperature);
          // The reference itself is good to ~1e-19 * |log p|: 1e-18 absolute.
          const double err =
              static_cast<double>(std::fabs(kl[i] - want) / (std::fabs(want) + 5e-13L));
          worst = std::fmax(worst, classes == 1 ? std::fabs(kl[i]) : err);
          argmax_ok =
              argmax_ok && (agree[i] != 0) == (RefArgMax(b, classes) == RefArgMax(c, classes));
        }
        Check(worst <= 2e-6,
              Label(target, kind, classes, noise) + " relative error " + std::to_string(worst));
        Check(argmax_ok, Label(target, kind, classes, noise) + " top-1 agreement");
      }
    }
  }

  // Special values, one row each: 20 classes (rows taken a block of rows at a time) and 200
  // (one row at a time: a full vector loop and a tail).
  for (const int64_t n : {int64_t{20}, int64_t{200}}) {
    const std::string at = target + " n=" + std::to_string(n);
    const auto one = [&](std::vector<float> b, std::vector<float> c, RowKind kind) {
      Rows r{1, n, std::move(b), std::move(c)};
      std::vector<double> kl;
      std::vector<char> agree;
      RunRows(r, kind, 1.0f, kSerial, &kl, &agree);
      return std::make_pair(kl[0], agree[0] != 0);
    };
    std::vector<float> base(n), cand(n);
    for (int64_t j = 0; j < n; ++j) {
      base[j] = std::sin(static_cast<float>(j));
      cand[j] = std::cos(static_cast<float>(j));
    }
    const auto ref = [&](const std::vector<float>& b, const std::vector<float>& c, RowKind kind) {
      return static_cast<double>(RefRowKL(b.data(), c.data(), n, kind, 1.0f));
    };
    const auto near = [](double got, double want) {
      return std::fabs(got - want) <= 2e-6 * std::fabs(want) || got == want;
    };
    Check(one(base, base, RowKind::kLogits).first == 0.0, at + " identical rows give 0");
    auto b = base, c = cand;
    b[3] = -kInf;  // P = 0 there: 0 log 0 = 0
    Check(near(one(b, c, RowKind::kLogits).first, ref(b, c, RowKind::kLogits)),
          at + " -inf base logit");
    c[3] = -kInf;  // both zero there
    Check(near(one(b, c, RowKind::kLogits).first, ref(b, c, RowKind::kLogits)),
          at + " -inf in both at the same class");
    b = base, c = cand;
    c[5] = -kInf;  // Q = 0 where P > 0
    Check(one(b, c, RowKind::kLogits).first == kInf, at + " Q = 0 where P > 0 gives +inf");
    c = cand;
    c[17] = kNaN;
    auto nan = one(b, c, RowKind::kLogits);
    Check(std::isnan(nan.first) && !nan.second, at + " NaN candidate: NaN, argmax at the NaN");
    b[17] = kNaN;
    Check(one(b, c, RowKind::kLogits).second, at + " NaN at the same class: top-1 agrees");
    b = base, c = cand;
    b[0] = kInf;
    Check(std::isnan(one(b, c, RowKind::kLogits).first), at + " +inf base logit gives NaN");
    b = base, c = cand;
    c[2] = b[2] + 100.0f;  // e^u overflows float: the float64 path
    Check(near(one(b, c, RowKind::kLogits).first, ref(b, c, RowKind::kLogits)),
          at + " log-ratio of 100");
    for (int64_t j = 0; j < n; ++j) c[j] = b[j] - 60.0f * static_cast<float>(j % 2);
    Check(near(one(b, c, RowKind::kLogits).first, ref(b, c, RowKind::kLogits)),
          at + " half the classes 60 lower");
    std::vector<float> p(n), q(n);
    for (int64_t j = 0; j < n; ++j) {
      p[j] = j % 4 == 0 ? 0.0f : 1.0f + static_cast<float>(j);
      q[j] = 2.0f + static_cast<float>(j % 3);
    }
    Check(near(one(p, q, RowKind::kProbs).first, ref(p, q, RowKind::kProbs)),
          at + " probs with zeros in the base");
    q[1] = 0.0f;
    Check(one(p, q, RowKind::kProbs).first == kInf, at + " probs: Q = 0 where P > 0");
    q[1] = -1.0f;
    Check(std::isnan(one(p, q, RowKind::kProbs).first), at + " probs: negative candidate");
    std::vector<float> ties(n, 1.0f), ties2(n, 1.0f);
    ties2[0] = 0.5f;
    Check(one(ties, ties, RowKind::kLogits).second && !one(ties, ties2, RowKind::kLogits).second,
          at + " ties: the first maximum");
  }

  // Bitwise identical for any thread count.
  const Rows r = MakeRows(300, 1500, 1e-2, RowKind::kLogits, 9);
  std::vector<double> serial, other;
  std::vector<char> agree;
  RunRows(r, RowKind::kLogits, 1.0f, kSerial, &serial, &agree);
  bool same = true;
  for (int threads : {2, 3, 7}) {
    RunRows(r, RowKind::kLogits, 1.0f, Threads(threads, threads == 3), &other, &agree);
    same = same && other == serial;
  }
  Check(same, target + " row KL bitwise identical for 1, 2, 3, 7 threads");
}

}  // namespace kldiv_test
