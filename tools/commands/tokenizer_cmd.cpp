// `mor tokenizer train|encode|decode|info`: train a byte-level BPE on text files (mor/io/bpe_trainer.h)
// and look at what a tokenizer.json does to a string. The work is in the library; this file maps
// flags to options and prints.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/progress.h"
#include "mor/io/bpe_trainer.h"
#include "mor/io/tokenizer.h"

namespace mor::tools {

namespace {

struct TrainFlags {
  std::vector<std::string> inputs;
  std::string out;
  int64_t vocab_size = 0;
  int64_t min_frequency = 2;
  std::vector<std::string> specials;
  bool no_special = false;
  bool split_digits = false;
  int threads = 0;
  std::string text_field = "text";
  std::vector<std::string> extensions;
  bool quiet = false;
};

// Maps the trainer's (phase, done, total) reports onto one core::Progress per phase.
class PhaseProgress {
 public:
  explicit PhaseProgress(bool quiet) : quiet_(quiet) {}

  void report(std::string_view phase, int64_t done, int64_t total) {
    if (quiet_) return;
    if (!bar_ || phase != phase_) {
      if (bar_) bar_->finish();
      phase_ = std::string(phase);
      core::Progress::Options o;
      o.unit = phase == "counting" ? core::Progress::Unit::kBytes : core::Progress::Unit::kCount;
      bar_ = std::make_unique<core::Progress>(phase == "counting" ? "counting words" : "learning merges", total, o);
      done_ = 0;
    }
    if (done > done_) bar_->add(done - done_);
    done_ = done;
  }
  void finish() {
    if (bar_) bar_->finish();
  }

 private:
  bool quiet_;
  std::string phase_;
  std::unique_ptr<core::Progress> bar_;
  int64_t done_ = 0;
};

// The written file must load in our Tokenizer, have every token, and round-trip a few strings.
void check_written(const std::string& json, const mor::io::BpeModel& model, const std::string& path) {
  const auto tokenizer = mor::io::Tokenizer::from_json(json, path);
  MOR_CHECK(tokenizer.vocab_size() == static_cast<int64_t>(model.vocab.size()), path, ": the written tokenizer has ",
            tokenizer.vocab_size(), " tokens, the trainer made ", model.vocab.size(), " (internal error)");
  for (const std::string text : {"Hello, world! 12345", "  indented\n\ttabs\r\n", "naïve 東京 😀", "\xff\xfe bytes"}) {
    MOR_CHECK(tokenizer.decode(tokenizer.encode(text)) == text, path,
              ": the written tokenizer does not round-trip text (internal error)");
  }
}

int run_train(const TrainFlags& f) {
  const auto start = std::chrono::steady_clock::now();
  mor::io::BpeTrainerOptions options;
  options.vocab_size = f.vocab_size;
  options.min_frequency = f.min_frequency;
  options.split_digits = f.split_digits;
  options.threads = f.threads;
  if (!f.no_special) options.special_tokens = f.specials.empty() ? std::vector<std::string>{"<|endoftext|>"} : f.specials;
  MOR_CHECK(!(f.no_special && !f.specials.empty()), "mor tokenizer train: --no-special and --special exclude each other");
  mor::io::BpeCorpusOptions corpus;
  corpus.text_field = f.text_field;
  corpus.extensions = f.extensions;

  PhaseProgress progress(f.quiet);
  mor::io::BpeCorpusStats stats;
  const auto model = mor::io::train_bpe_from_files(
      f.inputs, options, corpus, [&](std::string_view phase, int64_t done, int64_t total) { progress.report(phase, done, total); },
      &stats);
  progress.finish();
  const std::string json = model.to_json();
  check_written(json, model, f.out);
  const auto slash = f.out.find_last_of('/');
  if (slash != std::string::npos && slash > 0) core::make_directories(f.out.substr(0, slash));
  core::atomic_write(f.out, json);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!f.quiet) {
    std::printf("trained a %lld-token byte-level BPE (%zu specials, %zu merges%s) on %lld files, %lld documents, "
                "%.1f MB, %lld distinct words in %.1f s -> %s\n",
                static_cast<long long>(model.vocab.size()), model.special_tokens.size(), model.merges.size(),
                f.split_digits ? ", digits split" : "", static_cast<long long>(stats.files),
                static_cast<long long>(stats.documents), static_cast<double>(stats.bytes) / 1e6,
                static_cast<long long>(stats.distinct_words), seconds, f.out.c_str());
    if (static_cast<int64_t>(model.vocab.size()) < f.vocab_size) {
      std::printf("note: stopped below --vocab-size %lld: no pair occurs --min-frequency %lld times any more\n",
                  static_cast<long long>(f.vocab_size), static_cast<long long>(f.min_frequency));
    }
  }
  return 0;
}

void register_tokenizer_commands(CLI::App& app, Action& action) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Train byte-level BPE tokenizers and inspect tokenizer.json files");
  tok->require_subcommand(1);

