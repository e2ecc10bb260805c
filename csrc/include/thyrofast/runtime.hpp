// thyrofast runtime: the whole classifier in C++ (bundle -> frames -> calibrated decision).
//
// Link the CMake target `thyrofast::runtime` (find_package(thyrofast COMPONENTS runtime)).
// No Python, no OpenVINO header in this file: the engine hides behind a pimpl,
// so this header is the whole C++ interface (the C ABI is thyrofast.h).
//
//   auto clf = thyrofast::Classifier::load("bundle/");        // verifies every artifact's SHA-256
//   thyrofast::FrameBatch f{pixels, thyrofast::PixelType::u8, 1, h, w, 1, h * w, w, 1, 1};
//   std::vector<double> p(clf->num_classes());
//   int decision;
//   clf->predict(f, p.data(), &decision);                     // class index of clf->classes()
//
// What it does (the same as Python's thyrofast.Classifier with backend="openvino"):
//  load: read thyrofast.json (<= 16 MiB, nesting <= 64, no duplicate keys), check every field
//  the way thyrofast/bundle.py + card_schema.py do, then hash every artifact (size, SHA-256,
//  and for ONNX graphs: no tensor from external data) *before* the chosen graph's verified
//  bytes are handed to OpenVINO.  Every refusal is a thyrofast::Error with code
//  ErrorCode::unreadable, whose input_code() is "unreadable" (Python's InputError.code).
//  run: frames (u8/u16, gray/RGB, any strides) -> preprocessing spec v1 (thyrofast::core, the
//  bundle's parameters) -> OpenVINO CPU (FP32 graph with f32 inference precision, or the U8S8
//  INT8 graph) -> logits / temperature -> softmax (double) -> decision (operating point or
//  argmax) -> patient aggregation (mean_log_prob or the fitted pooled_logistic rule).
//
// Threads: every const method may be called from any number of threads at once.  A call
// borrows one "slot" from a pool (an OpenVINO infer request for batch 1, one for batches
// 2..max_batch, and their input/output buffers); when all slots are busy the call waits.
// Slots are made on demand up to ClassifierOptions::max_concurrent and then reused.
//
// Memory: in steady state (slots made, each batch size seen once) a call allocates nothing in
// this library: input tensors wrap preallocated buffers (one max_batch x C x H x W float
// buffer per slot), probabilities go to the caller's arrays.  The preprocessing core keeps its
// scratch per thread and reuses it; OpenVINO's own batch-1 (static-shape) path reuses its
// buffers; its dynamic-batch path may allocate internally.
//
// Errors: thyrofast::Error (a std::runtime_error) with an ErrorCode; nothing else escapes
// (std::bad_alloc aside).  ABI: this C++ API is source-stable within a minor version; the
// binary-stable interface is the C API (thyrofast.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "thyrofast/preprocess.h"

// The runtime is built with hidden visibility: only what is marked THYROFAST_API is exported.
#if defined(__GNUC__) || defined(__clang__)
#define THYROFAST_API __attribute__((visibility("default")))
#else
#define THYROFAST_API
#endif

namespace thyrofast {

// The stable error codes (also the C API's status values).
enum class ErrorCode : int {
  ok = 0,
  unreadable = 1,        // the bundle (card or an artifact) cannot be used; Python: InputError("unreadable")
  invalid_argument = 2,  // a bad argument (frames, sizes, options); Python: ValueError/TypeError
  runtime = 3,           // the inference engine failed
  out_of_memory = 4,
  closed = 5,            // a stream that was closed
};

class THYROFAST_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }
  // Python's InputError.code for unreadable bundles ("unreadable"); "" for other codes.
  const char* input_code() const noexcept { return code_ == ErrorCode::unreadable ? "unreadable" : ""; }

 private:
  ErrorCode code_;
};

enum class Precision : int { fp32 = 0, int8 = 1 };

struct ClassifierOptions {
  Precision precision = Precision::fp32;
  int threads = 0;          // CPU threads for preprocessing and for OpenVINO (0: all this process may use)
  int max_batch = 32;       // largest batch one call sends to the engine (larger calls are chunked)
  int max_concurrent = 0;   // infer-request slots, i.e. calls running at once (0: number of CPUs)
};

