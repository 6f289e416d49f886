// register.cc: the library's only exported symbol. Also the one place that reads the
// environment: KLDIV_ONNX_ISA caps the core's SIMD target (the core reads no environment).
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>

#include "kldiv_core.h"
#include "kldiv_ops.h"
#include "ort_api.h"

namespace {

// Applies KLDIV_ONNX_ISA once per process, at the first registration. An unknown value is
// ignored (the best target stays).
void ApplyIsaEnvironment() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char* cap = std::getenv("KLDIV_ONNX_ISA")) kldiv::CapTarget(cap);
  });
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base);

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
    ApplyIsaEnvironment();
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

}  // extern "C"
