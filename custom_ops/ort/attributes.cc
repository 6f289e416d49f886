// attributes.cc: onnxruntime has no "has attribute" call, only typed readers; one probe tells an
// absent attribute from one of another type.
#include "attributes.h"

#include <algorithm>
#include <cstring>

namespace kldiv {
namespace ort {
namespace {

enum class Attr { kAbsent, kPresent, kWrongType };

// Returns true (and releases the status) when the read failed.
bool Failed(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return false;
  api.ReleaseStatus(status);
  return true;
}

// For an attribute that failed to read as the expected type: present with another type when one
// of the other typed readers succeeds, absent otherwise.
Attr Probe(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  int64_t i = 0;
  float f = 0.0f;
  size_t size = 0;
  if (!Failed(api, api.KernelInfoGetAttribute_int64(info, name, &i))) return Attr::kWrongType;
  if (!Failed(api, api.KernelInfoGetAttribute_float(info, name, &f))) return Attr::kWrongType;
  if (!Failed(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) {
    return Attr::kWrongType;
  }
  return Attr::kAbsent;
}

Attr ReadString(const OrtApi& api, const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  if (Failed(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) {
    return Probe(api, info, name);
  }
  std::string buffer(size + 1, '\0');  // +1: do not rely on the runtime writing a NUL
  size_t written = buffer.size();
  if (Failed(api, api.KernelInfoGetAttribute_string(info, name, &buffer[0], &written))) {
    return Attr::kWrongType;
  }
  buffer.resize(std::min(written, size));
  buffer.resize(std::strlen(buffer.c_str()));
  *out = buffer;
  return Attr::kPresent;
}

Attr ReadInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t* out) {
  if (!Failed(api, api.KernelInfoGetAttribute_int64(info, name, out))) return Attr::kPresent;
  return Probe(api, info, name);
}

}  // namespace

std::string ReadConfig(const OrtApi& api, const OrtKernelInfo* info, bool fixed, Config* config) {
  const Config name_config = *config;
  std::string reduction;
  switch (ReadString(api, info, "reduction", &reduction)) {
    case Attr::kWrongType:
      return "attribute 'reduction' must be a string (one of none, mean, sum, batchmean)";
    case Attr::kPresent: {
      Reduction r;
      if (!ParseReduction(reduction, &r)) {
        return "attribute reduction='" + reduction +
               "' is not one of 'none', 'mean', 'sum', 'batchmean'";
      }
      if (fixed && r != name_config.reduction) {
        return "attribute reduction='" + reduction + "' contradicts the op name (reduction '" +
               ReductionName(name_config.reduction) + "')";
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
      return "attribute 'log_target' must be an int (0 or 1)";
    case Attr::kPresent:
      if (log_target != 0 && log_target != 1) {
        return "attribute log_target=" + std::to_string(log_target) + " must be 0 or 1";
      }
      if (fixed && (log_target == 1) != name_config.log_target) {
        return "attribute log_target=" + std::to_string(log_target) +
               " contradicts the op name (log_target " +
               std::to_string(name_config.log_target ? 1 : 0) + ")";
      }
      config->log_target = log_target == 1;
      break;
    case Attr::kAbsent:
      break;
  }
  return "";
}

std::string NodeName(const OrtApi& api, const OrtKernelInfo* info) {
  size_t size = 0;
  if (Failed(api, api.KernelInfo_GetNodeName(info, nullptr, &size))) return "";
  std::string buffer(size + 1, '\0');
  size_t written = buffer.size();
  if (Failed(api, api.KernelInfo_GetNodeName(info, &buffer[0], &written))) return "";
  buffer.resize(std::strlen(buffer.c_str()));
  return buffer;
}

}  // namespace ort
}  // namespace kldiv
