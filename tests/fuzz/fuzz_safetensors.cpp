// libFuzzer target: arbitrary bytes as a safetensors file. The reader must either accept the file
// (and then every tensor's bytes lie inside it) or throw mor::Error — never crash or read out of
// bounds (built with AddressSanitizer and UBSan).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "mor/core/error.h"
#include "mor/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/mor-fuzz-safetensors-" + std::to_string(::getpid()) + ".safetensors";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mor::io::SafetensorsReader reader(path);
    uint64_t total = 0;
    for (const auto& t : reader.tensors()) {
      const auto bytes = reader.data(t);
      if (bytes.size() != t.nbytes()) __builtin_trap();
      for (const std::byte b : bytes) total += static_cast<uint8_t>(b);  // touch every byte
    }
    for (const auto& [k, v] : reader.metadata()) total += k.size() + v.size();
    if (total == 0xFFFFFFFFFFFFFFFFull) std::puts("");
  } catch (const mor::Error&) {
  }
  return 0;
}
