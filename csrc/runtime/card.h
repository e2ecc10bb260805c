// The model card (thyrofast.json) and the bundle's integrity checks, as the
// Python loader does them (thyrofast/bundle.py, card_schema.py): the same
// refusals, each a thyrofast::Error(ErrorCode::unreadable).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "thyrofast/preprocess.h"
#include "thyrofast/runtime.hpp"

namespace thyrofast {
namespace detail {

struct Artifact {
  std::string path;
  std::string sha256;
  uint64_t bytes = 0;
};

struct PooledLogistic {
  std::vector<double> coef;       // K x 5K
  std::vector<double> intercept;  // K
  std::vector<double> mean;       // 5K
  std::vector<double> scale;      // 5K
};

struct Card {
  std::vector<std::string> classes;
  int in_channels = 1;
  int64_t input_c = 1, input_h = 0, input_w = 0;
  PreprocessParams preprocess;
  double temperature = 1.0;
  bool pooled = false;   // aggregation: false = mean_log_prob
  PooledLogistic pooled_logistic;
  OperatingPoint operating_point;
  std::map<std::string, Artifact> artifacts;  // name -> entry
};

// Parse + check the card bytes (source names the file in messages).
Card parse_card(const std::string& text, const std::string& source);

// Read a whole file; Error(unreadable) "<what> is missing" when it cannot be opened.
bool read_file(const std::string& path, std::string& out);

// Size, SHA-256 and (ONNX) external-data checks of one artifact's bytes, as Bundle._check.
void check_artifact(const std::string& name, const Artifact& a, const std::string& data, const std::string& file);

// Whether the ONNX model bytes take any tensor from external data; throws Error(unreadable)
// when they are not a parseable ONNX protobuf.  (onnx_check.cpp)
void refuse_external_data(const std::string& data, const std::string& what, const std::string& source);

[[noreturn]] void unreadable(const std::string& message, const std::string& source);

}  // namespace detail
}  // namespace thyrofast
