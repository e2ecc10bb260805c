// The model card reader: thyrofast/bundle.py (_validate_manifest, Bundle._check) and
// thyrofast/card_schema.py (parse_card, check_card_fields) in C++.  Every check below names
// its Python twin; a card Python refuses is refused here with the same code ("unreadable").
// Known, deliberate differences (none lets a card through that Python refuses on the
// fields that reach the numbers): class names are compared case-insensitively in ASCII
// only (Python: str.upper, full Unicode), and "printable" is checked for ASCII control
// characters only.
#include "card.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sha256.h"

namespace thyrofast {
namespace detail {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxCardBytes = size_t{16} << 20;  // card_schema.MAX_CARD_BYTES
constexpr int kMaxCardDepth = 64;                   // card_schema.MAX_CARD_DEPTH
constexpr size_t kMaxClasses = 1000;                // card_schema.MAX_CLASSES
constexpr int64_t kMaxSide = 4096;                  // card_schema.MAX_SIDE
constexpr double kTemperatureLo = 0.01, kTemperatureHi = 100.0;
constexpr int64_t kMaxRoi = (int64_t{1} << 31) - 1;  // preprocessing/params.py MAX_ROI
const char* const kArchs[] = {"resnet18", "resnet34", "resnet50", "efficientnet_b0", "mobilenet_v3_large",
                              "convnext_tiny"};      // models.ARCHS
const char* const kCrops[] = {"auto", "detect", "regions", "none", "panes"};  // io.schema.CROP_MODES
const char* const kReadKeys[] = {"crop", "mask_annotations"};  // io.schema.READ_KEYS
constexpr int kMaxMembers = 8;                      // models.MAX_MEMBERS
constexpr double kF32Max = 3.4028234663852886e38, kF16Max = 65504.0;

struct Bad {
  std::string message;
};

[[noreturn]] void bad(const std::string& m) { throw Bad{m}; }
[[noreturn]] void field(const std::string& name, const std::string& m) { bad("field '" + name + "' " + m); }

std::string brief(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 60) + "..." : s;
}

bool is_int(const json& v) { return v.is_number_integer(); }  // bools are not numbers in nlohmann
bool is_number(const json& v) { return v.is_number(); }
double num(const json& v) { return v.get<double>(); }

// preprocessing/params.py _number: a number (not bool); with integer, an integral value (1.0 passes).
double number(const std::string& name, const json& v, bool integer = false) {
  if (!is_number(v)) bad("field 'preprocess' is not valid preprocessing: " + name + " must be a number");
  const double d = num(v);
  if (integer) {
    if (!std::isfinite(d) || d != std::floor(d)) bad("field 'preprocess' is not valid preprocessing: " + name + " must be an integer");
    return d;
  }
  if (!std::isfinite(d)) bad("field 'preprocess' is not valid preprocessing: " + name + " must be finite");
  return d;
}

[[noreturn]] void pre_bad(const std::string& m) { bad("field 'preprocess' is not valid preprocessing: " + m); }

// preprocessing/params.py _pair: a list (JSON lists are what from_dict turns into tuples).
const json& pair(const std::string& name, const json& v) {
  if (!v.is_array()) pre_bad(name + " must be a sequence, got " + brief(v));
  return v;
}

// PreprocessParams.from_dict + __post_init__ (thyrofast/preprocessing/params.py).
PreprocessParams preprocess_from(const json& d, double* bound_out, std::string* dtype_out) {
  if (!d.is_object()) field("preprocess", "must be an object of preprocessing parameters, got " + brief(d));
  static const std::set<std::string> names = {"roi", "channel_order", "max_value", "size", "denoise",
                                              "srad_iterations", "srad_lambda", "srad_rho", "normalize",
                                              "percentiles", "mean", "std", "channels", "dtype", "spec"};
  if (d.contains("spec")) {
    const json& s = d["spec"];
    if (!(s.is_number() && num(s) == 1.0) && !(s.is_boolean() && s.get<bool>()))
      pre_bad("unsupported preprocessing spec version " + brief(s));
  }
  for (auto it = d.begin(); it != d.end(); ++it)
    if (!names.count(it.key())) pre_bad("unknown preprocessing parameters: ['" + it.key() + "']");
  PreprocessParams p;
  auto get = [&](const char* k) -> const json* { return d.contains(k) ? &d[k] : nullptr; };
  if (const json* roi = get("roi"); roi && !roi->is_null()) {
    const json& r = pair("roi", *roi);
    if (r.size() != 4) pre_bad("roi must be (x, y, w, h)");
    int64_t v[4];
    for (int i = 0; i < 4; ++i) v[i] = int64_t(number("roi", r[i], true));
    if (v[0] < 0 || v[1] < 0) pre_bad("roi x and y must be >= 0");
    if (v[2] < 1 || v[3] < 1) pre_bad("roi width and height must be >= 1");
    if (std::max(v[0] + v[2], v[1] + v[3]) > kMaxRoi) pre_bad("roi reaches too far");
    p.has_roi = true;
    p.roi_x = v[0]; p.roi_y = v[1]; p.roi_w = v[2]; p.roi_h = v[3];
  }
  auto choice = [&](const char* k, std::initializer_list<const char*> opts, const char* dflt) -> std::string {
    const json* v = get(k);
    if (!v) return dflt;
    if (v->is_string())
      for (const char* o : opts)
        if (v->get<std::string>() == o) return o;
    pre_bad(std::string(k) + " must be one of the known values, got " + brief(*v));
  };
  p.channel_order = choice("channel_order", {"rgb", "bgr"}, "rgb") == "bgr" ? ChannelOrder::bgr : ChannelOrder::rgb;
  double max_value = 0.0;
  bool has_max_value = false;
  if (const json* mv = get("max_value"); mv && !mv->is_null()) {
    max_value = number("max_value", *mv);
    if (!(max_value >= 1e-3 && max_value <= 1e12)) pre_bad("max_value must be within [0.001, 1e12]");
    has_max_value = true;
  }
  p.max_value = max_value;
  if (const json* s = get("size")) {
    int64_t hw[2];
    if (is_number(*s)) {
      hw[0] = hw[1] = int64_t(number("size", *s, true));
    } else {
      const json& sz = pair("size", *s);
      if (sz.size() != 2) pre_bad("size must be (out_h, out_w)");
      for (int i = 0; i < 2; ++i) hw[i] = int64_t(number("size", sz[i], true));
    }
    for (int64_t v : hw)
      if (v < 1 || v > 4096) pre_bad("size must be between 1 and 4096 per side");
    p.out_h = hw[0];
    p.out_w = hw[1];
  }
  const std::string denoise = choice("denoise", {"none", "median3", "median5", "srad"}, "srad");
  p.denoise = denoise == "none" ? Denoise::none : denoise == "median3" ? Denoise::median3
            : denoise == "median5" ? Denoise::median5 : Denoise::srad;
  if (const json* v = get("srad_iterations")) {
    const double it = number("srad_iterations", *v, true);
    if (!(it >= 0 && it <= 1000)) pre_bad("srad_iterations must be in [0, 1000]");
    p.srad_iterations = int(it);
  }
  if (const json* v = get("srad_lambda")) {
    const double l = number("srad_lambda", *v);
    if (!(l > 0 && l <= 1)) pre_bad("srad_lambda must lie in (0, 1]");
    p.srad_lambda = float(l);
  }
  if (const json* v = get("srad_rho")) {
    const double r = number("srad_rho", *v);
    if (!(r >= 0 && r <= 1e3)) pre_bad("srad_rho must be in [0, 1000]");
    p.srad_rho = float(r);
  }
  const std::string normalize = choice("normalize", {"percentile", "minmax", "zscore", "none"}, "percentile");
  p.normalize = normalize == "percentile" ? Normalize::percentile : normalize == "minmax" ? Normalize::minmax
              : normalize == "zscore" ? Normalize::zscore : Normalize::none;
  if (const json* v = get("percentiles")) {
    const json& pc = pair("percentiles", *v);
    if (pc.size() != 2) pre_bad("percentiles must be (lo, hi)");
    const double lo = number("percentiles", pc[0]), hi = number("percentiles", pc[1]);
    if (!(0 <= lo && lo < hi && hi <= 100)) pre_bad("percentiles must satisfy 0 <= lo < hi <= 100");
    p.percentile_lo = float(lo);
    p.percentile_hi = float(hi);
  }
  double mean = 0.0, stdv = 1.0;
  if (const json* v = get("mean")) mean = number("mean", *v);
  if (const json* v = get("std")) stdv = number("std", *v);
  if (stdv <= 0) pre_bad("std must be > 0");
  if (std::fabs(mean) > kF32Max || std::fabs(stdv) > kF32Max) pre_bad("mean and std must be finite float32");
  p.mean = float(mean);
  p.std = float(stdv);
  if (const json* v = get("channels")) {
    const double c = number("channels", *v, true);
    if (c != 1 && c != 3) pre_bad("channels must be 1 or 3");
    p.channels = int(c);
  }
  const std::string dtype = choice("dtype", {"float32", "float16"}, "float32");
  // preprocessing/params.py _output_bound
  double z;
  if (p.normalize == Normalize::percentile || p.normalize == Normalize::minmax) {
    z = 1.0;
  } else if (p.normalize == Normalize::zscore) {
    z = std::sqrt(double(p.out_h) * double(p.out_w));
  } else {
    const double y_max = has_max_value ? 65535.0 / max_value : 1.0;
    z = std::max(1.0, p.denoise == Denoise::srad ? std::min(y_max, 88.0) : y_max);
  }
  const double bound = (z + std::fabs(mean)) / stdv;
  if (!(bound <= (dtype == "float16" ? kF16Max : kF32Max))) pre_bad("mean and std can give outputs beyond the output dtype");
  *bound_out = bound;
  *dtype_out = dtype;
  p.out_type = OutputType::f32;  // the engine's input dtype (Classifier.load: params.replace(dtype=...))
  return p;
}

std::vector<double> numbers(const json& v, size_t n, bool* ok) {
  std::vector<double> out;
  if (!v.is_array() || v.size() != n) { *ok = false; return out; }
  for (const json& x : v) {
    if (!x.is_number() || !std::isfinite(num(x))) { *ok = false; return out; }
    out.push_back(num(x));
  }
  return out;
}

// aggregation.check_spec
void check_aggregation(const json* spec, size_t k, Card& card) {
  if (!spec || spec->is_null() || (spec->is_string() && spec->get<std::string>() == "mean_log_prob")) return;
  if (spec->is_object() && spec->contains("method") && (*spec)["method"] == "pooled_logistic") {
    const size_t nf = 5 * k;
    bool ok = spec->contains("coef") && spec->contains("intercept") && spec->contains("mean") && spec->contains("scale");
    PooledLogistic pl;
    if (ok) {
      const json& coef = (*spec)["coef"];
      if (!coef.is_array() || coef.size() != k) ok = false;
      for (size_t i = 0; ok && i < k; ++i) {
        auto row = numbers(coef[i], nf, &ok);
        pl.coef.insert(pl.coef.end(), row.begin(), row.end());
      }
      if (ok) pl.intercept = numbers((*spec)["intercept"], k, &ok);
      if (ok) pl.mean = numbers((*spec)["mean"], nf, &ok);
      if (ok) pl.scale = numbers((*spec)["scale"], nf, &ok);
      for (size_t i = 0; ok && i < pl.scale.size(); ++i) ok = pl.scale[i] > 0;
    }
    if (!ok)
      field("aggregation", "aggregation 'pooled_logistic' needs finite coef (K, 5K), intercept (K,), mean and "
                           "scale (5K,) with scale > 0");
    card.pooled = true;
    card.pooled_logistic = std::move(pl);
    return;
  }
  field("aggregation", "unknown aggregation " + brief(*spec) + ": expected 'mean_log_prob' or a pooled_logistic rule");
}

// operating_point.check_operating_point
void check_operating_point(const json& op, Card& card) {
  if (!op.is_object()) field("operating_point", "must be an object");
  int pos = -1;
  if (op.contains("positive") && op["positive"].is_string())
    for (size_t i = 0; i < card.classes.size(); ++i)
      if (card.classes[i] == op["positive"].get<std::string>()) pos = int(i);
  if (pos < 0) field("operating_point", "positive must be one of the classes");
  const json* t = op.contains("threshold") ? &op["threshold"] : nullptr;
  if (!t || !t->is_number() || !(std::isfinite(num(*t)) && num(*t) >= 0.0 && num(*t) <= 1.0))
    field("operating_point", "threshold must be a number in [0, 1]");
  static const std::regex sens(R"(^sensitivity>=(0(\.\d+)?|1(\.0+)?)$)");
  const json* rule = op.contains("rule") ? &op["rule"] : nullptr;
  if (!rule || !rule->is_string() || !(rule->get<std::string>() == "youden" || std::regex_match(rule->get<std::string>(), sens)))
    field("operating_point", "rule must be 'youden' or 'sensitivity>=S' (S in (0, 1])");
  for (const char* key : {"val_sensitivity", "val_specificity"}) {
    if (!op.contains(key) || op[key].is_null()) continue;
    const json& v = op[key];
    if (!v.is_number() || !(std::isfinite(num(v)) && num(v) >= 0.0 && num(v) <= 1.0))
      field("operating_point", std::string(key) + " must be a number in [0, 1] or null");
  }
  card.operating_point.present = true;
  card.operating_point.positive = pos;
  card.operating_point.threshold = num(*t);
  card.operating_point.rule = rule->get<std::string>();
}

bool printable_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

void check_fields(const json& m, Card& card) {
  // _validate_manifest
  if (!m.is_object()) bad("not a JSON object");
  if (!m.contains("format") || m["format"] != "thyrofast-bundle") bad("format is not 'thyrofast-bundle'");
  if (!m.contains("format_version") || !is_int(m["format_version"]) || m["format_version"].get<int64_t>() != 1)
    bad("format_version is not supported by this thyrofast (it reads version 1)");
  for (const char* key : {"classes", "arch", "input_shape", "preprocess", "artifacts", "in_channels"})
    if (!m.contains(key)) bad(std::string("missing field '") + key + "'");
  const json& arts = m["artifacts"];
  if (!arts.is_object() || !arts.contains("weights")) bad("no 'weights' artifact");
  for (auto it = arts.begin(); it != arts.end(); ++it) {
    const json& e = it.value();
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("path") || !e.contains("sha256") || !e.contains("bytes"))
      bad("artifact '" + name + "' needs path, sha256 and bytes");
    const json& p = e["path"];
    if (!p.is_string()) bad("artifact '" + name + "' has an unsafe path");
    const std::string ps = p.get<std::string>();
    if (ps.empty() || ps == "." || ps == ".." || ps.find('/') != std::string::npos || ps.find('\\') != std::string::npos)
      bad("artifact '" + name + "' has an unsafe path " + brief(p));
    const json& sha = e["sha256"];
    // Python: len(str) == 64 counts code points; a 64-code-point string that is not hex can only mismatch
    if (!sha.is_string()) bad("artifact '" + name + "' has a malformed sha256");
    {
      size_t cps = 0;
      for (unsigned char c : sha.get<std::string>()) cps += (c & 0xC0) != 0x80;
      if (cps != 64) bad("artifact '" + name + "' has a malformed sha256");
    }
    const json& b = e["bytes"];
    if (!is_int(b) || (b.is_number_integer() && !b.is_number_unsigned() && b.get<int64_t>() < 0))
      bad("artifact '" + name + "': field 'bytes' must be a non-negative integer (the file size)");
    card.artifacts[name] = Artifact{ps, sha.get<std::string>(), b.get<uint64_t>()};
  }
  if (!m["input_shape"].is_array() || m["input_shape"].size() != 3) bad("input_shape must be [C, H, W]");

