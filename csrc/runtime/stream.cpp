// thyrofast::Stream: live cine in front of a Classifier (see runtime.hpp for the policy).
//
// Preallocated at construction: `capacity` frame slots (H x W x C pixels each, packed), the
// per-worker logits/probability rows, the reorder buffer (one entry per worker) and the
// latency ring.  push() copies pixels and never allocates; workers allocate nothing per frame
// (Classifier::logits reuses its slot; the callback gets pointers into preallocated rows).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "thyrofast/runtime.hpp"

namespace thyrofast {

namespace {
using Clock = std::chrono::steady_clock;
}

struct Stream::Impl {
  const Classifier& clf;
  StreamOptions opt;
  Callback on_result;
  size_t k;
  size_t frame_elems, elem_bytes;

  // the ring: frames [head, head + count) are queued (not started), oldest at head
  std::vector<uint8_t> pixels;             // capacity x frame bytes
  std::vector<uint64_t> seq;               // per slot: push sequence number
  std::vector<Clock::time_point> pushed_at;
  std::vector<char> in_use;                // slot taken by a worker (being classified)
  size_t head = 0, count = 0;
  uint64_t next_seq = 0, dropped = 0, processed = 0;
  int max_depth = 0;
  bool closing = false;
  size_t busy = 0;                         // frames taken by workers, not yet delivered

  // in-order delivery across workers: every taken frame gets a take number t; results wait in
  // pending[t % workers] until every earlier taken frame was delivered
  uint64_t next_take = 0, next_deliver = 0;
  struct Pending {
    bool ready = false;
    uint64_t take = 0;
    uint64_t seq = 0;
    Clock::time_point pushed;
    std::vector<float> logits;
  };
  std::vector<Pending> pending;
  std::vector<float> smoothed;
  bool have_smoothed = false;
  std::vector<double> probs;
  std::vector<double> latencies;           // ring of the last max_latency_records latencies (ms)
  size_t lat_next = 0, lat_count = 0;

  mutable std::mutex mu;
  std::condition_variable work_cv, idle_cv;
  std::vector<std::thread> threads;

  Impl(const Classifier& c, const StreamOptions& o, Callback cb) : clf(c), opt(o), on_result(std::move(cb)) {
    if (o.height < 1 || o.width < 1 || (o.channels != 1 && o.channels != 3))
      throw Error(ErrorCode::invalid_argument, "stream frames need height, width >= 1 and 1 or 3 channels");
    if (o.capacity < 1 || o.capacity > 4096) throw Error(ErrorCode::invalid_argument, "capacity must be in [1, 4096]");
    if (o.workers < 1 || o.workers > 256) throw Error(ErrorCode::invalid_argument, "workers must be in [1, 256]");
    if (!(o.smoothing >= 0.0 && o.smoothing < 1.0)) throw Error(ErrorCode::invalid_argument, "smoothing must be in [0, 1)");
    if (o.max_latency_records < 1) throw Error(ErrorCode::invalid_argument, "max_latency_records must be >= 1");
    // check the geometry against the bundle's preprocessing once (roi inside the frame, sizes)
    FrameBatch probe{nullptr, o.type, 1, o.height, o.width, o.channels, o.height * o.width * o.channels,
                     o.width * o.channels, o.channels, 1};
    static const uint8_t dummy[2] = {0, 0};
    probe.data = dummy;
    try {
      validate(probe, c.preprocess_params());
    } catch (const std::invalid_argument& e) {
      throw Error(ErrorCode::invalid_argument, e.what());
    }
    k = c.num_classes();
    elem_bytes = o.type == PixelType::u16 ? 2 : 1;
    frame_elems = size_t(o.height * o.width * o.channels);
    pixels.assign(size_t(o.capacity) * frame_elems * elem_bytes, 0);
    seq.assign(size_t(o.capacity), 0);
    pushed_at.assign(size_t(o.capacity), Clock::time_point());
    in_use.assign(size_t(o.capacity), 0);
    pending.resize(size_t(o.workers));
    for (auto& p : pending) p.logits.assign(k, 0.0f);
    smoothed.assign(k, 0.0f);
    probs.assign(k, 0.0);
    latencies.assign(o.max_latency_records, 0.0);
  }

