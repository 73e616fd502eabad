// FNV-1a 64 (see hash.h).
#include "mor/core/hash.h"

#include "mor/core/file.h"

namespace mor::core {

uint64_t fnv1a64(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

uint64_t fnv1a64_file(uint64_t h, const std::string& path) {
  return fnv1a64(h, MappedFile::open(path).view());
}

std::string hex64(uint64_t value) {
  static const char* kHex = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[static_cast<size_t>(i)] = kHex[value & 0xF];
  return out;
}

}  // namespace mor::core
