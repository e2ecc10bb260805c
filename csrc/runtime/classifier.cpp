// thyrofast::Classifier on OpenVINO (CPU): the C++ twin of thyrofast/classifier.py with
// thyrofast/engines/openvino_engine.py, and since issue 26 the implementation the Python
// `openvino` backend calls (thyrofast._runtime).
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include <openvino/openvino.hpp>

#include "card.h"
#include "sha256.h"
#include "thyrofast/runtime.hpp"

namespace thyrofast {

using detail::Card;
using detail::unreadable;

namespace {

int default_threads() {  // engines/base.default_threads: the CPUs this process may use
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

size_t pixel_bytes(PixelType t) { return t == PixelType::u16 ? 2 : 1; }

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}


}  // namespace

// One set of infer requests with their preallocated input buffer: a call owns a slot from
// acquire() to release(), so requests (not thread-safe in OpenVINO) are never shared.
struct Slot {
  std::vector<float> input;              // max_batch x C x H x W, reused by every call
  ov::InferRequest request1;             // batch 1, static-shape compile (the latency case)
  ov::Tensor tensor1;                    // wraps input[0 .. C*H*W)
  ov::InferRequest request_n;            // batches 2..max_batch, one dynamic-batch compile
  std::vector<ov::Tensor> tensor_n;      // [n]: wraps input[0 .. n*C*H*W), made on first use of n
};

struct Classifier::Impl {
  Card card;
  ClassifierOptions options;
  std::string bundle_sha256;
  size_t k = 0;
  size_t frame_elems = 0;  // C * H * W
  ov::Core core;
  std::shared_ptr<ov::Model> model;
  std::string input_name;
  ov::CompiledModel compiled1, compiled_n;
  bool have_n = false;
  std::mutex compile_mutex;

  std::mutex pool_mutex;
  std::condition_variable pool_cv;
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Slot*> free_slots;

  ov::AnyMap compile_config() const {
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                      ov::inference_num_threads(options.threads), ov::hint::num_requests(1)};
    if (options.precision == Precision::fp32) config.emplace(ov::hint::inference_precision(ov::element::f32));
    return config;
  }

  ov::CompiledModel compile(bool dynamic) {
    auto m = model->clone();
    const ov::Dimension batch = dynamic ? ov::Dimension(1, options.max_batch) : ov::Dimension(1);
    m->reshape({{input_name, ov::PartialShape{batch, int64_t(card.input_c), card.input_h, card.input_w}}});
    return core.compile_model(m, "CPU", compile_config());
  }

  ov::CompiledModel& compiled_dynamic() {
    std::lock_guard<std::mutex> lock(compile_mutex);
    if (!have_n) {
      compiled_n = compile(true);
      have_n = true;
    }
    return compiled_n;
  }

  Slot* acquire() {
    std::unique_lock<std::mutex> lock(pool_mutex);
    for (;;) {
      if (!free_slots.empty()) {
        Slot* s = free_slots.back();
        free_slots.pop_back();
        return s;
      }
      if (int(slots.size()) < options.max_concurrent) {
        auto s = std::make_unique<Slot>();
        s->input.assign(size_t(options.max_batch) * frame_elems, 0.0f);
        s->request1 = compiled1.create_infer_request();
        s->tensor1 = ov::Tensor(ov::element::f32, ov::Shape{1, size_t(card.input_c), size_t(card.input_h), size_t(card.input_w)},
                                s->input.data());
        s->request1.set_input_tensor(s->tensor1);
        s->tensor_n.resize(size_t(options.max_batch) + 1);
        slots.push_back(std::move(s));
        return slots.back().get();
      }
      pool_cv.wait(lock);
    }
  }

