// row_kl_op.cc: kernel creation (attributes) and compute of the KLDivRows op.
#include "row_kl_op.h"

#include <exception>
#include <vector>

#include "kernel.h"

namespace kldiv {
namespace ort {

OrtStatusPtr RowKLKernel::Error(OrtErrorCode code, const std::string& message) const {
  return Ort::GetApi().CreateStatus(code, (prefix_ + ": " + message).c_str());
}

OrtStatusPtr RowKLKernel::ComputeV2(OrtKernelContext* context) noexcept {
  try {
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
    const OrtApi& api = Ort::GetApi();
    const ParallelFor parallel_for = [&](std::size_t n, void (*fn)(void*, std::size_t),
                                         void* data) {
      if (pool_status != nullptr) return;
      pool_status = api.KernelContext_ParallelFor(context, fn, n, 0, data);
    };
    ComputeRowKL(problem, kl, agree, parallel_for);
    if (pool_status != nullptr) {
      std::string message = api.GetErrorMessage(pool_status);
      api.ReleaseStatus(pool_status);
      return Error(ORT_FAIL, "thread pool: " + message);
    }
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Error(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Error(ORT_FAIL, e.what());
  } catch (...) {
    return Error(ORT_FAIL, "unknown error");
  }
}

OrtStatusPtr RowKLOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                     void** kernel) const noexcept {
  try {
    std::string prefix = kRowKLOp;
    const std::string node = NodeName(api, info);
    if (!node.empty()) prefix += " (node '" + node + "')";
    RowConfig config;
    const std::string error = ReadRowConfig(api, info, &config);
    if (!error.empty()) {
      return api.CreateStatus(ORT_INVALID_ARGUMENT, (prefix + ": " + error).c_str());
    }
    *kernel = new RowKLKernel(prefix, config);
    return nullptr;
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, (std::string(kRowKLOp) + ": " + e.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, (std::string(kRowKLOp) + ": unknown error").c_str());
  }
}

}  // namespace ort
}  // namespace kldiv
