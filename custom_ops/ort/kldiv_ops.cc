// kldiv_ops.cc: onnxruntime kernels for the kldiv_onnx domain.
//
// Op names (mirrors kldiv_onnx/_contract.py):
//   "KLDivLoss" with attributes reduction (string, default "mean") and log_target (int, 0/1,
//   default 0), and eight variants whose configuration is their name:
//   "KLDivLoss_none", "KLDivLoss_mean", "KLDivLoss_sum", "KLDivLoss_batchmean", and the same with
//   the suffix "_logtarget". Each is registered for float32, float16 and bfloat16 (one op per
//   dtype, same name: onnxruntime picks the kernel by the node's input types).
// Errors travel as OrtStatus (CustomOpBase<..., WithStatus=true>); no exception leaves a callback.
#include "kldiv_ops.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <iterator>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kldiv_core.h"

namespace kldiv {
namespace ort {
namespace {

ONNXTensorElementDataType OnnxType(DType t) {
  switch (t) {
    case DType::kFloat32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFloat16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::kBFloat16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

const char* OnnxTypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    default:
      return "an unsupported type";
  }
}

struct Config {
  Reduction reduction = Reduction::kMean;
  bool log_target = false;
};

// Takes ownership of `status` and returns its message.
std::string TakeMessage(const OrtApi& api, OrtStatus* status) {
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  return message;
}

enum class Attr { kAbsent, kPresent, kWrongType };

// onnxruntime has no "has attribute" call: an attribute that fails to read as the expected type
// but reads as another is present with the wrong type; one that reads as nothing is absent.
Attr AttributeOfOtherType(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  int64_t i = 0;
  float f = 0.0f;
  size_t size = 0;
  OrtStatus* s = api.KernelInfoGetAttribute_int64(info, name, &i);
  if (s == nullptr) return Attr::kWrongType;
  api.ReleaseStatus(s);
  s = api.KernelInfoGetAttribute_float(info, name, &f);
  if (s == nullptr) return Attr::kWrongType;
  api.ReleaseStatus(s);
  s = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (s == nullptr) return Attr::kWrongType;
  api.ReleaseStatus(s);
  return Attr::kAbsent;
}

Attr ReadString(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  OrtStatus* s = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (s != nullptr) {
    api.ReleaseStatus(s);
    int64_t i = 0;
    float f = 0.0f;
    if ((s = api.KernelInfoGetAttribute_int64(info, name, &i)) == nullptr) return Attr::kWrongType;
    api.ReleaseStatus(s);
    if ((s = api.KernelInfoGetAttribute_float(info, name, &f)) == nullptr) return Attr::kWrongType;
    api.ReleaseStatus(s);
    return Attr::kAbsent;
  }
  std::string buffer(size + 1, '\0');  // +1: do not rely on the runtime writing a NUL
  size_t written = buffer.size();
  s = api.KernelInfoGetAttribute_string(info, name, &buffer[0], &written);
  if (s != nullptr) {
    api.ReleaseStatus(s);
    return Attr::kWrongType;
  }
  buffer.resize(std::min(written, size));
  buffer.resize(std::strlen(buffer.c_str()));
  *out = buffer;
  return Attr::kPresent;
}

Attr ReadInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t* out) {
  OrtStatus* s = api.KernelInfoGetAttribute_int64(info, name, out);
  if (s == nullptr) return Attr::kPresent;
  api.ReleaseStatus(s);
  return AttributeOfOtherType(api, info, name);
}

std::string NodeName(const OrtApi& api, const OrtKernelInfo* info) {
  size_t size = 0;
  OrtStatus* s = api.KernelInfo_GetNodeName(info, nullptr, &size);
  if (s != nullptr) {
    api.ReleaseStatus(s);
    return "";
  }
  std::string buffer(size + 1, '\0');
  size_t written = buffer.size();
  s = api.KernelInfo_GetNodeName(info, &buffer[0], &written);
  if (s != nullptr) {
    api.ReleaseStatus(s);
    return "";
  }
  buffer.resize(std::strlen(buffer.c_str()));
  return buffer;
}

class KLDivKernel {
 public:
  KLDivKernel(std::string prefix, DType dtype, Config config)
      : prefix_(std::move(prefix)), dtype_(dtype), config_(config) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  OrtStatusPtr Error(OrtErrorCode code, const std::string& message) const {
    return Ort::GetApi().CreateStatus(code, (prefix_ + ": " + message).c_str());
  }

