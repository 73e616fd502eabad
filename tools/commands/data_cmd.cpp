// `mor data prepare` (text corpora -> token shards + manifest) and `mor data verify` (check a
// prepared directory). The work is in mor/data/prepare.h; this file maps flags to options.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/log.h"
#include "mor/data/prepare.h"
#include "mor/io/bpe_trainer.h"
#include "mor/io/tokenizer.h"

namespace mor::tools {

namespace {

// "100000", "100M", "2.5K", "1G" -> a token count.
int64_t parse_count(const std::string& text, const char* flag) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    fail(flag, ": expected a number such as 100000 or 100M, got '", text, "'");
  }
  double scale = 1;
  const std::string suffix = text.substr(used);
  if (suffix == "K" || suffix == "k") {
    scale = 1e3;
  } else if (suffix == "M" || suffix == "m") {
    scale = 1e6;
  } else if (suffix == "G" || suffix == "g") {
    scale = 1e9;
  } else if (!suffix.empty()) {
    fail(flag, ": unknown suffix '", suffix, "' in '", text, "' (use K, M or G)");
  }
  const double v = value * scale;
  MOR_CHECK(v >= 1 && v < 9.2e18 && v == static_cast<double>(static_cast<int64_t>(v)), flag,
            ": expected a positive whole number, got '", text, "'");
  return static_cast<int64_t>(v);
}

struct PrepareFlags {
  std::vector<std::string> inputs;
  std::string tokenizer;
  std::string out;
  std::string text_field = "text";
  std::vector<std::string> extensions;
  double val_fraction = 0.005;
  uint64_t seed = 1234;
  std::string shard_tokens = "100M";
  int shard_version = 0;
  int threads = 0;
  bool skip_bad = false;
  bool quiet = false;
  int64_t train_tokenizer = 0;
};

// Trains a byte-level BPE of `vocab` tokens (with "<|endoftext|>" as id 0) on the inputs and writes
// it to `path`, which must not exist yet.
void train_tokenizer(const PrepareFlags& f) {
  MOR_CHECK(!mor::core::file_exists(f.tokenizer), "--train-tokenizer: ", f.tokenizer,
            " exists already; remove it to train a new tokenizer, or drop --train-tokenizer to use it");
  mor::io::BpeTrainerOptions options;
  options.vocab_size = f.train_tokenizer;
  options.special_tokens = {"<|endoftext|>"};
  options.threads = f.threads;
  mor::io::BpeCorpusOptions corpus;
  corpus.text_field = f.text_field;
  mor::io::BpeCorpusStats stats;
  mor::io::BpeProgressFn progress;
  if (!f.quiet) {
    progress = [last = std::string()](std::string_view phase, int64_t done, int64_t total) mutable {
      if (phase != last) {
        last = std::string(phase);
        mor::core::log_info("tokenizer training: " + last);
      }
      (void)done;
      (void)total;
    };
  }
  const auto model = mor::io::train_bpe_from_files(f.inputs, options, corpus, progress, &stats);
  const auto slash = f.tokenizer.find_last_of('/');
  if (slash != std::string::npos && slash > 0) mor::core::make_directories(f.tokenizer.substr(0, slash));
  mor::core::atomic_write(f.tokenizer, model.to_json());
  if (!f.quiet) {
    std::printf("trained a %lld-token byte-level BPE on %lld documents (%.1f MB) -> %s\n",
                static_cast<long long>(model.vocab.size()), static_cast<long long>(stats.documents),
                static_cast<double>(stats.bytes) / 1e6, f.tokenizer.c_str());
  }
}

