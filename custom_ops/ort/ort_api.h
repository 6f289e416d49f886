// ort_api.h: the one place that includes onnxruntime's C++ header, with manual API
// initialisation (the library is not linked to onnxruntime; RegisterCustomOps gets the API).
#ifndef KLDIV_ORT_ORT_API_H_
#define KLDIV_ORT_ORT_API_H_

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>

#endif  // KLDIV_ORT_ORT_API_H_
