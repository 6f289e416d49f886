// names.cc: the names of reductions, dtypes and shapes that messages and the ORT layer use.
#include <sstream>

#include "kldiv_core.h"

namespace kldiv {

bool ParseReduction(const std::string& name, Reduction* out) {
  static const struct {
    const char* name;
    Reduction value;
  } kNames[] = {{"none", Reduction::kNone},
                {"mean", Reduction::kMean},
                {"sum", Reduction::kSum},
                {"batchmean", Reduction::kBatchMean}};
  for (const auto& entry : kNames) {
    if (name == entry.name) {
      *out = entry.value;
      return true;
    }
  }
  return false;
}

const char* ReductionName(Reduction r) {
  switch (r) {
    case Reduction::kNone:
      return "none";
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
    case Reduction::kBatchMean:
      return "batchmean";
  }
  return "?";
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

std::size_t DTypeSize(DType t) { return t == DType::kFloat32 ? 4 : 2; }

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

}  // namespace kldiv
