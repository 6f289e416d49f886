// bench_core.cc: time per element of the core's loops on one thread, inputs in cache (no
// onnxruntime). Usage: kldiv_bench_core [elements=262144] [repeats=200] [target]
// Prints one line per (dtype, reduction, log_target): the best of `repeats` runs in ns/element.
// Under callgrind (valgrind --tool=callgrind) use few repeats: instruction counts per element
// are repeatable on a busy machine where times are not.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kldiv_core.h"

namespace {

using kldiv::DType;
using kldiv::Reduction;

std::vector<uint16_t> To16(DType dtype, const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    r[i] = dtype == DType::kFloat16 ? kldiv::FloatToHalf(v[i]) : kldiv::FloatToBFloat16(v[i]);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : (1 << 18);
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 200;
  const std::string only_dtype = argc > 4 ? argv[4] : "";
  const std::string only_reduction = argc > 5 ? argv[5] : "";
  if (argc > 3 && std::string(argv[3]) != "best" && !kldiv::SetTarget(argv[3])) {
    std::fprintf(stderr, "target %s not supported here\n", argv[3]);
    return 2;
  }
  // log_softmax-like input, softmax-like target with a few zeros (as the Python bench samples).
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> unit(1e-3f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n)), t(x.size()), lt(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = std::log(unit(gen));
    t[i] = i % 97 == 0 ? 0.0f : unit(gen) / 1000.0f;
    lt[i] = std::log(t[i] + 1e-6f);
  }
  std::vector<float> out(x.size());
  std::printf("target %s, %lld elements, best of %d\n", kldiv::ActiveTarget(),
              static_cast<long long>(n), repeats);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    if (!only_dtype.empty() && only_dtype != kldiv::DTypeName(dtype)) continue;
    const auto x16 = To16(dtype, x), t16 = To16(dtype, t), lt16 = To16(dtype, lt);
    for (Reduction r : {Reduction::kSum, Reduction::kNone}) {
      if (!only_reduction.empty() && only_reduction != kldiv::ReductionName(r)) continue;
      for (bool log_target : {false, true}) {
        kldiv::Problem p;
        p.dtype = dtype;
        p.reduction = r;
        p.log_target = log_target;
        const bool f32 = dtype == DType::kFloat32;
        p.x = f32 ? static_cast<const void*>(x.data()) : x16.data();
        p.t = f32 ? static_cast<const void*>((log_target ? lt : t).data())
                  : (log_target ? lt16 : t16).data();
        p.x_shape = {n};
        p.t_shape = {n};
        kldiv::BroadcastPlan plan;
        kldiv::MakeBroadcastPlan(p.x_shape, p.t_shape, &plan);
        double best = 1e30;
        for (int k = 0; k < repeats; ++k) {
          const auto start = std::chrono::steady_clock::now();
          kldiv::Compute(p, plan, out.data(), kldiv::SerialFor);
          const std::chrono::duration<double, std::nano> d =
              std::chrono::steady_clock::now() - start;
          best = std::min(best, d.count());
        }
        std::printf("%-8s %-4s %-10s %.3f ns/element\n", kldiv::DTypeName(dtype),
                    kldiv::ReductionName(r), log_target ? "log_target" : "", best / n);
      }
    }
  }
  return 0;
}