// What a bundle's model card says (read-only after load).
struct OperatingPoint {
  bool present = false;
  int positive = -1;         // class index
  double threshold = 0.0;    // positive when P(positive) >= threshold
  std::string rule;
};

class THYROFAST_API Classifier {
 public:
  // Open and verify the bundle folder `bundle_dir` (or its thyrofast.json) and compile the graph.
  static std::unique_ptr<Classifier> load(const std::string& bundle_dir, const ClassifierOptions& options = {});
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  const std::vector<std::string>& classes() const;
  size_t num_classes() const;
  double temperature() const;
  const OperatingPoint& operating_point() const;
  const PreprocessParams& preprocess_params() const;
  std::string aggregation_method() const;     // "mean_log_prob" or "pooled_logistic"
  const std::string& bundle_sha256() const;   // SHA-256 of thyrofast.json (Python: provenance bundle_sha256)
  const char* precision_name() const;         // "fp32" / "int8"
  const ClassifierOptions& options() const;   // with 0s resolved

  // logits: n x K float32 (before temperature).
  void logits(const FrameBatch& frames, float* logits_out) const;
  // probs: n x K float64 (softmax(logits / T)); decisions: n class indices (may be null).
  void predict(const FrameBatch& frames, double* probs_out, int32_t* decisions_out = nullptr) const;
  // logits (n x K, as logits() gives them) -> probabilities (n x K) and decisions (may be null).
  void calibrate(const float* logits, size_t n, double* probs_out, int32_t* decisions_out) const;
  // The class called for one row of probabilities (operating point, else argmax).
  int32_t decide(const double* probs_row) const;
  // One patient's probabilities (K) from its n images' probabilities (n x K), by the card's rule.
  void aggregate(const double* probs, size_t n, double* patient_probs_out) const;

  struct Impl;

 private:
  explicit Classifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class Stream;
};

// ---------------------------------------------------------------- live cine ---
// A bounded ring buffer in front of a Classifier.  push() copies a frame into a
// preallocated slot and returns at once; `workers` threads classify the oldest queued
// frame (batch 1).  Policy when frames arrive faster than they are classified: the
// oldest *queued* (not yet started) frame is dropped and counted; the queue never
// holds more than `capacity` frames.  Results are delivered to the callback in frame
// order (a small reorder step across workers), with optional exponential smoothing of
// the logits across consecutive delivered frames:
//   s_t = alpha * s_{t-1} + (1 - alpha) * logits_t   (alpha = 0: no smoothing)
// Latency of a frame = delivery time - push time (steady clock).
struct StreamOptions {
  int64_t height = 0, width = 0, channels = 1;  // the geometry of every pushed frame
  PixelType type = PixelType::u8;
  int capacity = 8;
  int workers = 1;
  double smoothing = 0.0;   // alpha in [0, 1)
  size_t max_latency_records = 1 << 16;  // latencies kept for the statistics (a ring)
};

struct StreamResult {
  uint64_t sequence;        // push order, from 0
  int32_t decision;
  const double* probs;      // K probabilities (valid during the callback only)
  const float* logits;      // K logits after smoothing
  double latency_ms;
};

struct StreamStats {
  uint64_t pushed = 0, processed = 0, dropped = 0;
  int max_queue_depth = 0;   // high-water mark of queued frames (never above capacity)
  double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0, mean_ms = 0;
};

class THYROFAST_API Stream {
 public:
  using Callback = std::function<void(const StreamResult&)>;
  Stream(const Classifier& classifier, const StreamOptions& options, Callback on_result);
  ~Stream();  // close()
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Copy one frame (element strides stride_h, stride_w, stride_c) into the queue; returns its sequence
  // number.  Never blocks on inference.  Throws Error(closed) after close().
  uint64_t push(const void* pixels, int64_t stride_h, int64_t stride_w, int64_t stride_c);
  // Wait until every queued frame is delivered or dropped.
  void flush();
  // flush() and stop the workers (idempotent).
  void close();
  StreamStats stats() const;
  int capacity() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

THYROFAST_API const char* runtime_version();

}  // namespace thyrofast
