// attributes.cc: onnxruntime's C API (up to the version requested, 17, and still in 1.24) has
// no "has attribute" or "attribute type" call for a kernel, only typed readers (int, float,
// string, tensor, ints, floats). One probe tries them in turn; an attribute none of them reads
// (STRINGS, GRAPH, ...) is told from an absent one by the size query of the array readers,
// which succeeds for any present attribute (measured on onnxruntime 1.32; see Probe).
#include "attributes.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace kldiv {
namespace ort {
namespace {

// Returns true (and releases the status) when the read failed.
bool Failed(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return false;
  api.ReleaseStatus(status);
  return true;
}

// What an attribute holds, as far as the typed readers tell.
struct Attribute {
  enum Kind { kAbsent, kInt, kFloat, kString, kInts, kFloats, kTensor, kOther } kind = kAbsent;
  int64_t i = 0;
  float f = 0.0f;
  std::string s;  // all bytes (embedded NULs included)
  std::vector<int64_t> ints;
  std::vector<float> floats;
};

std::string FloatText(float f) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.9g", static_cast<double>(f));
  std::string text = buffer;
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";  // 1 -> 1.0
  return text;
}

// A string attribute as Python writes bytes: b'sum\x00junk'.
std::string BytesText(const std::string& s) {
  std::string r = "b'";
  for (unsigned char c : s) {
    if (c == '\\' || c == '\'') {
      r += '\\';
      r += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7F) {
      r += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      r += hex;
    }
  }
  return r + "'";
}

// How the attribute is named in a message: its ONNX type and, where readable, its value.
std::string Describe(const Attribute& a) {
  switch (a.kind) {
    case Attribute::kInt:
      return "INT " + std::to_string(a.i);
    case Attribute::kFloat:
      return "FLOAT " + FloatText(a.f);
    case Attribute::kString:
      return "STRING " + BytesText(a.s);
    case Attribute::kInts: {
      std::string r = "INTS [";
      for (std::size_t k = 0; k < a.ints.size(); ++k) {
        r += (k ? ", " : "") + std::to_string(a.ints[k]);
      }
      return r + "]";
    }
    case Attribute::kFloats: {
      std::string r = "FLOATS [";
      for (std::size_t k = 0; k < a.floats.size(); ++k) {
        r += (k ? ", " : "") + FloatText(a.floats[k]);
      }
      return r + "]";
    }
    case Attribute::kTensor:
      return "TENSOR";
    case Attribute::kOther:
      return "an attribute of another type (STRINGS, GRAPH, an empty list, ...)";
    case Attribute::kAbsent:
      break;
  }
  return "nothing";
}

bool ReadStringBytes(const OrtApi& api, const OrtKernelInfo* info, const char* name,
                     std::string* out) {
  size_t size = 0;
  if (Failed(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) return false;
  std::string buffer(size + 1, '\0');  // +1: do not rely on the runtime writing a NUL
  size_t written = buffer.size();
  if (Failed(api, api.KernelInfoGetAttribute_string(info, name, &buffer[0], &written))) {
    return false;
  }
  // `size` counts the terminating NUL the runtime appends; what precedes it, embedded NULs
  // included, is the attribute.
  written = std::min(written, size);
  if (written > 0 && buffer[written - 1] == '\0') --written;
  buffer.resize(written);
  *out = buffer;
  return true;
}

Attribute Probe(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  Attribute a;
  if (!Failed(api, api.KernelInfoGetAttribute_int64(info, name, &a.i))) {
    a.kind = Attribute::kInt;
    return a;
  }
  if (!Failed(api, api.KernelInfoGetAttribute_float(info, name, &a.f))) {
    a.kind = Attribute::kFloat;
    return a;
  }
  if (ReadStringBytes(api, info, name, &a.s)) {
    a.kind = Attribute::kString;
    return a;
  }
  OrtAllocator* allocator = nullptr;
  if (!Failed(api, api.GetAllocatorWithDefaultOptions(&allocator))) {
    OrtValue* tensor = nullptr;
    if (!Failed(api, api.KernelInfoGetAttribute_tensor(info, name, allocator, &tensor))) {
      api.ReleaseValue(tensor);
      a.kind = Attribute::kTensor;
      return a;
    }
  }
  // The array readers' size query reads the attribute's list field whatever its type, and
  // fails only for an absent attribute: a non-empty list is that type, an empty one (or any
  // other type: STRINGS, GRAPH, ...) cannot be told apart.
  size_t n = 0;
  if (Failed(api, api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &n))) return a;
  if (n > 0) {
    a.ints.resize(n);
    if (!Failed(api, api.KernelInfoGetAttributeArray_int64(info, name, a.ints.data(), &n))) {
      a.kind = Attribute::kInts;
      return a;
    }
  }
  n = 0;
  if (!Failed(api, api.KernelInfoGetAttributeArray_float(info, name, nullptr, &n)) && n > 0) {
    a.floats.resize(n);
    if (!Failed(api, api.KernelInfoGetAttributeArray_float(info, name, a.floats.data(), &n))) {
      a.kind = Attribute::kFloats;
      return a;
    }
  }
  a.kind = Attribute::kOther;
  return a;
}

bool ValidUtf8(const std::string& s) {
  std::size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned char c = p[i];
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<std::size_t>(extra) >= s.size()) return false;  // truncated
    for (int k = 1; k <= extra; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}

}  // namespace

