// Private to src/io: the pieces of mor::io::Tokenizer (see include/mor/io/tokenizer.h).
//   * TokenizerSpec: a parsed tokenizer.json / GGUF vocabulary before validation (plain data).
//   * Regex: a PCRE2 pattern (UTF + UCP, JIT when available) compiled once, matched from any thread.
//   * PreStep: one pre-tokenizer (Split, Digits, ByteLevel); a chain always ends with ByteLevel.
//   * MergeTable: (left id, right id) -> (rank, merged id), open addressing, read-only after build.
//   * Tokenizer::Impl: everything encode/decode needs; immutable after construction, so one
//     tokenizer may be used from many threads at once (per-thread BPE caches live in tokenizer.cpp).
// Invariants: ids are in [0, 2^31); every merge's parts and result are in the model vocabulary;
// byte_ids[b] is the id of the one-byte token for byte b, or -1 when the vocabulary lacks it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mor/io/tokenizer.h"

namespace mor::io::detail {

// ---- UTF-8 and the GPT-2 byte alphabet ---------------------------------------------------------

// Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 if s[0] starts no valid sequence
// (stray continuation byte, overlong form, surrogate, > U+10FFFF, truncated). Writes the code point.
int utf8_decode(std::string_view s, char32_t* cp);
void utf8_append(std::string& out, char32_t cp);
bool utf8_valid(std::string_view s);
// GPT-2's byte -> code point table: bytes 33-126, 161-172, 174-255 map to themselves, the other 68
// to U+0100.. in ascending byte order.
const std::array<char32_t, 256>& byte_to_unicode();
// Inverse of byte_to_unicode(), -1 for code points outside the alphabet.
int unicode_to_byte(char32_t cp);
// Maps raw bytes to the byte-level alphabet (UTF-8 of the mapped code points).
std::string bytes_to_bytelevel(std::string_view bytes);
// The raw bytes a byte-level token stands for; nullopt if a character is outside the alphabet.
std::optional<std::string> bytelevel_to_bytes(std::string_view token);

// Unicode properties the added-token matcher needs (Rust regex's \s and \w, which `tokenizers`
// uses for lstrip/rstrip/single_word): White_Space, and word characters.
bool is_white_space(char32_t cp);
bool is_word_char(char32_t cp);

// ---- Regex -------------------------------------------------------------------------------------

class Regex {
 public:
  // Compiles `pattern` (a regex, or a literal when literal = true). \s and \S are rewritten to the
  // Unicode White_Space set, which is what Oniguruma (used by `tokenizers`) means by \s; PCRE2's
  // \s also takes U+180E. Throws std::invalid_argument with PCRE2's message on a bad pattern.
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(begin, end) for each successive non-overlapping match in `subject` (byte
  // offsets). After an empty match the next attempt starts one character later. Thread-safe.
  template <typename F>
  void for_each_match(std::string_view subject, F&& on_match) const {
    size_t pos = 0;
    bool after_empty = false;
    while (pos <= subject.size()) {
      size_t begin = 0;
      size_t end = 0;
      if (!match(subject, pos, after_empty, &begin, &end)) {
        if (!after_empty) break;
        // The empty match could not be followed by a non-empty one here: advance one character.
        after_empty = false;
        pos = next_char(subject, pos);
        continue;
      }
      on_match(begin, end);
      after_empty = (begin == end);
      pos = end;
    }
  }

  const std::string& pattern() const { return pattern_; }

 private:
  // One pcre2_match from `pos`; false when nothing matches. `not_empty_at_start` asks for a
  // non-empty match anchored at pos (the retry after an empty match).
  bool match(std::string_view subject, size_t pos, bool not_empty_at_start, size_t* begin, size_t* end) const;
  static size_t next_char(std::string_view s, size_t pos);

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;      // JIT-compiled: matched with pcre2_jit_match
};

// ---- Pre-tokenizers ----------------------------------------------------------------------------

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
const char* split_behavior_name(SplitBehavior b);

struct PreStep {
  enum class Kind { Split, Digits, ByteLevel };
  Kind kind = Kind::ByteLevel;
  // Split
  std::string pattern;
  bool pattern_is_regex = true;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  // Digits
  bool individual_digits = false;
  // ByteLevel
  bool add_prefix_space = false;
  bool trim_offsets = true;
  bool use_regex = true;
  // Compiled when the tokenizer is built: Split's pattern, Digits' \p{N}, ByteLevel's GPT-2 split.
  std::shared_ptr<const Regex> regex;
};

inline constexpr const char* kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
inline constexpr const char* kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ---- Plain description of a tokenizer (what a file says) ---------------------------------------

struct AddedTokenSpec {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

struct TokenizerSpec {
  std::string source;  // file name used in errors
  // Where the parts live in the source, for error messages ("model.vocab", "tokenizer.ggml.tokens").
  std::string vocab_path = "model.vocab";
  std::string merges_path = "model.merges";
  std::string added_path = "added_tokens";