  // card_schema.check_card_fields
  const json& classes = m["classes"];
  if (!classes.is_array()) field("classes", "must be a list of class names, got " + brief(classes));
  if (classes.size() < 2 || classes.size() > kMaxClasses) field("classes", "must name 2 to 1000 classes");
  std::set<std::string> seen;
  for (size_t i = 0; i < classes.size(); ++i) {
    const json& c = classes[i];
    if (!c.is_string()) field("classes", "entry " + std::to_string(i) + " must be a string");
    const std::string s = c.get<std::string>();
    if (strip(s).empty() || strip(s) != s || !printable_ascii(s))
      field("classes", "entry " + std::to_string(i) + " must be a non-empty printable string without surrounding spaces");
    std::string key = s;
    for (char& ch : key) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    if (!seen.insert(key).second) field("classes", "names " + brief(c) + " twice");
    card.classes.push_back(s);
  }
  const json& arch = m["arch"];
  bool arch_ok = false;
  if (arch.is_string())
    for (const char* a : kArchs) arch_ok = arch_ok || arch.get<std::string>() == a;
  if (!arch_ok) field("arch", "must be a known architecture, got " + brief(arch));
  const json& in_ch = m["in_channels"];
  if (!is_int(in_ch) || (in_ch.get<int64_t>() != 1 && in_ch.get<int64_t>() != 3))
    field("in_channels", "must be the integer 1 or 3, got " + brief(in_ch));
  card.in_channels = int(in_ch.get<int64_t>());
  if (m.contains("width")) {
    const json& w = m["width"];
    if (!is_number(w) || !std::isfinite(num(w)) || !(num(w) > 0 && num(w) <= 4)) field("width", "must be a number in (0, 4]");
  }
  if (m.contains("members")) {
    const json& mm = m["members"];
    if (!is_int(mm) || mm.get<int64_t>() < 1 || mm.get<int64_t>() > kMaxMembers)
      field("members", "must be an integer in [1, 8]");
  }
  if (m.contains("model") && !m["model"].is_object()) field("model", "must be an object");
  const json& shape = m["input_shape"];
  for (const json& v : shape)
    if (!is_int(v)) field("input_shape", "must be [C, H, W] (three integers), got " + brief(shape));
  const int64_t c = shape[0].get<int64_t>(), h = shape[1].get<int64_t>(), w = shape[2].get<int64_t>();
  if ((c != 1 && c != 3) || h < 1 || h > kMaxSide || w < 1 || w > kMaxSide)
    field("input_shape", "must have C in (1, 3) and 1 <= H, W <= 4096");
  if (c != card.in_channels) field("input_shape", "channels differ from in_channels");
  card.input_c = c; card.input_h = h; card.input_w = w;
  double bound = 0;
  std::string dtype;
  card.preprocess = preprocess_from(m["preprocess"], &bound, &dtype);
  if (card.preprocess.channels != c || card.preprocess.out_h != h || card.preprocess.out_w != w)
    field("preprocess", "gives inputs of another shape than input_shape");
  if (m.contains("temperature")) {
    const json& t = m["temperature"];
    if (!is_number(t)) field("temperature", "must be a number, got " + brief(t));
    if (!(std::isfinite(num(t)) && num(t) >= kTemperatureLo && num(t) <= kTemperatureHi))
      field("temperature", "must be a finite number in [0.01, 100.0], got " + brief(t));
    card.temperature = num(t);
  }
  check_aggregation(m.contains("aggregation") ? &m["aggregation"] : nullptr, card.classes.size(), card);
  if (m.contains("operating_point") && !m["operating_point"].is_null()) check_operating_point(m["operating_point"], card);
  if (m.contains("read")) {
    const json& rd = m["read"];
    bool ok = rd.is_object();
    for (auto it = ok ? rd.begin() : rd.end(); ok && it != rd.end(); ++it) {
      bool key_ok = false;
      for (const char* k : kReadKeys) key_ok = key_ok || it.key() == k;
      ok = key_ok;
    }
    if (ok && rd.contains("crop")) {
      ok = rd["crop"].is_string();
      bool known = false;
      for (const char* cm : kCrops) known = known || (ok && rd["crop"].get<std::string>() == cm);
      ok = ok && known;
    }
    // optional: files read with thyrofast.read(mask_annotations=...); absent means false
    if (ok && rd.contains("mask_annotations")) ok = rd["mask_annotations"].is_boolean();
    if (!ok) field("read", "must be {'crop': one of ('auto', 'detect', 'regions', 'none', 'panes'), "
                           "'mask_annotations': true or false (optional)}");
  }
  if (m.contains("training") && !m["training"].is_object()) field("training", "must be an object");
  if (m.contains("thyrofast_version") && !m["thyrofast_version"].is_string()) field("thyrofast_version", "must be a string");
}

}  // namespace