std::string ReadConfig(const OrtApi& api, const OrtKernelInfo* info, bool fixed, Config* config) {
  const Config name_config = *config;

  const Attribute reduction = Probe(api, info, "reduction");
  if (reduction.kind != Attribute::kAbsent) {
    if (reduction.kind != Attribute::kString) {
      return "attribute 'reduction' must be a string (one of none, mean, sum, batchmean), got " +
             Describe(reduction);
    }
    if (reduction.s.find('\0') != std::string::npos) {
      return "attribute 'reduction' contains a NUL byte: " + BytesText(reduction.s);
    }
    if (!ValidUtf8(reduction.s)) {
      return "attribute 'reduction' is not valid UTF-8: " + BytesText(reduction.s);
    }
    Reduction r;
    if (!ParseReduction(reduction.s, &r)) {
      return "attribute reduction='" + reduction.s +
             "' is not one of 'none', 'mean', 'sum', 'batchmean'";
    }
    if (fixed && r != name_config.reduction) {
      return "attribute reduction='" + reduction.s + "' contradicts the op name (reduction '" +
             ReductionName(name_config.reduction) + "')";
    }
    config->reduction = r;
  }

  const Attribute log_target = Probe(api, info, "log_target");
  if (log_target.kind != Attribute::kAbsent) {
    if (log_target.kind != Attribute::kInt) {
      return "attribute 'log_target' must be an int (0 or 1), got " + Describe(log_target);
    }
    if (log_target.i != 0 && log_target.i != 1) {
      return "attribute log_target=" + std::to_string(log_target.i) + " must be 0 or 1";
    }
    if (fixed && (log_target.i == 1) != name_config.log_target) {
      return "attribute log_target=" + std::to_string(log_target.i) +
             " contradicts the op name (log_target " +
             std::to_string(name_config.log_target ? 1 : 0) + ")";
    }
    config->log_target = log_target.i == 1;
  }
  return "";
}

std::string ReadRowConfig(const OrtApi& api, const OrtKernelInfo* info, RowConfig* config) {
  const Attribute kind = Probe(api, info, "kind");
  if (kind.kind != Attribute::kAbsent) {
    if (kind.kind != Attribute::kString) {
      return "attribute 'kind' must be a string (one of logits, log-probs, probs), got " +
             Describe(kind);
    }
    if (!ParseRowKind(kind.s, &config->kind)) {
      return "attribute kind=" + BytesText(kind.s) +
             " is not one of 'logits', 'log-probs', 'probs'";
    }
  }
  const Attribute temperature = Probe(api, info, "temperature");
  if (temperature.kind != Attribute::kAbsent) {
    if (temperature.kind != Attribute::kFloat) {
      return "attribute 'temperature' must be a float, got " + Describe(temperature);
    }
    if (!(std::isfinite(temperature.f) && temperature.f > 0.0f)) {
      return "attribute temperature=" + FloatText(temperature.f) + " must be finite and > 0";
    }
    config->temperature = temperature.f;
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