  std::string prefix_;  // op name and node name, the start of every message
  DType dtype_;
  Config config_;
};

struct ParallelForData {
  const OrtApi* api;
  const OrtKernelContext* context;
};

OrtStatusPtr KLDivKernel::ComputeV2(OrtKernelContext* context) noexcept {
  try {
    Ort::KernelContext ctx(context);
    if (ctx.GetInputCount() != 2) {
      return Error(ORT_INVALID_ARGUMENT, "expects 2 inputs (input, target), got " +
                                             std::to_string(ctx.GetInputCount()));
    }
    Ort::ConstValue x = ctx.GetInput(0);
    Ort::ConstValue t = ctx.GetInput(1);
    const auto x_info = x.GetTensorTypeAndShapeInfo();
    const auto t_info = t.GetTensorTypeAndShapeInfo();
    const ONNXTensorElementDataType want = OnnxType(dtype_);
    if (x_info.GetElementType() != want || t_info.GetElementType() != want) {
      return Error(ORT_INVALID_ARGUMENT, std::string("input is ") +
                                             OnnxTypeName(x_info.GetElementType()) +
                                             " and target is " +
                                             OnnxTypeName(t_info.GetElementType()) +
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

    // The session's intra-op pool; with one thread onnxruntime runs the calls inline.
    OrtStatus* pool_status = nullptr;
    const OrtApi& api = Ort::GetApi();
    const ParallelFor parallel_for = [&](std::size_t n, void (*fn)(void*, std::size_t),
                                         void* data) {
      if (pool_status != nullptr) return;
      pool_status = api.KernelContext_ParallelFor(context, fn, n, 0, data);
    };
    Compute(problem, plan, out_data, parallel_for);
    if (pool_status != nullptr) {
      return Error(ORT_FAIL, "thread pool: " + TakeMessage(api, pool_status));
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

class KLDivOp : public Ort::CustomOpBase<KLDivOp, KLDivKernel, true> {
 public:
  // generic: the "KLDivLoss" op, configured by attributes; otherwise `fixed` is the name's.
  KLDivOp(std::string name, DType dtype, bool generic, Config fixed)
      : name_(std::move(name)), dtype_(dtype), generic_(generic), fixed_(fixed) {
    OrtCustomOp::version = kOrtApiVersion;
  }

  const char* GetName() const { return name_.c_str(); }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const { return OnnxType(dtype_); }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return OnnxType(dtype_); }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                              void** kernel) const noexcept;

 private:
  OrtStatusPtr Check(const OrtApi& api, const OrtKernelInfo* info, const std::string& prefix,
                     Config* config) const;

  std::string name_;
  DType dtype_;
  bool generic_;
  Config fixed_;
};

// Reads and validates the attributes (onnxruntime checks none for custom ops) and, where the
// graph knows them, the input types and shapes.
OrtStatusPtr KLDivOp::Check(const OrtApi& api, const OrtKernelInfo* info,
                            const std::string& prefix, Config* config) const {
  const auto fail = [&](const std::string& message) {
    return api.CreateStatus(ORT_INVALID_ARGUMENT, (prefix + ": " + message).c_str());
  };
  *config = generic_ ? Config{} : fixed_;

  std::string reduction;
  switch (ReadString(api, info, "reduction", &reduction)) {
    case Attr::kWrongType:
      return fail("attribute 'reduction' must be a string (one of none, mean, sum, batchmean)");
    case Attr::kPresent: {
      Reduction r;
      if (!ParseReduction(reduction, &r)) {
        return fail("attribute reduction='" + reduction +
                    "' is not one of 'none', 'mean', 'sum', 'batchmean'");
      }
      if (!generic_ && r != fixed_.reduction) {
        return fail("attribute reduction='" + reduction + "' contradicts the op name (reduction '" +
                    ReductionName(fixed_.reduction) + "')");
      }
      config->reduction = r;
      break;
    }
    case Attr::kAbsent:
      break;
  }

  int64_t log_target = 0;
  switch (ReadInt(api, info, "log_target", &log_target)) {
    case Attr::kWrongType:
      return fail("attribute 'log_target' must be an int (0 or 1)");
    case Attr::kPresent:
      if (log_target != 0 && log_target != 1) {
        return fail("attribute log_target=" + std::to_string(log_target) + " must be 0 or 1");
      }
      if (!generic_ && (log_target == 1) != fixed_.log_target) {
        return fail("attribute log_target=" + std::to_string(log_target) +
                    " contradicts the op name (log_target " +
                    std::to_string(fixed_.log_target ? 1 : 0) + ")");
      }
      config->log_target = log_target == 1;
      break;
    case Attr::kAbsent:
      break;
  }

  // Static shapes: reject pairs of known dims that cannot broadcast (unknown dims are -1).
  Ort::ConstKernelInfo kinfo(info);
  if (kinfo.GetInputCount() != 2) {
    return fail("expects 2 inputs (input, target), got " + std::to_string(kinfo.GetInputCount()));
  }
  std::vector<int64_t> shapes[2];
  bool known[2] = {false, false};
  for (size_t i = 0; i < 2; ++i) {
    Ort::TypeInfo type = kinfo.GetInputTypeInfo(i);
    if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
      return fail(std::string(i == 0 ? "input" : "target") + " must be a tensor");
    }
    auto tensor = type.GetTensorTypeAndShapeInfo();
    if (tensor.GetElementType() != OnnxType(dtype_)) {
      return fail(std::string(i == 0 ? "input" : "target") + " is " +
                  OnnxTypeName(tensor.GetElementType()) + ", expected " + DTypeName(dtype_));
    }
    shapes[i] = tensor.GetShape();
    known[i] = true;
  }
  if (known[0] && known[1]) {
    const auto& a = shapes[0];
    const auto& b = shapes[1];
    const size_t rank = std::max(a.size(), b.size());
    for (size_t j = 0; j < rank; ++j) {
      const int64_t da = j < rank - a.size() ? 1 : a[j - (rank - a.size())];
      const int64_t db = j < rank - b.size() ? 1 : b[j - (rank - b.size())];
      if (da >= 0 && db >= 0 && da != db && da != 1 && db != 1) {
        auto printable = [](std::vector<int64_t> s) {
          std::string r = "[";
          for (size_t k = 0; k < s.size(); ++k) {
            r += (k ? ", " : "") + (s[k] < 0 ? std::string("?") : std::to_string(s[k]));
          }
          return r + "]";
        };
        return fail("input shape " + printable(a) + " and target shape " + printable(b) +
                    " are not broadcastable (dim " +
                    std::to_string(static_cast<int64_t>(j) - static_cast<int64_t>(rank)) + ": " +
                    std::to_string(da) + " vs " + std::to_string(db) + ")");
      }
    }
  }
  return nullptr;
}

OrtStatusPtr KLDivOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                     void** kernel) const noexcept {
  try {
    std::string prefix = name_;
    const std::string node = NodeName(api, info);
    if (!node.empty()) prefix += " (node '" + node + "')";
    Config config;
    if (OrtStatusPtr status = Check(api, info, prefix, &config)) return status;
    *kernel = new KLDivKernel(prefix, dtype_, config);
    return nullptr;
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), (name_ + ": " + e.what()).c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, (name_ + ": " + e.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, (name_ + ": unknown error").c_str());
  }
}

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// The op names, as kldiv_onnx/_contract.py writes them (tests check that the two agree).
constexpr const char* kGenericOp = "KLDivLoss";
constexpr struct {
  const char* name;
  Reduction reduction;
  bool log_target;
} kVariants[] = {
    {"KLDivLoss_none", Reduction::kNone, false},
    {"KLDivLoss_mean", Reduction::kMean, false},
    {"KLDivLoss_sum", Reduction::kSum, false},
    {"KLDivLoss_batchmean", Reduction::kBatchMean, false},
    {"KLDivLoss_none_logtarget", Reduction::kNone, true},
    {"KLDivLoss_mean_logtarget", Reduction::kMean, true},
    {"KLDivLoss_sum_logtarget", Reduction::kSum, true},
    {"KLDivLoss_batchmean_logtarget", Reduction::kBatchMean, true},
};

std::vector<KLDivOp>& Ops() {
  static std::vector<KLDivOp>* ops = [] {
    // Never freed: onnxruntime may still use the ops while static destructors run at exit.
    auto* v = new std::vector<KLDivOp>();
    v->reserve(std::size(kDTypes) * (1 + std::size(kVariants)));  // no reallocation below
    for (DType dtype : kDTypes) {
      v->emplace_back(kGenericOp, dtype, true, Config{});
      for (const auto& variant : kVariants) {
        v->emplace_back(variant.name, dtype, false, Config{variant.reduction, variant.log_target});
      }
    }
    return v;
  }();
  return *ops;
}

}  // namespace

OrtCustomOpDomain* GetDomain(const OrtApi& api, OrtStatus** error) {
  // Built once, all or nothing: a half-filled domain is released and never handed out.
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (domain != nullptr) return domain;
  OrtCustomOpDomain* candidate = nullptr;
  if (OrtStatus* s = api.CreateCustomOpDomain(kDomain, &candidate)) {
    *error = s;
    return nullptr;
  }
  for (KLDivOp& op : Ops()) {
    if (OrtStatus* s = api.CustomOpDomain_Add(candidate, &op)) {
      api.ReleaseCustomOpDomain(candidate);
      *error = s;
      return nullptr;
    }
  }
  domain = candidate;
  return domain;
}

}  // namespace ort
}  // namespace kldiv
