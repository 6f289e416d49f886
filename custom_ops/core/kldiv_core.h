// kldiv_core.h: the numeric core of the fused KLDivLoss kernel. Plain C++17; knows nothing of
// onnxruntime (nor of the environment), so it is unit-tested without a session
// (custom_ops/tests/). Implemented one concern per file: names.cc, broadcast.cc, convert.cc,
// dispatch.cc (target selection), scalar_kernels.cc and simd_tables.cc (the loops), driver.cc.
//
// Semantics (pointwise on the numpy broadcast of input x and target t, float32 math):
//   log_target = false: L = 0 where t == 0 (whatever x is), else t * (log(t) - x)
//   log_target = true:  L = exp(t) * (t - x)
// Reductions: none (broadcast shape), sum, mean (sum / broadcast element count),
// batchmean (sum / x_shape[0]; the plain sum for a 0-d x). Sums accumulate in double, in fixed
// blocks summed in block order, so results do not depend on the number of threads.
#ifndef KLDIV_CORE_KLDIV_CORE_H_
#define KLDIV_CORE_KLDIV_CORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kldiv {

enum class Reduction { kNone, kMean, kSum, kBatchMean };
enum class DType { kFloat32, kFloat16, kBFloat16 };

// "none", "mean", "sum", "batchmean"; false if `name` is none of them.
bool ParseReduction(const std::string& name, Reduction* out);
const char* ReductionName(Reduction r);
const char* DTypeName(DType t);
std::size_t DTypeSize(DType t);

// "[2, 3, 4]" (and "[]" for a 0-d shape).
std::string ShapeToString(const std::vector<int64_t>& shape);

constexpr int kMaxRank = 64;  // numpy's limit (NPY_MAXDIMS)

// How the two operands map onto the broadcast output, with dims of size 1 dropped and runs of
// dims that index both operands alike merged. dims[0] is the outermost dim. Strides are in
// elements; a stride of 0 means the operand is broadcast along that dim.
struct BroadcastPlan {
  std::vector<int64_t> out_shape;  // numpy broadcast of the two shapes
  int64_t count = 0;               // number of output elements (product of out_shape)
  std::vector<int64_t> dims;       // collapsed dims (empty when count <= 1)
  std::vector<int64_t> x_strides;
  std::vector<int64_t> t_strides;
  int64_t x_count = 0;  // elements of x (for bounds checks in tests)
  int64_t t_count = 0;
};

// Builds the plan. Returns "" on success, otherwise a message (without the op name) such as
// "input shape [2, 3] and target shape [4] are not broadcastable (dim -1: 3 vs 4)".
std::string MakeBroadcastPlan(const std::vector<int64_t>& x_shape,
                              const std::vector<int64_t>& t_shape, BroadcastPlan* plan);

// The same broadcast rule and message for shapes known before the run, where a dim < 0 is
// unknown (it passes, and prints as "?"): "" when the known dims can broadcast.
std::string CheckBroadcastable(const std::vector<int64_t>& x_shape,
                               const std::vector<int64_t>& t_shape);

// Runs fn(data, i) for every i in [0, n), in any order and on any threads, and returns when all
// calls have returned. The ORT layer passes KernelContext_ParallelFor; tests pass serial or
// std::thread loops.
using ParallelFor = std::function<void(std::size_t n, void (*fn)(void*, std::size_t), void* data)>;

// Runs every call inline, in order.
void SerialFor(std::size_t n, void (*fn)(void*, std::size_t), void* data);

struct Problem {
  DType dtype = DType::kFloat32;
  Reduction reduction = Reduction::kMean;
  bool log_target = false;
  const void* x = nullptr;  // x_count elements of dtype, row-major, laid out as x_shape
  const void* t = nullptr;
  std::vector<int64_t> x_shape;
  std::vector<int64_t> t_shape;
};

// Shape of the output: the broadcast shape for kNone, {} (0-d) otherwise.
std::vector<int64_t> OutputShape(const BroadcastPlan& plan, Reduction reduction);

// Computes the loss into `out` (plan.count elements for kNone, one element otherwise, of
// problem.dtype). `plan` must come from MakeBroadcastPlan(problem.x_shape, problem.t_shape).
// Does not throw except std::bad_alloc.
void Compute(const Problem& problem, const BroadcastPlan& plan, void* out,
             const ParallelFor& parallel_for);

// The loss sum in double before division and rounding (for tests of the accumulation).
double ComputeSum(const Problem& problem, const BroadcastPlan& plan,
                  const ParallelFor& parallel_for);

// Elements per reduction block: fixed, so the partial sums and their order depend only on the
// problem, never on the thread count.
constexpr int64_t kBlockElements = 1 << 14;

// Scalar conversions (round to nearest even; NaN stays NaN).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);
// A reduction's double result rounded once to the 16-bit dtype.
uint16_t DoubleToHalf(double d);
uint16_t DoubleToBFloat16(double d);

// SIMD target selection. Targets: "avx3" (AVX-512 F/VL/DQ/BW), "avx2" (AVX2+FMA+F16C) on
// x86-64, "sve" (SVE, any vector length) and "neon" (ASIMD) on aarch64, "scalar" (any CPU).
// The best supported one is active from the start.
std::vector<std::string> KnownTargets();  // every name, best first: avx3, avx2, scalar (aarch64:
                                          // sve, neon, scalar)
std::vector<std::string> SupportedTargets();  // best first, always ends with "scalar"
const char* ActiveTarget();
bool SetTarget(const std::string& name);  // false if not supported here; for tests
// Caps the choice: activates the best supported target at or below `cap` (one of
// KnownTargets()), e.g. "avx2" to run the AVX2 path on an AVX-512 machine. Returns "" or, for
// an unknown name, a message naming it and the known names (the active target is unchanged).
// The ORT layer calls it with the value of KLDIV_ONNX_ISA.
std::string CapTarget(const std::string& cap);

}  // namespace kldiv

#endif  // KLDIV_CORE_KLDIV_CORE_H_
