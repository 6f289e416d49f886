// row_kl_op.cc: kernel creation (attributes) and compute of the KLDivRows op.
#include "row_kl_op.h"

#include <vector>

#include "kernel.h"

namespace kldiv {
namespace ort {

OrtStatusPtr RowKLKernel::ComputeV2(OrtKernelContext* context) noexcept {
  return Guarded(Ort::GetApi(), prefix_, [&]() -> OrtStatusPtr {
    Ort::KernelContext ctx(context);
    if (ctx.GetInputCount() != 2) {
      return Error(ORT_INVALID_ARGUMENT, "expects 2 inputs (base, candidate), got " +
                                             std::to_string(ctx.GetInputCount()));
    }
    Ort::ConstValue base = ctx.GetInput(0);
    Ort::ConstValue candidate = ctx.GetInput(1);
    const auto b_info = base.GetTensorTypeAndShapeInfo();
    const auto c_info = candidate.GetTensorTypeAndShapeInfo();
    if (b_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
        c_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      return Error(ORT_INVALID_ARGUMENT,
                   "base is " + ElementTypeName(b_info.GetElementType()) + " and candidate is " +
                       ElementTypeName(c_info.GetElementType()) + ": both must be float32");
    }
    const std::vector<int64_t> shape = b_info.GetShape();
    if (shape != c_info.GetShape()) {
      return Error(ORT_INVALID_ARGUMENT, "base shape " + ShapeToString(shape) +
                                             " and candidate shape " +
                                             ShapeToString(c_info.GetShape()) + " differ");
    }
    if (shape.empty()) {
      return Error(ORT_INVALID_ARGUMENT, "base and candidate are 0-d: they need a class axis");
    }
    RowProblem problem;
    problem.base = base.GetTensorData<float>();
    problem.candidate = candidate.GetTensorData<float>();
    problem.classes = shape.back();
    problem.rows = 1;
    for (std::size_t k = 0; k + 1 < shape.size(); ++k) problem.rows *= shape[k];
    problem.kind = config_.kind;
    problem.temperature = config_.temperature;
    const std::string error = CheckRowProblem(problem);
    if (!error.empty()) return Error(ORT_INVALID_ARGUMENT, error);
    const std::vector<int64_t> out_shape(shape.begin(), shape.end() - 1);
    double* kl =
        ctx.GetOutput(0, out_shape.data(), out_shape.size()).GetTensorMutableData<double>();
    bool* agree = ctx.GetOutput(1, out_shape.data(), out_shape.size()).GetTensorMutableData<bool>();

    OrtStatus* pool_status = nullptr;
    ComputeRowKL(problem, kl, agree, SessionPool(context, &pool_status));
    if (pool_status != nullptr) {
      return Error(ORT_FAIL, "thread pool: " + TakeMessage(Ort::GetApi(), pool_status));
    }
    return nullptr;
  });
}

OrtStatusPtr RowKLOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                     void** kernel) const noexcept {
  return Guarded(api, kRowKLOp, [&]() -> OrtStatusPtr {
    const std::string prefix = MessagePrefix(api, info, kRowKLOp);
    RowConfig config;
    const std::string error = ReadRowConfig(api, info, &config);
    if (!error.empty()) return Status(api, ORT_INVALID_ARGUMENT, prefix, error);
    *kernel = new RowKLKernel(prefix, config);
    return nullptr;
  });
}

}  // namespace ort
}  // namespace kldiv
