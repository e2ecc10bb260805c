// bundle.refuse_external_data in C++: an ONNX artifact must hold every tensor itself.
//
// External data is not covered by the card's SHA-256 (and a runtime given bytes resolves a
// bare `location` against the working directory), so a graph that takes any tensor from
// external data is refused.  Python walks the parsed protobuf generically; here a small
// wire-format reader walks exactly the fields of onnx.proto (IR v10) that can hold a
// TensorProto, however deeply nested (subgraphs, functions, sparse tensors, training info):
//   ModelProto.graph(7) functions(25) training_info(20)
//   TrainingInfoProto.initialization(1) algorithm(2)
//   GraphProto.node(1) initializer(5) sparse_initializer(15)
//   NodeProto.attribute(5)
//   AttributeProto.t(5) g(6) tensors(10) graphs(11) sparse_tensor(22) sparse_tensors(23)
//   FunctionProto.node(7) attribute_proto(11)
//   SparseTensorProto.values(1) indices(2)
//   TensorProto.external_data(13) data_location(14; EXTERNAL = 1)
// Bytes that are not well-formed protobuf are refused as "not a valid ONNX model", as
// protobuf's parser refuses them in Python.
#include <cstdint>
#include <string>

#include "card.h"

namespace thyrofast {
namespace detail {
namespace {

enum class Msg { model, training_info, graph, node, attribute, function, sparse, tensor };

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
};

struct Malformed {
  const char* what;
};

uint64_t varint(Reader& r) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r.p >= r.end) throw Malformed{"truncated varint"};
    const uint8_t b = *r.p++;
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw Malformed{"varint too long"};
}

// The message type a length-delimited field of `m` holds, or nullptr-like false.
bool child(Msg m, uint32_t field, Msg& out) {
  switch (m) {
    case Msg::model:
      if (field == 7) return out = Msg::graph, true;
      if (field == 25) return out = Msg::function, true;
      if (field == 20) return out = Msg::training_info, true;
      return false;
    case Msg::training_info:
      if (field == 1 || field == 2) return out = Msg::graph, true;
      return false;
    case Msg::graph:
      if (field == 1) return out = Msg::node, true;
      if (field == 5) return out = Msg::tensor, true;
      if (field == 15) return out = Msg::sparse, true;
      return false;
    case Msg::node:
      if (field == 5) return out = Msg::attribute, true;
      return false;
    case Msg::attribute:
      if (field == 5 || field == 10) return out = Msg::tensor, true;
      if (field == 6 || field == 11) return out = Msg::graph, true;
      if (field == 22 || field == 23) return out = Msg::sparse, true;
      return false;
    case Msg::function:
      if (field == 7) return out = Msg::node, true;
      if (field == 11) return out = Msg::attribute, true;
      return false;
    case Msg::sparse:
      if (field == 1 || field == 2) return out = Msg::tensor, true;
      return false;
    case Msg::tensor:
      return false;
  }
  return false;
}

// Walk one message; returns true if it (or anything inside) uses external data.
bool walk(Reader r, Msg m, int depth) {
  if (depth > 100) throw Malformed{"nested too deeply"};  // protobuf's default recursion limit
  bool external = false;
  while (r.p < r.end) {
    const uint64_t key = varint(r);
    const uint32_t field = uint32_t(key >> 3);
    const int wire = int(key & 7);
    if (field == 0) throw Malformed{"field number 0"};
    switch (wire) {
      case 0: {
        const uint64_t v = varint(r);
        if (m == Msg::tensor && field == 14 && v == 1) external = true;  // data_location = EXTERNAL
        break;
      }
      case 1:
        if (r.end - r.p < 8) throw Malformed{"truncated fixed64"};
        r.p += 8;
        break;
      case 5:
        if (r.end - r.p < 4) throw Malformed{"truncated fixed32"};
        r.p += 4;
        break;
      case 2: {
        const uint64_t len = varint(r);
        if (len > uint64_t(r.end - r.p)) throw Malformed{"truncated length-delimited field"};
        Reader sub{r.p, r.p + len};
        r.p += len;
        if (m == Msg::tensor && field == 13) external = true;  // an external_data entry
        Msg c;
        if (child(m, field, c) && walk(sub, c, depth + 1)) external = true;
        break;
      }
      case 3:
      case 4:
        throw Malformed{"group wire types are not used by ONNX"};
      default:
        throw Malformed{"invalid wire type"};
    }
  }
  return external;
}

}  // namespace

void refuse_external_data(const std::string& data, const std::string& what, const std::string& source) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  bool external;
  try {
    external = walk(Reader{p, p + data.size()}, Msg::model, 0);
  } catch (const Malformed& m) {
    unreadable(what + " is not a valid ONNX model: " + m.what, source);
  }
  if (external)
    unreadable(what + " takes a tensor from external data, which the model card's SHA-256 does not cover; bundle "
                      "models must hold all their tensors; refusing to load it",
               source);
}

}  // namespace detail
}  // namespace thyrofast
