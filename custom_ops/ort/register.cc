// register.cc: the library's exported symbols (exports.map). Also the one place that reads the
// environment: KLDIV_ONNX_ISA caps the core's SIMD target (the core reads no environment).
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>

#include "kldiv_core.h"
#include "kldiv_ops.h"
#include "ort_api.h"

namespace {

// Applies KLDIV_ONNX_ISA once per process (the library stays loaded: -z nodelete). Returns ""
// or, for a value that names no target, the message every registration then fails with.
const std::string& IsaEnvironmentError() {
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    const char* cap = std::getenv("KLDIV_ONNX_ISA");
    if (cap == nullptr || *cap == '\0') return;
    const std::string message = kldiv::CapTarget(cap);
    if (!message.empty()) error = "kldiv_onnx: KLDIV_ONNX_ISA=" + message;
  });
  return error;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base);

// The SIMD path the kernels run: "avx3", "avx2", "sve", "neon" or "scalar" (after
// KLDIV_ONNX_ISA), or, when KLDIV_ONNX_ISA names no target, "error: " and the message
// registration fails with. The string is static; call from any thread.
__attribute__((visibility("default"))) const char* KLDivOnnxActiveTarget(void);

// The onnxruntime C API version RegisterCustomOps requests (kOrtApiVersion), so that Python
// reads it from the library instead of writing the number a second time.
__attribute__((visibility("default"))) uint32_t KLDivOnnxOrtApiVersion(void);

OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using kldiv::ort::kOrtApiVersion;
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (api == nullptr) {
    const std::string message =
        std::string("kldiv_onnx: needs onnxruntime >= ") + kldiv::ort::kMinOrtRelease + " (C API " +
        std::to_string(kOrtApiVersion) + "), this is onnxruntime " + api_base->GetVersionString();
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  try {
    const std::string& isa_error = IsaEnvironmentError();
    if (!isa_error.empty()) return api->CreateStatus(ORT_INVALID_ARGUMENT, isa_error.c_str());
    OrtStatus* error = nullptr;
    OrtCustomOpDomain* domain = kldiv::ort::GetDomain(*api, &error);
    if (domain == nullptr) return error;
    return api->AddCustomOpDomain(options, domain);
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, (std::string("kldiv_onnx: ") + e.what()).c_str());
  } catch (...) {
    return api->CreateStatus(ORT_FAIL, "kldiv_onnx: unknown error while registering ops");
  }
}

const char* KLDivOnnxActiveTarget(void) {
  try {
    static const std::string error_text = "error: " + IsaEnvironmentError();
    return IsaEnvironmentError().empty() ? kldiv::ActiveTarget() : error_text.c_str();
  } catch (...) {
    return "error: unknown";
  }
}

uint32_t KLDivOnnxOrtApiVersion(void) { return kldiv::ort::kOrtApiVersion; }

}  // extern "C"