  void release(Slot* s) {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      free_slots.push_back(s);
    }
    pool_cv.notify_one();
  }

  // Preprocess n frames (n <= max_batch) into the slot's buffer, infer, copy n x K logits out.
  void run_chunk(Slot& s, const FrameBatch& chunk, float* out) {
    preprocess_cpu(chunk, card.preprocess, s.input.data(), options.threads);
    const size_t n = size_t(chunk.n);
    ov::InferRequest* req;
    if (n == 1) {
      req = &s.request1;
    } else {
      if (!s.request_n) s.request_n = compiled_dynamic().create_infer_request();
      if (!s.tensor_n[n])
        s.tensor_n[n] = ov::Tensor(ov::element::f32, ov::Shape{n, size_t(card.input_c), size_t(card.input_h), size_t(card.input_w)},
                                   s.input.data());
      s.request_n.set_input_tensor(s.tensor_n[n]);
      req = &s.request_n;
    }
    req->infer();
    const ov::Tensor y = req->get_output_tensor(0);
    // (get_size, not get_shape: a Shape is a std::vector, i.e. an allocation per call)
    const size_t per = y.get_size() % n == 0 ? y.get_size() / n : 0;
    if (per != k || y.get_element_type() != ov::element::f32)
      unreadable("the model gives " + std::to_string(per) + " logits per frame but its card names " + std::to_string(k) +
                     " classes: the bundle is inconsistent", "");
    std::memcpy(out, y.data<const float>(), n * k * sizeof(float));
  }
};

namespace {

// Bundle.load(verify=True): the card, then every artifact (size, SHA-256, external data);
// returns the verified bytes of `wanted`.
std::string load_bundle(const std::string& dir_in, Card& card, std::string& card_sha, const std::string& wanted,
                        std::string& dir) {
  dir = dir_in;
  const std::string suffix = "thyrofast.json";
  std::string card_path;
  if (dir.size() >= suffix.size() && dir.compare(dir.size() - suffix.size(), suffix.size(), suffix) == 0 &&
      (dir.size() == suffix.size() || dir[dir.size() - suffix.size() - 1] == '/')) {
    card_path = dir;
    dir = dir.size() == suffix.size() ? "." : dir.substr(0, dir.size() - suffix.size() - 1);
  } else {
    card_path = join_path(dir, suffix);
  }
  std::string text;
  if (!detail::read_file(card_path, text)) unreadable("not a thyrofast model bundle: no thyrofast.json", dir);
  card = detail::parse_card(text, card_path);
  card_sha = detail::sha256_hex(text.data(), text.size());
  std::string chosen;
  bool found = false;
  for (const auto& kv : card.artifacts) {  // verify() walks every artifact, not only the one we load
    const std::string file = join_path(dir, kv.second.path);
    std::string data;
    if (!detail::read_file(file, data))
      unreadable("artifact '" + kv.first + "' (" + kv.second.path + ") is missing", file);
    detail::check_artifact(kv.first, kv.second, data, file);
    if (kv.first == wanted) {
      chosen = std::move(data);
      found = true;
    }
  }
  if (!found) {
    std::string have;
    for (const auto& kv : card.artifacts) have += (have.empty() ? "" : ", ") + kv.first;
    throw Error(ErrorCode::invalid_argument,
                "bundle " + dir + " has no artifact '" + wanted + "' (it has: " + have + ")");
  }
  return chosen;
}

}  // namespace

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::~Classifier() = default;