void unreadable(const std::string& message, const std::string& source) {
  throw Error(ErrorCode::unreadable, "[unreadable] " + message + (source.empty() ? "" : " (" + source + ")"));
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return false;
  out = ss.str();
  return true;
}

Card parse_card(const std::string& text, const std::string& source) {
  // card_schema.parse_card: bounded size, nesting and no duplicate keys; then the field checks.
  if (text.size() > kMaxCardBytes)
    unreadable("thyrofast.json is not valid JSON: " + std::to_string(text.size()) + " bytes; a model card is at most " +
               std::to_string(kMaxCardBytes) + " bytes", source);
  json m;
  try {
    std::vector<std::set<std::string>> keys;
    int depth = 0;
    json::parser_callback_t cb = [&](int, json::parse_event_t event, json& parsed) -> bool {
      switch (event) {
        case json::parse_event_t::object_start:
        case json::parse_event_t::array_start:
          if (++depth > kMaxCardDepth) throw Bad{"nested more than 64 levels deep"};
          if (event == json::parse_event_t::object_start) keys.emplace_back();
          break;
        case json::parse_event_t::object_end:
          keys.pop_back();
          --depth;
          break;
        case json::parse_event_t::array_end:
          --depth;
          break;
        case json::parse_event_t::key:
          if (!keys.back().insert(parsed.get<std::string>()).second)
            throw Bad{"key '" + parsed.get<std::string>() + "' appears twice in one object (which one counts is not defined)"};
          break;
        default:
          break;
      }
      return true;
    };
    m = json::parse(text, cb, /*allow_exceptions=*/true);
  } catch (const Bad& b) {
    unreadable("thyrofast.json is not valid JSON: " + b.message, source);
  } catch (const json::exception& e) {
    unreadable(std::string("thyrofast.json is not valid JSON: ") + e.what(), source);
  }
  Card card;
  try {
    check_fields(m, card);
  } catch (const Bad& b) {
    unreadable("invalid thyrofast.json: " + b.message, source);
  } catch (const json::exception& e) {  // a type the checks above did not foresee: still the card's fault
    unreadable(std::string("invalid thyrofast.json: ") + e.what(), source);
  }
  return card;
}

void check_artifact(const std::string& name, const Artifact& a, const std::string& data, const std::string& file) {
  // Bundle._check + _check_external_data
  if (data.size() != a.bytes)
    unreadable("artifact '" + name + "' (" + a.path + ") has " + std::to_string(data.size()) +
                   " bytes, thyrofast.json records " + std::to_string(a.bytes) +
                   ": the bundle was modified or corrupted; refusing to load it", file);
  const std::string digest = sha256_hex(data.data(), data.size());
  if (digest != a.sha256)
    unreadable("artifact '" + name + "' (" + a.path + ") fails its SHA-256 check (expected " + a.sha256.substr(0, 16) +
                   "..., got " + digest.substr(0, 16) + "...): the bundle was modified or corrupted; refusing to load it",
               file);
  if (name.compare(0, 4, "onnx") == 0) refuse_external_data(data, "artifact '" + name + "'", file);
}

}  // namespace detail
}  // namespace thyrofast
