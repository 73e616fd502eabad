// libFuzzer target: arbitrary bytes as a GGUF file (header, metadata, tensor infos, and the
// tokenizer built from its metadata). Either parsed or a mor::Error; never a crash or an
// out-of-bounds read (AddressSanitizer, UBSan).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mor/core/error.h"
#include "mor/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = mor::io::GgufFile::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
    for (const auto& t : file.tensors()) {
      if (t.file_offset + t.nbytes > file.file_size()) __builtin_trap();
    }
    try {
      (void)mor::io::tokenizer_from_gguf(file);
    } catch (const mor::Error&) {
    }
  } catch (const mor::Error&) {
  }
  return 0;
}
