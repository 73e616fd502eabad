// Byte-level BPE training (the `tokenizers` library's BpeTrainer in spirit, and merge for merge on
// the same word counts): documents are cut at special-token occurrences, pre-tokenized by the very
// pre-tokenizer the output tokenizer.json declares (ByteLevel(add_prefix_space=false,
// use_regex=true), optionally preceded by Digits(individual_digits=true)), words are counted, and
// merges are learnt greedily.
//
// Invariants of a trained BpeModel:
//   - ids 0..S-1 are the special tokens in the order given; ids S..S+255 are the 256 byte symbols in
//     GPT-2 byte-to-unicode order (= ascending code point of the mapped character); ids S+256.. are
//     the merged tokens in the order they were learnt (merge i creates id S+256+i unless the merged
//     string already existed).
//   - Each step merges the adjacent symbol pair with the highest count (summed over word
//     frequencies, every occurrence counted as BpeTrainer does); ties go to the pair with the
//     smallest (left id, right id). A pair counted fewer than min_frequency times stops training.
//   - Word counts, hence the model, do not depend on the number of threads or on how documents are
//     batched; the words are processed in byte-wise sorted order.
//   - Special tokens never take part in a merge: their occurrences are cut out of the text first.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mor::io {

struct BpeTrainerOptions {
  int64_t vocab_size = 0;                   // total: specials + 256 bytes + merges
  int64_t min_frequency = 2;                // smallest pair count that may still be merged
  std::vector<std::string> special_tokens;  // ids 0.. in this order
  bool split_digits = false;                // Digits(individual_digits=true) before ByteLevel (SmolLM)
  int threads = 0;                          // word counting; 0 = every core
};

// Progress of a long phase: `done` of `total` units (bytes while counting, merges while merging).
using BpeProgressFn = std::function<void(std::string_view phase, int64_t done, int64_t total)>;

struct BpeModel {
  std::vector<std::string> vocab;                          // id -> token (byte-level form)
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<std::string> special_tokens;
  bool split_digits = false;

  // tokenizer.json as the `tokenizers` library writes it (model BPE, ByteLevel pre-tokenizer,
  // post-processor and decoder, the specials as added tokens).
  std::string to_json() const;
};

// Counts words and learns merges. add_* may be called any number of times before train().
class BpeTrainer {
 public:
  // Throws mor::Error for vocab_size < specials + 256, an empty or duplicated special token, or one
  // that equals a byte symbol.
  explicit BpeTrainer(BpeTrainerOptions options);
  BpeTrainer(BpeTrainer&&) noexcept;
  BpeTrainer& operator=(BpeTrainer&&) noexcept;
  ~BpeTrainer();

  // Adds the documents' words (multi-threaded over documents and over chunks of long documents).
  void add_documents(std::span<const std::string> documents);
  void add_document(std::string_view document);
  // Adds `count` occurrences of a pre-tokenized word given in raw bytes (tests, external counts).
  void add_word(std::string_view raw_bytes, int64_t count = 1);

  int64_t documents() const;
  int64_t bytes() const;
  int64_t distinct_words() const;

  // The pieces BPE merges within, in byte-level form: exactly Tokenizer::pretokenize of the output
  // tokenizer, with special tokens cut out.
  std::vector<std::string> pretokenize(std::string_view text) const;

  // Learns the merges. Throws mor::Error when no word was added.
  BpeModel train(const BpeProgressFn& progress = {}) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The GPT-2 byte-to-unicode mapping: the UTF-8 form of the character that stands for `byte`.
const std::string& byte_level_symbol(uint8_t byte);

// ---- Training from files (the `mor tokenizer train` command) ----------------------------------------

struct BpeCorpusOptions {
  std::string text_field = "text";      // .jsonl / .jsonl.zst: the string field holding a document
  std::vector<std::string> extensions;  // keep only files ending so in directories and globs; empty: all
};

// Files named by `inputs` (files, directories recursively without hidden entries, globs): each
// input's files sorted byte-wise, a file named twice kept once, `extensions` as in core::list_files.
// How a file is read: *.jsonl and *.jsonl.zst hold one document per non-blank line (`text_field`),
// *.zst is one zstd-compressed text document, anything else is one text document.
std::vector<std::string> bpe_corpus_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& extensions = {});

// Calls `sink` with every document of `path`. Throws mor::Error naming the file (and the line for
// JSONL: invalid JSON, missing or non-string field).
void read_corpus_documents(const std::string& path, const BpeCorpusOptions& corpus,
                           const std::function<void(std::string&&)>& sink);

struct BpeCorpusStats {
  int64_t files = 0;
  int64_t documents = 0;
  int64_t bytes = 0;
  int64_t distinct_words = 0;
};

// Reads every input, counts words and trains. Throws mor::Error naming the inputs when they hold no
// text at all.
BpeModel train_bpe_from_files(const std::vector<std::string>& inputs, const BpeTrainerOptions& options,
                              const BpeCorpusOptions& corpus, const BpeProgressFn& progress = {},
                              BpeCorpusStats* stats = nullptr);

}  // namespace mor::io