  auto f = std::make_shared<TrainFlags>();
  CLI::App* train = tok->add_subcommand(
      "train",
      "Learn a byte-level BPE from text files, directories (recursive), .jsonl and .jsonl.zst and write a "
      "tokenizer.json that the `tokenizers` library loads (docs/tokenizer-training.md)");
  train->add_option("inputs", f->inputs, "Input files, directories or globs")->required();
  train->add_option("-o,--out", f->out, "The tokenizer.json to write")->required();
  train->add_option("--vocab-size", f->vocab_size, "Vocabulary size: special tokens + 256 bytes + merges")
      ->required()
      ->check(CLI::PositiveNumber);
  train->add_option("--min-frequency", f->min_frequency, "Merge only pairs that occur at least this many times")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train->add_option("--special", f->specials,
                    "A special token (repeatable; ids 0.. in order). Default: <|endoftext|>")
      ->allow_extra_args(false);
  train->add_flag("--no-special", f->no_special, "No special tokens at all");
  train->add_flag("--split-digits", f->split_digits,
                  "Split every digit off before the GPT-2 pattern (Digits(individual_digits=true), as SmolLM)");
  train->add_option("-j,--threads", f->threads, "Word-counting threads (0 = every core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train->add_option("--text-field", f->text_field, "JSONL field holding the document text")->capture_default_str();
  train->add_option("--ext", f->extensions,
                    "Only files ending so in directories and globs, e.g. --ext .txt --ext .jsonl (default: all)")
      ->allow_extra_args(false);
  train->add_flag("-q,--quiet", f->quiet, "No progress display and no summary");
  train->callback([f, &action] { action = [f] { return run_train(*f); }; });

  auto enc_tok = std::make_shared<std::string>();
  auto enc_text = std::make_shared<std::optional<std::string>>();
  auto enc_file = std::make_shared<std::string>();
  auto enc_tokens = std::make_shared<bool>(false);
  CLI::App* encode = tok->add_subcommand("encode", "Print the ids of a text (special tokens in the text are matched)");
  encode->add_option("tokenizer", *enc_tok, "tokenizer.json")->required();
  auto* text_opt = encode->add_option("--text", *enc_text, "The text to encode");
  auto* file_opt = encode->add_option("--file", *enc_file, "Encode the whole content of this file instead");
  text_opt->excludes(file_opt);
  encode->add_flag("--tokens", *enc_tokens, "Print one 'id<TAB>token' line per token instead of the id list");
  encode->callback([=, &action] {
    action = [=] {
      MOR_CHECK(enc_text->has_value() || !enc_file->empty(), "mor tokenizer encode: give --text or --file");
      const auto tokenizer = mor::io::Tokenizer::from_file(*enc_tok);
      const std::string text = enc_text->has_value() ? **enc_text : core::read_file(*enc_file);
      const auto ids = tokenizer.encode(text);
      if (*enc_tokens) {
        for (const int32_t id : ids) std::cout << id << '\t' << tokenizer.id_to_token(id) << '\n';
      } else {
        for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
        std::cout << '\n';
      }
      return 0;
    };
  });

  auto dec_tok = std::make_shared<std::string>();
  auto dec_ids = std::make_shared<std::vector<int32_t>>();
  auto dec_skip = std::make_shared<bool>(false);
  CLI::App* decode = tok->add_subcommand("decode", "Print the text of token ids");
  decode->add_option("tokenizer", *dec_tok, "tokenizer.json")->required();
  decode->add_option("ids", *dec_ids, "Token ids (separated by spaces or commas)")->delimiter(',');
  decode->add_flag("--skip-special", *dec_skip, "Leave special tokens out");
  decode->callback([=, &action] {
    action = [=] {
      const auto tokenizer = mor::io::Tokenizer::from_file(*dec_tok);
      std::cout << tokenizer.decode(*dec_ids, *dec_skip) << '\n';
      return 0;
    };
  });

  auto info_tok = std::make_shared<std::string>();
  CLI::App* info = tok->add_subcommand("info", "Print the vocabulary size, end-of-text id and hash of a tokenizer");
  info->add_option("tokenizer", *info_tok, "tokenizer.json")->required();
  info->callback([=, &action] {
    action = [=] {
      const auto tokenizer = mor::io::Tokenizer::from_file(*info_tok);
      std::cout << *info_tok << ": " << tokenizer.vocab_size() << " tokens";
      if (const auto eos = tokenizer.eos_id()) std::cout << ", end of text " << *eos << " " << tokenizer.id_to_token(*eos);
      std::cout << ", hash " << tokenizer.hash() << '\n';
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("tokenizer", register_tokenizer_commands);

}  // namespace mor::tools
