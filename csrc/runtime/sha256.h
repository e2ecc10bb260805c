// SHA-256 (FIPS 180-4) for the bundle's artifact checks.
//
// Our own compact implementation instead of OpenSSL's libcrypto: the runtime
// hashes a few model files once, at load (hundreds of MB/s is plenty), and a
// device build then needs no libssl of a particular major version (1.1 vs 3
// is an ABI break) nor its licence/FIPS questions.  Verified against the NIST
// vectors in tests/cpp/test_runtime.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace thyrofast {
namespace detail {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex_digest();  // finishes the hash; lowercase hex, 64 characters

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t n);

}  // namespace detail
}  // namespace thyrofast
