// Byte-level BPE tokenizer compatible with Hugging Face `tokenizers` tokenizer.json files
// (model BPE, ByteLevel pre-tokenizer with the GPT-2 split pattern, optional Digits splitting as in
// SmolLM, added/special tokens). encode() gives the same ids as the `tokenizers` library on valid
// UTF-8; decode(encode(s)) == s for every byte string, invalid UTF-8 included.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mor::io {

class Tokenizer {
 public:
  // Loads tokenizer.json; throws mor::Error naming the file and the JSON path at fault.
  static Tokenizer from_file(const std::string& path);
  // Same from JSON text; `source_name` stands in for the file name in errors.
  static Tokenizer from_json(std::string_view json, const std::string& source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Added/special tokens appearing in `text` are matched first (as the library does), the rest is
  // pre-tokenized and merged. No BOS/EOS is added.
  std::vector<int32_t> encode(std::string_view text) const;
  // Encodes each text; threads = 0 uses every core. Output order matches input order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, int threads = 0) const;
  // Concatenated token bytes; skip_special drops special added tokens. Throws on ids out of range.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The pre-tokenizer alone: the pieces (byte-level, i.e. GPT-2 byte-to-unicode mapped) that BPE
  // merges within. Exposed for the BPE trainer.
  std::vector<std::string> pretokenize(std::string_view text) const;

  int64_t vocab_size() const;  // including added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;
  // Byte values with no single-byte token (e.g. 21 in SmolLM2: 0x04, 0xC0, 0xF5-0xFF, ...). encode()
  // drops them, as the library does (or maps them to model.unk_token when set), so
  // decode(encode(s)) == s holds exactly for strings without them; empty for our trained tokenizers.
  std::vector<uint8_t> bytes_without_token() const;
  // End-of-text id: "<|endoftext|>" if present, else the first special token; nullopt if none.
  std::optional<int32_t> eos_id() const;
  // Hex digest identifying the vocabulary, merges, pre-tokenizer and added tokens.
  std::string hash() const;
  // A tokenizer.json the `tokenizers` library loads and that encodes identically.
  std::string to_json() const;

  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mor::io
