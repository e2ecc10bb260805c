// thyrofast::runtime without Python: the checks of issue 26, driven by data Python wrote.
//
// Registered with ctest (THYROFAST_BUILD_TESTS=ON and the runtime built).  The numbers to
// match come from Python: tests/test_runtime.py trains the session's phantom bundle, runs
// thyrofast.Classifier (OpenVINO FP32, the Python engine) on 200 phantom frames and writes
// $THYROFAST_RUNTIME_TEST_DATA/ (layout in read_data below).  Without that variable the
// data-driven checks are skipped (exit 77, ctest SKIP_RETURN_CODE) and only the SHA-256
// vectors run.  Exit 0 = all passed.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <openvino/openvino.hpp>

#include "../../csrc/runtime/sha256.h"
#include "thyrofast/runtime.hpp"
#include "thyrofast/thyrofast.h"

// Every operator new in the process (ours, OpenVINO's, the standard library's) is counted, to
// check that a steady-state call allocates nothing.  Not under AddressSanitizer, whose own
// new/delete find mismatched pairs (the sanitizer build skips the count).
static std::atomic<long> g_news{0};
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCountingNew = false;
#else
constexpr bool kCountingNew = true;
void* operator new(size_t n) {
  ++g_news;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  ++g_news;
  return std::malloc(n ? n : 1);
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif

namespace {
int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

template <class T>
std::vector<T> read_bin(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<T> out(raw.size() / sizeof(T));
  std::copy(raw.begin(), raw.begin() + out.size() * sizeof(T), reinterpret_cast<char*>(out.data()));
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void sha256_vectors() {
  using thyrofast::detail::sha256_hex;
  check(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256('')");
  check(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256('abc')");
  const std::string m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  check(sha256_hex(m.data(), m.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        "sha256(448-bit NIST message)");
  const std::string a(1000000, 'a');
  thyrofast::detail::Sha256 s;  // fed in odd pieces: the buffering path
  for (size_t i = 0; i < a.size(); i += 997) s.update(a.data() + i, std::min<size_t>(997, a.size() - i));
  check(s.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "sha256(a * 10^6)");
}

struct Data {
  std::string dir, bundle, bundle_op;
  int64_t n = 0, h = 0, w = 0, k = 0;
  std::vector<uint8_t> frames;                       // n x h x w
  std::vector<double> probs, probs_op, patient, patient_op;  // python: n x k; patients: 4 x k
  std::vector<int32_t> decisions, decisions_op;
  std::vector<std::pair<std::string, std::string>> tampered;  // dir, python's code
};

// Layout (tests/test_runtime.py writes it):
//   meta.txt: "n h w k";  bundle.txt / bundle_op.txt: bundle folders (op: pooled_logistic rule +
//   operating point);  frames.u8;  probs.f64 / probs_op.f64 (n x k);  decisions.i32 /
//   decisions_op.i32;  patient.f64 / patient_op.f64 (4 patients x k; patient of frame i = i % 4);
//   tampered.txt: "<dir>\t<python InputError code>" per line.
bool read_data(Data& d) {
  const char* env = std::getenv("THYROFAST_RUNTIME_TEST_DATA");
  if (!env || !*env) return false;
  d.dir = env;
  std::istringstream meta(read_text(d.dir + "/meta.txt"));
  meta >> d.n >> d.h >> d.w >> d.k;
  d.bundle = read_text(d.dir + "/bundle.txt");
  d.bundle_op = read_text(d.dir + "/bundle_op.txt");
  d.frames = read_bin<uint8_t>(d.dir + "/frames.u8");
  d.probs = read_bin<double>(d.dir + "/probs.f64");
  d.probs_op = read_bin<double>(d.dir + "/probs_op.f64");
  d.decisions = read_bin<int32_t>(d.dir + "/decisions.i32");
  d.decisions_op = read_bin<int32_t>(d.dir + "/decisions_op.i32");
  d.patient = read_bin<double>(d.dir + "/patient.f64");
  d.patient_op = read_bin<double>(d.dir + "/patient_op.f64");
  std::istringstream t(read_text(d.dir + "/tampered.txt"));
  for (std::string line; std::getline(t, line);) {
    const size_t tab = line.find('\t');
    if (tab != std::string::npos) d.tampered.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return d.n > 0 && d.frames.size() == size_t(d.n * d.h * d.w) && d.probs.size() == size_t(d.n * d.k);
}

thyrofast::FrameBatch gray(const uint8_t* px, int64_t n, int64_t h, int64_t w) {
  return thyrofast::FrameBatch{px, thyrofast::PixelType::u8, n, h, w, 1, h * w, w, 1, 0};
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// probabilities of the whole set in chunks of `chunk` frames
std::vector<double> run(const thyrofast::Classifier& c, const Data& d, int64_t chunk, std::vector<int32_t>* dec,
                        int64_t first = 0, int64_t step = 1) {
  std::vector<double> p(size_t(d.n * d.k), 0.0);
  if (dec) dec->assign(size_t(d.n), -1);
  for (int64_t i = first * chunk; i < d.n; i += chunk * step) {
    const int64_t m = std::min(chunk, d.n - i);
    c.predict(gray(d.frames.data() + i * d.h * d.w, m, d.h, d.w), p.data() + i * d.k, dec ? dec->data() + i : nullptr);
  }
  return p;
}

void equals_python(const Data& d) {
  auto c = thyrofast::Classifier::load(d.bundle);
  check(c->num_classes() == size_t(d.k), "classes from the card");
  std::vector<int32_t> dec;
  const auto p32 = run(*c, d, 32, &dec);  // Python's own chunking (max_batch 32)
  const double diff = max_abs_diff(p32, d.probs);
  std::printf("max |dp| vs Python (batches of 32): %.3g\n", diff);
  check(diff <= 1e-5, "200 frames: probabilities within 1e-5 of thyrofast.Classifier (Python, OpenVINO FP32)");
  check(dec == d.decisions, "200 frames: decisions identical to Python");
  const auto p1 = run(*c, d, 1, &dec);
  const double diff1 = max_abs_diff(p1, d.probs);
  std::printf("max |dp| vs Python (batch 1): %.3g\n", diff1);
  check(diff1 <= 1e-5 && dec == d.decisions, "batch 1 (static-shape graph): within 1e-5, same decisions");

  // strides: the same frames read through a horizontally flipped buffer (negative stride)
  std::vector<uint8_t> flipped(d.frames.size());
  for (int64_t i = 0; i < d.n * d.h; ++i)
    for (int64_t x = 0; x < d.w; ++x) flipped[size_t(i * d.w + x)] = d.frames[size_t(i * d.w + d.w - 1 - x)];
  std::vector<double> pf(size_t(d.n * d.k));
  thyrofast::FrameBatch fb = gray(flipped.data() + d.w - 1, d.n, d.h, d.w);
  fb.stride_w = -1;
  c->predict(fb, pf.data());
  check(pf == p32, "a negative-stride view of the frames gives bit-identical probabilities");

  // RGB (equal channels) and uint16 (v * 257) frames: the same luma within float32 rounding
  std::vector<uint8_t> rgb(d.frames.size() * 3);
  std::vector<uint16_t> u16(d.frames.size());
  for (size_t i = 0; i < d.frames.size(); ++i) {
    rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = d.frames[i];
    u16[i] = uint16_t(d.frames[i] * 257);
  }
  const int64_t m = 32;
  std::vector<double> prgb(size_t(m * d.k)), p16(size_t(m * d.k));
  c->predict(thyrofast::FrameBatch{rgb.data(), thyrofast::PixelType::u8, m, d.h, d.w, 3, d.h * d.w * 3, d.w * 3, 3, 1},
             prgb.data());
  c->predict(thyrofast::FrameBatch{u16.data(), thyrofast::PixelType::u16, m, d.h, d.w, 1, d.h * d.w, d.w, 1, 0},
             p16.data());
  const std::vector<double> ref(p32.begin(), p32.begin() + m * d.k);
  std::printf("max |dp| rgb: %.3g, uint16: %.3g\n", max_abs_diff(prgb, ref), max_abs_diff(p16, ref));
  check(max_abs_diff(prgb, ref) <= 1e-4 && max_abs_diff(p16, ref) <= 1e-4, "RGB and uint16 frames of the same image agree");

  // steady state: after warm-up calls, a batch-1 call allocates nothing of ours (operator new)
  if (!kCountingNew) {
    std::printf("allocation count skipped (AddressSanitizer replaces operator new)\n");
  } else {
    std::vector<double> p1(size_t(32 * d.k));
    std::vector<int32_t> d1(32);
    c->predict(gray(d.frames.data(), 1, d.h, d.w), p1.data(), d1.data());
    c->predict(gray(d.frames.data(), 32, d.h, d.w), p1.data(), d1.data());
    // the same graph compiled the way the runtime compiles it, run bare: what OpenVINO itself allocates
    ov::Core core;
    auto model = core.read_model(d.bundle + "/model.onnx");
    model->reshape({{model->input(0).get_any_name(), ov::PartialShape{1, 1, 64, 64}}});
    auto compiled = core.compile_model(model, "CPU", ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                                       ov::inference_num_threads(c->options().threads), ov::hint::num_requests(1),
                                       ov::hint::inference_precision(ov::element::f32));
    auto req = compiled.create_infer_request();
    std::vector<float> x(64 * 64, 0.5f);
    req.set_input_tensor(ov::Tensor(ov::element::f32, ov::Shape{1, 1, 64, 64}, x.data()));
    req.infer();
    long ours = 0, bare = 0;
    for (int r = 0; r < 50; ++r) {
      const long a = g_news.load();
      c->predict(gray(d.frames.data() + (r % 100) * d.h * d.w, 1, d.h, d.w), p1.data(), d1.data());
      const long b = g_news.load();
      req.infer();
      ours += b - a;
      bare += g_news.load() - b;
    }
    std::printf("operator new calls in 50 batch-1 calls: %ld (runtime predict), %ld (bare OpenVINO infer)\n", ours, bare);
    check(ours <= bare, "steady state: a batch-1 predict allocates no more than OpenVINO's infer() alone "
                        "(thyrofast's own code: nothing)");
  }

  // patient aggregation (mean_log_prob: the fixture's card has no fitted rule)
  std::vector<double> pat(size_t(4 * d.k));
  for (int g = 0; g < 4; ++g) {
    std::vector<double> rows;
    for (int64_t i = g; i < d.n; i += 4) rows.insert(rows.end(), p32.begin() + i * d.k, p32.begin() + (i + 1) * d.k);
    c->aggregate(rows.data(), rows.size() / size_t(d.k), pat.data() + g * d.k);
  }
  check(max_abs_diff(pat, d.patient) <= 1e-5, "patient probabilities (mean_log_prob) match Python");

  // the card with an operating point and a pooled_logistic rule
  auto op = thyrofast::Classifier::load(d.bundle_op);
  check(op->operating_point().present && op->aggregation_method() == "pooled_logistic", "operating point + pooled rule read");
  const auto pop = run(*op, d, 32, &dec);
  check(max_abs_diff(pop, d.probs_op) <= 1e-5 && dec == d.decisions_op, "operating point: decisions identical to Python");
  for (int g = 0; g < 4; ++g) {
    std::vector<double> rows;
    for (int64_t i = g; i < d.n; i += 4) rows.insert(rows.end(), pop.begin() + i * d.k, pop.begin() + (i + 1) * d.k);
    op->aggregate(rows.data(), rows.size() / size_t(d.k), pat.data() + g * d.k);
  }
  std::printf("max |dp| patient pooled_logistic: %.3g\n", max_abs_diff(pat, d.patient_op));
  check(max_abs_diff(pat, d.patient_op) <= 1e-5, "patient probabilities (pooled_logistic) match Python");

  // INT8 graph loads and mostly agrees (quantization moves probabilities; no exactness claimed)
  thyrofast::ClassifierOptions o8;
  o8.precision = thyrofast::Precision::int8;
  auto c8 = thyrofast::Classifier::load(d.bundle, o8);
  std::vector<int32_t> dec8;
  run(*c8, d, 32, &dec8);
  int same = 0;
  for (int64_t i = 0; i < d.n; ++i) same += dec8[size_t(i)] == d.decisions[size_t(i)];
  std::printf("int8 decisions equal to fp32 on %d / %lld frames\n", same, (long long)d.n);
  check(same >= d.n * 9 / 10, "INT8 graph: >= 90% of decisions equal FP32's");
}

void threads_equal_serial(const Data& d) {
  thyrofast::ClassifierOptions o;
  o.threads = 1;
  o.max_concurrent = 4;  // fewer slots than threads: callers wait for a free infer request
  auto c = thyrofast::Classifier::load(d.bundle, o);
  for (int64_t chunk : {int64_t(1), int64_t(25)}) {
    const auto serial = run(*c, d, chunk, nullptr);
    std::vector<std::vector<double>> parts(8);
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t)  // thread t runs chunks t, t + 8, ...
      ts.emplace_back([&, t] { parts[size_t(t)] = run(*c, d, chunk, nullptr, t, 8); });
    for (auto& t : ts) t.join();
    std::vector<double> merged(serial.size(), 0.0);
    for (int t = 0; t < 8; ++t)
      for (int64_t i = t * chunk; i < d.n; i += chunk * 8)
        for (int64_t j = i * d.k; j < std::min(i + chunk, d.n) * d.k; ++j) merged[size_t(j)] = parts[size_t(t)][size_t(j)];
    check(merged == serial, "8 threads sharing one Classifier (chunks of " + std::to_string(chunk) +
                                ") give bit-identical results to serial");
  }
}

void tampered_refused(const Data& d) {
  for (const auto& [dir, code] : d.tampered) {
    std::string got = "(loaded)";
    try {
      thyrofast::Classifier::load(dir);
    } catch (const thyrofast::Error& e) {
      got = e.code() == thyrofast::ErrorCode::unreadable ? e.input_code() : "code " + std::to_string(int(e.code()));
    }
    thyrofast_classifier* h = nullptr;
    const thyrofast_status s = thyrofast_classifier_load(dir.c_str(), nullptr, &h);
    check(got == code && h == nullptr && std::string(thyrofast_status_name(s)) == code,
          "tampered bundle " + dir.substr(dir.find_last_of('/') + 1) + " refused with '" + got + "' (Python: '" + code +
              "'): " + thyrofast_last_error());
  }
}

void stream_bounded(const Data& d) {
  auto c = thyrofast::Classifier::load(d.bundle);
  thyrofast::StreamOptions so;
  so.height = d.h;
  so.width = d.w;
  so.capacity = 4;
  so.workers = 2;
  so.smoothing = 0.5;
  std::vector<uint64_t> order;
  std::atomic<int> bad_decision{0};
  thyrofast::Stream s(*c, so, [&](const thyrofast::StreamResult& r) {
    order.push_back(r.sequence);  // called under the stream's delivery lock: no race
    if (r.decision < 0 || r.decision >= int(d.k)) ++bad_decision;
  });
  for (int64_t i = 0; i < d.n; ++i) s.push(d.frames.data() + i * d.h * d.w, d.w, 1, 0);  // as fast as possible
  s.flush();
  const auto st = s.stats();
  std::printf("stream: pushed %llu processed %llu dropped %llu max depth %d p50 %.2f ms p99 %.2f ms max %.2f ms\n",
              (unsigned long long)st.pushed, (unsigned long long)st.processed, (unsigned long long)st.dropped,
              st.max_queue_depth, st.p50_ms, st.p99_ms, st.max_ms);
  check(st.max_queue_depth <= 4, "stream queue never exceeds its capacity");
  check(st.pushed == uint64_t(d.n) && st.processed + st.dropped == st.pushed, "every frame delivered or counted as dropped");
  check(std::is_sorted(order.begin(), order.end()) && order.size() == st.processed, "results delivered in frame order");
  check(bad_decision == 0, "every delivered frame has a decision");
  // paced (a frame every 2 ms): most frames are classified, by both workers, and still come in order
  order.clear();
  for (int64_t i = 0; i < d.n; ++i) {
    s.push(d.frames.data() + i * d.h * d.w, d.w, 1, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  s.flush();
  const auto st2 = s.stats();
  std::printf("paced stream: processed %llu dropped %llu max depth %d\n", (unsigned long long)st2.processed,
              (unsigned long long)st2.dropped, st2.max_queue_depth);
  check(std::is_sorted(order.begin(), order.end()) && st2.max_queue_depth <= 4 &&
            st2.processed + st2.dropped == st2.pushed,
        "paced stream: in order, bounded, every frame accounted for");
  s.close();
  bool closed = false;
  try {
    s.push(d.frames.data(), d.w, 1, 0);
  } catch (const thyrofast::Error& e) {
    closed = e.code() == thyrofast::ErrorCode::closed;
  }
  check(closed, "push after close is refused");
}

}  // namespace

int main() {
  sha256_vectors();
  Data d;
  if (!read_data(d)) {
    std::printf("THYROFAST_RUNTIME_TEST_DATA not set (tests/test_runtime.py writes it): data checks skipped\n");
    return failures ? 1 : 77;
  }
  try {
    equals_python(d);
    threads_equal_serial(d);
    tampered_refused(d);
    stream_bounded(d);
  } catch (const std::exception& e) {
    check(false, std::string("unexpected exception: ") + e.what());
  }
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
