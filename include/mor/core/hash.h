// FNV-1a 64: the project's one non-cryptographic content hash (data fingerprints, evaluation data
// and model digests). Incremental: fnv1a64(fnv1a64(kFnv1aOffset, a), b) == hash of a then b.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mor::core {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ULL;

// Continues hash `h` over `bytes`.
uint64_t fnv1a64(uint64_t h, std::string_view bytes);
// Continues hash `h` over the bytes of a file (memory-mapped); throws naming the path.
uint64_t fnv1a64_file(uint64_t h, const std::string& path);
// 16 lower-case hex digits.
std::string hex64(uint64_t value);

}  // namespace mor::core