int run_prepare(const PrepareFlags& f) {
  MOR_CHECK(!f.tokenizer.empty(), "mor data prepare: give the tokenizer with --tokenizer tokenizer.json");
  if (f.train_tokenizer > 0) train_tokenizer(f);
  const auto tokenizer = mor::io::Tokenizer::from_file(f.tokenizer);
  mor::data::PrepareOptions o;
  o.inputs = f.inputs;
  o.out_dir = f.out;
  o.tokenizer_path = f.tokenizer;
  o.text_field = f.text_field;
  o.extensions = f.extensions;
  o.val_fraction = f.val_fraction;
  o.seed = f.seed;
  o.shard_tokens = parse_count(f.shard_tokens, "--shard-tokens");
  o.shard_version = f.shard_version;
  o.threads = f.threads;
  o.skip_bad = f.skip_bad;
  o.progress = !f.quiet;
  const auto s = mor::data::prepare_corpus(o, tokenizer);
  const int64_t tokens = s.train.tokens + s.val.tokens;
  std::printf("prepared %lld documents from %lld files (%.1f MB of text) in %.1f s: %.2f MB/s, %.0f tokens/s\n",
              static_cast<long long>(s.train.documents + s.val.documents), static_cast<long long>(s.files),
              static_cast<double>(s.text_bytes) / 1e6, s.seconds,
              static_cast<double>(s.text_bytes) / 1e6 / std::max(s.seconds, 1e-9),
              static_cast<double>(tokens) / std::max(s.seconds, 1e-9));
  std::printf("  train: %lld documents, %lld tokens, %zu shards\n", static_cast<long long>(s.train.documents),
              static_cast<long long>(s.train.tokens), s.train.shards.size());
  std::printf("  val:   %lld documents, %lld tokens, %zu shards\n", static_cast<long long>(s.val.documents),
              static_cast<long long>(s.val.tokens), s.val.shards.size());
  if (s.bad_records + s.bad_files + s.empty_documents > 0) {
    std::printf("  skipped: %lld bad records, %lld unreadable files, %lld empty documents\n",
                static_cast<long long>(s.bad_records), static_cast<long long>(s.bad_files),
                static_cast<long long>(s.empty_documents));
  }
  std::printf("  manifest: %s\n", s.manifest_path.c_str());
  return 0;
}

void register_data_commands(CLI::App& app, Action& action) {
  CLI::App* data = app.add_subcommand("data", "Prepare and check token shards");
  data->require_subcommand(1);

  auto f = std::make_shared<PrepareFlags>();
  CLI::App* prepare = data->add_subcommand(
      "prepare",
      "Tokenize text files, directories, .jsonl and .jsonl.zst into token shards with a train/validation "
      "split and a manifest (docs/data.md)");
  prepare->add_option("inputs", f->inputs, "Input files, directories (recursive) or globs")->required();
  prepare->add_option("--tokenizer", f->tokenizer, "tokenizer.json (byte-level BPE with an EOS token)")->required();
  prepare->add_option("-o,--out", f->out, "Output directory for train_*.bin, val_*.bin and manifest.json")->required();
  prepare->add_option("--text-field", f->text_field, "JSONL field holding the document text")->capture_default_str();
  prepare->add_option("--ext", f->extensions,
                      "Only files ending so in directories and globs, e.g. --ext .txt --ext .jsonl (default: all)")
      ->allow_extra_args(false);
  prepare->add_option("--val-fraction", f->val_fraction, "Fraction of documents held out for validation")
      ->check(CLI::Range(0.0, 0.999999))
      ->capture_default_str();
  prepare->add_option("--seed", f->seed, "Seed of the train/validation split")->capture_default_str();
  prepare->add_option("--shard-tokens", f->shard_tokens, "Most tokens per shard (suffixes K, M, G)")
      ->capture_default_str();
  prepare->add_option("--shard-version", f->shard_version,
                      "Shard token width: 0 = smallest that fits the vocabulary, 1 = uint16 (llm.c), 2 = uint32")
      ->check(CLI::IsMember({0, 1, 2}))
      ->capture_default_str();
  prepare->add_option("-j,--threads", f->threads, "Tokenizer threads (0 = every core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  prepare->add_flag("--skip-bad", f->skip_bad,
                    "Skip unreadable files and bad JSON lines (counted in the manifest) instead of stopping");
  prepare->add_flag("-q,--quiet", f->quiet, "No progress display");
  prepare->add_option("--train-tokenizer", f->train_tokenizer,
                      "First train a byte-level BPE of this many tokens on the inputs and write it to --tokenizer "
                      "(which must not exist)")
      ->check(CLI::PositiveNumber);
  prepare->callback([f, &action] { action = [f] { return run_prepare(*f); }; });

  auto verify_dir = std::make_shared<std::string>();
  auto verify_tok = std::make_shared<std::string>();
  CLI::App* verify = data->add_subcommand(
      "verify", "Check a prepared directory: manifest, every shard (header, size, ids) and the tokenizer hash");
  verify->add_option("dir", *verify_dir, "Directory holding manifest.json")->required();
  verify->add_option("--tokenizer", *verify_tok, "Also check that the shards were made with this tokenizer.json");
  verify->callback([verify_dir, verify_tok, &action] {
    action = [verify_dir, verify_tok] {
      std::optional<mor::io::Tokenizer> tok;
      if (!verify_tok->empty()) tok.emplace(mor::io::Tokenizer::from_file(*verify_tok));
      std::cout << *verify_dir << ": ok: " << mor::data::verify_prepared(*verify_dir, tok ? &*tok : nullptr) << "\n";
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("data", register_data_commands);

}  // namespace mor::tools