  std::vector<std::pair<std::string, int32_t>> vocab;       // token -> id, file order
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::vector<AddedTokenSpec> added;                        // file order
  std::vector<PreStep> pre_steps;                           // ends with ByteLevel
  bool pre_is_sequence = false;                             // written back as a Sequence
  bool ignore_merges = false;
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  std::string post_processor_json = "null";  // kept verbatim for to_json()
};

// ---- Merge table -------------------------------------------------------------------------------

class MergeTable {
 public:
  struct Entry {
    uint64_t key;
    int32_t rank;
    int32_t merged;
  };
  void build(const std::vector<Entry>& entries);  // later entries with the same key win
  // nullptr when (left, right) has no merge.
  const Entry* find(int32_t left, int32_t right) const {
    if (mask_ == 0) return nullptr;
    const uint64_t key = make_key(left, right);
    for (uint64_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }
  static uint64_t make_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  std::vector<Entry> slots_;
  uint64_t mask_ = 0;
};

// Transparent string hashing so lookups by string_view need no allocation.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// ---- Added-token matcher -----------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id;
  bool single_word, lstrip, rstrip, normalized, special;
};

// Leftmost-longest, non-overlapping matching of a set of added tokens (as the aho-corasick
// MatchKind::LeftmostLongest that `tokenizers` uses), with single_word / lstrip / rstrip applied.
class AddedMatcher {
 public:
  void build(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Splits `text` into pieces covering it: on_piece(piece, id) with id = -1 for ordinary text.
  template <typename F>
  void split(std::string_view text, F&& on_piece) const;

 private:
  // Longest token matching at `pos`, or -1.
  int longest_at(std::string_view text, size_t pos) const;
  std::vector<AddedToken> tokens_;
  std::array<std::vector<int>, 256> by_first_byte_;  // token indices, longest first
};

// Lower-case hex SHA-256 of `data` (tokenizer_json.cpp).
std::string sha256_hex(std::string_view data);

}  // namespace mor::io::detail

namespace mor::io {

struct Tokenizer::Impl {
  std::string source;
  uint64_t serial = 0;  // unique per Impl, keys the per-thread caches

  // Model vocabulary.
  detail::StringIdMap vocab;                                 // token string -> id
  std::vector<std::pair<std::string, int32_t>> vocab_by_id;  // sorted by id
  std::vector<std::pair<std::string, std::string>> merges;
  detail::MergeTable merge_table;
  std::array<int32_t, 256> byte_ids{};
  detail::StringIdMap vocab_bytes;  // raw bytes -> id (ignore_merges lookups)
  bool ignore_merges = false;
  std::optional<std::string> unk_token;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  // Added tokens.
  std::vector<detail::AddedTokenSpec> added;  // sorted by id
  detail::StringIdMap added_ids;              // content -> id
  detail::AddedMatcher match_raw;             // normalized = false (matched first)
  detail::AddedMatcher match_normalized;      // normalized = true

  // Pre-tokenizer.
  std::vector<detail::PreStep> pre_steps;
  bool pre_is_sequence = false;
  std::string post_processor_json = "null";

  // Per id (size = max id + 1): raw bytes decode() emits, the token string, and its kind.
  enum : uint8_t { kMissing = 0, kModel = 1, kAdded = 2, kSpecial = 3 };
  std::vector<std::string> id_bytes;
  std::vector<std::string> id_strings;
  std::vector<uint8_t> id_kind;

  // Builds and validates; throws mor::Error naming spec.source and the offending path.
  static std::unique_ptr<Impl> build(detail::TokenizerSpec spec);

  // Encoding stages (tokenizer.cpp).
  void encode_into(std::string_view text, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const;
  // Runs the pre-tokenizer chain on text (any bytes) and calls sink(piece) with raw-byte pieces.
  template <typename Sink>
  void pretokenize_bytes(std::string_view text, Sink&& sink) const;

  // tokenizer_json.cpp
  std::string canonical_text() const;  // hashed by hash()
  std::string to_json() const;
};

}  // namespace mor::io