std::unique_ptr<Classifier> Classifier::load(const std::string& bundle_dir, const ClassifierOptions& options) {
  if (options.threads < 0 || options.threads > 4096)
    throw Error(ErrorCode::invalid_argument, "threads must be 0 (all) or an integer in [1, 4096]");
  if (options.max_batch < 1 || options.max_batch > 4096)
    throw Error(ErrorCode::invalid_argument, "max_batch must be an integer in [1, 4096]");
  if (options.max_concurrent < 0 || options.max_concurrent > 4096)
    throw Error(ErrorCode::invalid_argument, "max_concurrent must be 0 (CPUs) or an integer in [1, 4096]");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.threads == 0) impl->options.threads = default_threads();
  if (impl->options.max_concurrent == 0) impl->options.max_concurrent = default_threads();
  const std::string artifact = options.precision == Precision::int8 ? "onnx_int8_cpu" : "onnx_fp32";
  std::string dir;
  const std::string graph = load_bundle(bundle_dir, impl->card, impl->bundle_sha256, artifact, dir);
  impl->k = impl->card.classes.size();
  impl->frame_elems = size_t(impl->card.input_c * impl->card.input_h * impl->card.input_w);
  try {
    // Bytes: what was hash-checked is what gets parsed (engines/openvino_engine.py).
    impl->model = impl->core.read_model(graph, ov::Tensor());
    if (impl->model->inputs().size() != 1)
      unreadable("the " + artifact + " graph has " + std::to_string(impl->model->inputs().size()) +
                     " inputs; a thyrofast model has one", dir);
    impl->input_name = impl->model->input(0).get_any_name();
    impl->compiled1 = impl->compile(false);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::runtime, std::string("OpenVINO could not load the ") + artifact + " graph of " + dir + ": " +
                                        e.what());
  }
  return std::unique_ptr<Classifier>(new Classifier(std::move(impl)));
}

const std::vector<std::string>& Classifier::classes() const { return impl_->card.classes; }
size_t Classifier::num_classes() const { return impl_->k; }
double Classifier::temperature() const { return impl_->card.temperature; }
const OperatingPoint& Classifier::operating_point() const { return impl_->card.operating_point; }
const PreprocessParams& Classifier::preprocess_params() const { return impl_->card.preprocess; }
std::string Classifier::aggregation_method() const { return impl_->card.pooled ? "pooled_logistic" : "mean_log_prob"; }
const std::string& Classifier::bundle_sha256() const { return impl_->bundle_sha256; }
const char* Classifier::precision_name() const { return impl_->options.precision == Precision::int8 ? "int8" : "fp32"; }
const ClassifierOptions& Classifier::options() const { return impl_->options; }

void Classifier::logits(const FrameBatch& frames, float* logits_out) const {
  try {
    validate(frames, impl_->card.preprocess);
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::invalid_argument, e.what());
  }
  if (frames.n > 0 && !logits_out) throw Error(ErrorCode::invalid_argument, "logits_out is null");
  Impl& im = *impl_;
  Slot* slot = im.acquire();
  struct Release {
    Impl& im;
    Slot* s;
    ~Release() { im.release(s); }
  } release{im, slot};
  const int64_t mb = im.options.max_batch;
  const size_t px = pixel_bytes(frames.type);
  try {
    for (int64_t i = 0; i < frames.n; i += mb) {
      FrameBatch chunk = frames;
      chunk.n = std::min(mb, frames.n - i);
      chunk.data = static_cast<const uint8_t*>(frames.data) + i * frames.stride_n * int64_t(px);
      im.run_chunk(*slot, chunk, logits_out + size_t(i) * im.k);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::invalid_argument, e.what());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::runtime, std::string("inference failed: ") + e.what());
  }
}

void Classifier::calibrate(const float* logits, size_t n, double* probs_out, int32_t* decisions_out) const {
  // classifier.softmax: float64(logits) / T, minus the row max, exp, normalized
  const size_t k = impl_->k;
  const double t = impl_->card.temperature;
  for (size_t i = 0; i < n; ++i) {
    double* p = probs_out + i * k;
    double m = -INFINITY;
    for (size_t j = 0; j < k; ++j) {
      p[j] = double(logits[i * k + j]) / t;
      m = std::max(m, p[j]);
    }
    double sum = 0.0;
    for (size_t j = 0; j < k; ++j) {
      p[j] = std::exp(p[j] - m);
      sum += p[j];
    }
    for (size_t j = 0; j < k; ++j) p[j] /= sum;
    if (decisions_out) decisions_out[i] = decide(p);
  }
}

