// kldiv_aot.cc: KLDivLoss for MindSpore's ops.Custom(func_type="aot") on CPU, over the numeric
// core (kldiv_core.h). One extern "C" entry point per variant, named like the ONNX ops
// (KLDivLoss_none ... KLDivLoss_batchmean_logtarget), with MindSpore's aot signature:
//   int f(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
//         void* stream, void* extra)
// params: input, target, loss. dtypes: "float32" (or "float"), "float16", "bfloat16", the
// same for all three. Returns 0, or non-zero after printing one line on stderr that names the
// op and the values (MindSpore then raises); no exception leaves the library.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "kldiv_core.h"
#include "thread_pool.h"

namespace {

bool ParseDType(const char* name, kldiv::DType* out) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "float32") == 0 || std::strcmp(name, "float") == 0) {
    *out = kldiv::DType::kFloat32;
  } else if (std::strcmp(name, "float16") == 0) {
    *out = kldiv::DType::kFloat16;
  } else if (std::strcmp(name, "bfloat16") == 0) {
    *out = kldiv::DType::kBFloat16;
  } else {
    return false;
  }
  return true;
}

int Fail(const char* op, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", op, message.c_str());
  return 1;
}

std::vector<int64_t> ShapeOf(int i, const int* ndims, int64_t** shapes) {
  return std::vector<int64_t>(shapes[i], shapes[i] + ndims[i]);
}

int Run(const char* op, kldiv::Reduction reduction, bool log_target, int nparam, void** params,
        int* ndims, int64_t** shapes, const char** dtypes) noexcept {
  if (nparam != 3) {
    return Fail(op, "expects 2 inputs and 1 output, got " + std::to_string(nparam) + " params");
  }
  kldiv::Problem problem;
  problem.reduction = reduction;
  problem.log_target = log_target;
  kldiv::DType types[3];
  for (int i = 0; i < 3; ++i) {
    if (!ParseDType(dtypes[i], &types[i])) {
      return Fail(op, std::string("unsupported dtype '") + (dtypes[i] ? dtypes[i] : "?") +
                          "' (float32, float16 or bfloat16)");
    }
  }
  if (types[1] != types[0] || types[2] != types[0]) {
    return Fail(op, std::string("input, target and loss dtypes differ: ") + dtypes[0] + ", " +
                        dtypes[1] + ", " + dtypes[2]);
  }
  problem.dtype = types[0];
  try {
    problem.x_shape = ShapeOf(0, ndims, shapes);
    problem.t_shape = ShapeOf(1, ndims, shapes);
    kldiv::BroadcastPlan plan;
    const std::string error = kldiv::MakeBroadcastPlan(problem.x_shape, problem.t_shape, &plan);
    if (!error.empty()) return Fail(op, error);
    const std::vector<int64_t> want = kldiv::OutputShape(plan, reduction);
    const std::vector<int64_t> got = ShapeOf(2, ndims, shapes);
    if (got != want) {
      return Fail(op, "output shape " + kldiv::ShapeToString(got) + ", expected " +
                          kldiv::ShapeToString(want));
    }
    problem.x = params[0];
    problem.t = params[1];
    const int cores = kldiv::CoreCount();
    const kldiv::ParallelFor pool = [cores](std::size_t n, void (*fn)(void*, std::size_t),
                                            void* data) {
      kldiv::ProcessPool().Run(n, fn, data, cores);
    };
    kldiv::Compute(problem, plan, params[2], pool);
  } catch (const std::bad_alloc&) {
    return Fail(op, "out of memory");
  } catch (...) {
    return Fail(op, "unexpected error");
  }
  return 0;
}

}  // namespace

#define KLDIV_AOT_ENTRY(NAME, REDUCTION, LOG_TARGET)                                          \
  extern "C" __attribute__((visibility("default"))) int NAME(                                 \
      int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,           \
      void* /*stream*/, void* /*extra*/) {                                                    \
    return Run(#NAME, kldiv::Reduction::REDUCTION, LOG_TARGET, nparam, params, ndims, shapes, \
               dtypes);                                                                       \
  }

KLDIV_AOT_ENTRY(KLDivLoss_none, kNone, false)
KLDIV_AOT_ENTRY(KLDivLoss_mean, kMean, false)
KLDIV_AOT_ENTRY(KLDivLoss_sum, kSum, false)
KLDIV_AOT_ENTRY(KLDivLoss_batchmean, kBatchMean, false)
KLDIV_AOT_ENTRY(KLDivLoss_none_logtarget, kNone, true)
KLDIV_AOT_ENTRY(KLDivLoss_mean_logtarget, kMean, true)
KLDIV_AOT_ENTRY(KLDivLoss_sum_logtarget, kSum, true)
KLDIV_AOT_ENTRY(KLDivLoss_batchmean_logtarget, kBatchMean, true)
