// kernel.cc: kernel creation (attributes and static checks) and compute of the KLDivLoss ops.
#include "kernel.h"

#include <vector>

namespace kldiv {
namespace ort {
namespace {

constexpr struct {
  DType dtype;
  ONNXTensorElementDataType onnx;
} kTypes[] = {{DType::kFloat32, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
              {DType::kFloat16, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16},
              {DType::kBFloat16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16}};

}  // namespace

ONNXTensorElementDataType OnnxType(DType t) {
  for (const auto& entry : kTypes) {
    if (entry.dtype == t) return entry.onnx;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

bool DTypeOf(ONNXTensorElementDataType t, DType* out) {
  for (const auto& entry : kTypes) {
    if (entry.onnx == t) {
      *out = entry.dtype;
      return true;
    }
  }
  return false;
}

std::string ElementTypeName(ONNXTensorElementDataType t) {
  DType dtype;
  if (DTypeOf(t, &dtype)) return DTypeName(dtype);
  return "ONNX element type " + std::to_string(static_cast<int>(t));
}

OrtStatusPtr KLDivKernel::ComputeV2(OrtKernelContext* context) noexcept {
  return Guarded(Ort::GetApi(), prefix_, [&]() -> OrtStatusPtr {
    Ort::KernelContext ctx(context);
    if (ctx.GetInputCount() != 2) {
      return Error(ORT_INVALID_ARGUMENT,
                   "expects 2 inputs (input, target), got " + std::to_string(ctx.GetInputCount()));
    }
    Ort::ConstValue x = ctx.GetInput(0);
    Ort::ConstValue t = ctx.GetInput(1);
    const auto x_info = x.GetTensorTypeAndShapeInfo();
    const auto t_info = t.GetTensorTypeAndShapeInfo();
    const ONNXTensorElementDataType want = OnnxType(dtype_);
    if (x_info.GetElementType() != want || t_info.GetElementType() != want) {
      return Error(ORT_INVALID_ARGUMENT, "input is " + ElementTypeName(x_info.GetElementType()) +
                                             " and target is " +
                                             ElementTypeName(t_info.GetElementType()) +
                                             ": both must be " + DTypeName(dtype_));
    }
    Problem problem;
    problem.dtype = dtype_;
    problem.reduction = config_.reduction;
    problem.log_target = config_.log_target;
    problem.x_shape = x_info.GetShape();
    problem.t_shape = t_info.GetShape();
    BroadcastPlan plan;
    const std::string error = MakeBroadcastPlan(problem.x_shape, problem.t_shape, &plan);
    if (!error.empty()) return Error(ORT_INVALID_ARGUMENT, error);
    problem.x = x.GetTensorRawData();
    problem.t = t.GetTensorRawData();
    const std::vector<int64_t> out_shape = OutputShape(plan, config_.reduction);
    Ort::UnownedValue out = ctx.GetOutput(0, out_shape.data(), out_shape.size());
    void* out_data = out.GetTensorMutableRawData();

    OrtStatus* pool_status = nullptr;
    Compute(problem, plan, out_data, SessionPool(context, &pool_status));
    if (pool_status != nullptr) {
      return Error(ORT_FAIL, "thread pool: " + TakeMessage(Ort::GetApi(), pool_status));
    }
    return nullptr;
  });
}

std::string KLDivOp::Check(const OrtApi& api, const OrtKernelInfo* info, Config* config) const {
  *config = generic_ ? Config{} : fixed_;
  std::string error = ReadConfig(api, info, !generic_, config);
  if (!error.empty()) return error;

  // Static types and shapes: reject pairs of known dims that cannot broadcast (unknown are -1).
  Ort::ConstKernelInfo kinfo(info);
  if (kinfo.GetInputCount() != 2) {
    return "expects 2 inputs (input, target), got " + std::to_string(kinfo.GetInputCount());
  }
  std::vector<int64_t> shapes[2];
  for (size_t i = 0; i < 2; ++i) {
    const std::string role = i == 0 ? "input" : "target";
    Ort::TypeInfo type = kinfo.GetInputTypeInfo(i);
    if (type.GetONNXType() != ONNX_TYPE_TENSOR) return role + " must be a tensor";
    auto tensor = type.GetTensorTypeAndShapeInfo();
    if (tensor.GetElementType() != OnnxType(dtype_)) {
      return role + " is " + ElementTypeName(tensor.GetElementType()) + ", expected " +
             DTypeName(dtype_);
    }
    shapes[i] = tensor.GetShape();
  }
  return CheckBroadcastable(shapes[0], shapes[1]);
}

OrtStatusPtr KLDivOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                     void** kernel) const noexcept {
  return Guarded(api, name_, [&]() -> OrtStatusPtr {
    const std::string prefix = MessagePrefix(api, info, name_);
    Config config;
    const std::string error = Check(api, info, &config);
    if (!error.empty()) return Status(api, ORT_INVALID_ARGUMENT, prefix, error);
    *kernel = new KLDivKernel(prefix, dtype_, config);
    return nullptr;
  });
}

}  // namespace ort
}  // namespace kldiv