void Classifier::predict(const FrameBatch& frames, double* probs_out, int32_t* decisions_out) const {
  if (frames.n > 0 && !probs_out) throw Error(ErrorCode::invalid_argument, "probs_out is null");
  // the logits go to a per-thread buffer, grown to the largest batch this thread has seen, then reused
  thread_local std::vector<float> logits;
  const size_t need = size_t(std::max<int64_t>(frames.n, 0)) * impl_->k;
  if (logits.size() < need) logits.resize(need);  // grows once per thread, then reused
  this->logits(frames, logits.data());
  calibrate(logits.data(), size_t(std::max<int64_t>(frames.n, 0)), probs_out, decisions_out);
}

int32_t Classifier::decide(const double* p) const {
  // operating_point.decide: positive when P(positive) >= threshold, else the most probable other class
  const size_t k = impl_->k;
  const OperatingPoint& op = impl_->card.operating_point;
  if (op.present && p[op.positive] >= op.threshold) return op.positive;
  int32_t best = -1;
  for (size_t j = 0; j < k; ++j) {
    if (op.present && int(j) == op.positive) continue;
    if (best < 0 || p[j] > p[best]) best = int32_t(j);
  }
  return best;
}

void Classifier::aggregate(const double* probs, size_t n, double* out) const {
  // aggregation.aggregate for one patient
  if (n == 0) throw Error(ErrorCode::invalid_argument, "aggregate needs at least one image");
  const size_t k = impl_->k;
  thread_local std::vector<double> lp;
  if (lp.size() < n * k) lp.resize(n * k);
  for (size_t i = 0; i < n * k; ++i) lp[i] = std::log(std::min(1.0, std::max(1e-12, probs[i])));
  auto softmax_row = [k](double* z) {
    double m = -INFINITY, s = 0.0;
    for (size_t j = 0; j < k; ++j) m = std::max(m, z[j]);
    for (size_t j = 0; j < k; ++j) s += (z[j] = std::exp(z[j] - m));
    for (size_t j = 0; j < k; ++j) z[j] /= s;
  };
  if (!impl_->card.pooled) {
    for (size_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (size_t i = 0; i < n; ++i) s += lp[i * k + j];
      out[j] = s / double(n);
    }
    softmax_row(out);
    return;
  }
  // pooled_features: mean, max, min, top-3 mean per class, share of images calling each class
  const detail::PooledLogistic& pl = impl_->card.pooled_logistic;
  thread_local std::vector<double> f, col;
  f.assign(5 * k, 0.0);
  col.resize(n);
  for (size_t j = 0; j < k; ++j) {
    double s = 0.0, mx = -INFINITY, mn = INFINITY;
    for (size_t i = 0; i < n; ++i) {
      const double v = lp[i * k + j];
      col[i] = v;
      s += v;
      mx = std::max(mx, v);
      mn = std::min(mn, v);
    }
    std::sort(col.begin(), col.begin() + n);
    const size_t top = std::min<size_t>(3, n);
    double ts = 0.0;
    for (size_t i = n - top; i < n; ++i) ts += col[i];
    f[j] = s / double(n);
    f[k + j] = mx;
    f[2 * k + j] = mn;
    f[3 * k + j] = ts / double(top);
  }
  for (size_t i = 0; i < n; ++i) {
    size_t a = 0;
    for (size_t j = 1; j < k; ++j)
      if (lp[i * k + j] > lp[i * k + a]) a = j;
    f[4 * k + a] += 1.0;
  }
  for (size_t j = 0; j < k; ++j) f[4 * k + j] /= double(n);
  for (size_t q = 0; q < 5 * k; ++q) f[q] = (f[q] - pl.mean[q]) / pl.scale[q];
  for (size_t c = 0; c < k; ++c) {
    double s = 0.0;
    for (size_t q = 0; q < 5 * k; ++q) s += pl.coef[c * 5 * k + q] * f[q];
    out[c] = s + pl.intercept[c];
  }
  softmax_row(out);
}

const char* runtime_version() { return THYROFAST_RUNTIME_VERSION; }

}  // namespace thyrofast