  // The ring holds queued frames only: a worker copies its frame out (into its own buffer,
  // made once) before it lets go of the lock, so push() may reuse the slot at once.
  void worker_loop() {
    std::vector<uint8_t> frame(frame_elems * elem_bytes);  // this worker's copy, made once
    std::vector<float> logits(k);
    for (;;) {
      uint64_t s, take;
      Clock::time_point t0;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return count > 0 || closing; });
        if (count == 0 && closing) return;
        const size_t slot = head;
        std::memcpy(frame.data(), pixels.data() + slot * frame_elems * elem_bytes, frame_elems * elem_bytes);
        s = seq[slot];
        t0 = pushed_at[slot];
        head = (head + 1) % size_t(opt.capacity);
        --count;
        ++busy;
        take = next_take++;
      }
      try {
        FrameBatch f{frame.data(), opt.type, 1, opt.height, opt.width, opt.channels,
                     opt.height * opt.width * opt.channels, opt.width * opt.channels, opt.channels, 1};
        clf.logits(f, logits.data());
      } catch (...) {  // delivered with decision -1 and NaN probabilities
        std::fill(logits.begin(), logits.end(), NAN);
      }
      std::unique_lock<std::mutex> lock(mu);
      // wait for our turn in the reorder buffer (at most `workers` frames are in flight)
      // (the entry is ours once every take before take - workers was delivered)
      Pending& p = pending[take % pending.size()];
      idle_cv.wait(lock, [&] { return !p.ready && take - next_deliver < pending.size(); });
      p.ready = true;
      p.take = take;
      p.seq = s;
      p.pushed = t0;
      std::copy(logits.begin(), logits.end(), p.logits.begin());
      deliver_ready();
    }
  }

  // Deliver, in take order, every result that is ready (called with mu held).
  void deliver_ready() {
    for (;;) {
      Pending& p = pending[next_deliver % pending.size()];
      if (!p.ready || p.take != next_deliver) break;
      const bool failed = std::isnan(p.logits[0]);  // a frame inference failed on: NaN, state untouched
      const float* z = p.logits.data();
      if (!failed) {
        if (opt.smoothing > 0.0 && have_smoothed) {
          for (size_t j = 0; j < k; ++j)
            smoothed[j] = float(opt.smoothing * smoothed[j] + (1.0 - opt.smoothing) * p.logits[j]);
        } else {
          std::copy(p.logits.begin(), p.logits.end(), smoothed.begin());
          have_smoothed = true;
        }
        z = smoothed.data();
      }
      int32_t decision = -1;
      clf.calibrate(z, 1, probs.data(), &decision);
      if (failed) decision = -1;
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - p.pushed).count();
      latencies[lat_next] = ms;
      lat_next = (lat_next + 1) % latencies.size();
      lat_count = std::min(lat_count + 1, latencies.size());
      ++processed;
      if (on_result) {
        StreamResult r{p.seq, decision, probs.data(), z, ms};
        try {
          on_result(r);
        } catch (...) {  // a throwing callback must not kill a worker thread
        }
      }
      p.ready = false;
      ++next_deliver;
      --busy;
      idle_cv.notify_all();
    }
  }
};

Stream::Stream(const Classifier& classifier, const StreamOptions& options, Callback on_result)
    : impl_(std::make_unique<Impl>(classifier, options, std::move(on_result))) {
  for (int w = 0; w < options.workers; ++w) impl_->threads.emplace_back([this] { impl_->worker_loop(); });
}

Stream::~Stream() { close(); }

uint64_t Stream::push(const void* data, int64_t stride_h, int64_t stride_w, int64_t stride_c) {
  Impl& im = *impl_;
  if (!data) throw Error(ErrorCode::invalid_argument, "pixels is null");
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(im.mu);
  if (im.closing) throw Error(ErrorCode::closed, "the stream is closed");
  const size_t cap = size_t(im.opt.capacity);
  if (im.count == cap) {  // full: drop the oldest queued frame (counted)
    im.head = (im.head + 1) % cap;
    --im.count;
    ++im.dropped;
  }
  const size_t slot = (im.head + im.count) % cap;
  uint8_t* dst = im.pixels.data() + slot * im.frame_elems * im.elem_bytes;
  const int64_t h = im.opt.height, w = im.opt.width, c = im.opt.channels;
  if (im.elem_bytes == 1) {
    const auto* src = static_cast<const uint8_t*>(data);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < c; ++ch) *dst++ = src[y * stride_h + x * stride_w + ch * stride_c];
  } else {
    const auto* src = static_cast<const uint16_t*>(data);
    auto* d16 = reinterpret_cast<uint16_t*>(dst);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < c; ++ch) *d16++ = src[y * stride_h + x * stride_w + ch * stride_c];
  }
  im.seq[slot] = im.next_seq;
  im.pushed_at[slot] = now;
  ++im.count;
  im.max_depth = std::max(im.max_depth, int(im.count));
  im.work_cv.notify_one();
  return im.next_seq++;
}

void Stream::flush() {
  Impl& im = *impl_;
  std::unique_lock<std::mutex> lock(im.mu);
  im.idle_cv.wait(lock, [&] { return im.count == 0 && im.busy == 0; });
}

void Stream::close() {
  Impl& im = *impl_;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (im.closing && im.threads.empty()) return;
    im.closing = true;
  }
  im.work_cv.notify_all();
  for (auto& t : im.threads)
    if (t.joinable()) t.join();
  im.threads.clear();
}

int Stream::capacity() const { return impl_->opt.capacity; }

StreamStats Stream::stats() const {
  const Impl& im = *impl_;
  StreamStats st;
  std::vector<double> lat;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    st.pushed = im.next_seq;
    st.processed = im.processed;
    st.dropped = im.dropped;
    st.max_queue_depth = im.max_depth;
    lat.assign(im.latencies.begin(), im.latencies.begin() + im.lat_count);
  }
  if (lat.empty()) return st;
  std::sort(lat.begin(), lat.end());
  // NumPy's default 'linear' percentile
  auto pct = [&](double q) {
    const double pos = q / 100.0 * double(lat.size() - 1);
    const size_t lo = size_t(pos);
    const size_t hi = std::min(lo + 1, lat.size() - 1);
    return lat[lo] + (pos - double(lo)) * (lat[hi] - lat[lo]);
  };
  st.p50_ms = pct(50);
  st.p99_ms = pct(99);
  st.p999_ms = pct(99.9);
  st.max_ms = lat.back();
  double s = 0;
  for (double v : lat) s += v;
  st.mean_ms = s / double(lat.size());
  return st;
}

}  // namespace thyrofast
