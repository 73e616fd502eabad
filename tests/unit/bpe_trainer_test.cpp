// Unit tests of the byte-level BPE trainer (mor/io/bpe_trainer.h): merges on toy corpora against
// hand-computed expectations, the tie-break, min_frequency, special tokens, option errors, the empty
// corpus, determinism across threads and batching, chunked counting of long documents, round trips
// through the trained tokenizer, and parity with the `tokenizers` library on a tokenizer trained by
// `mor tokenizer train` (tests/fixtures/tokenizer/mor-trained, made by
// tests/tools/check_trained_tokenizer.py).
#include "mor/io/bpe_trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "mor/core/error.h"
#include "mor/io/tokenizer.h"
#include "error_testing.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::io {
namespace {

namespace fs = std::filesystem;
using mor::testing::error_of;
using mor::testing::kNoError;
using Merges = std::vector<std::pair<std::string, std::string>>;

const fs::path kFixtureDir = fs::path(MOR_SOURCE_DIR) / "tests/fixtures/tokenizer/mor-trained";

BpeTrainerOptions options(int64_t vocab_size, int64_t min_frequency = 1, std::vector<std::string> specials = {}) {
  BpeTrainerOptions o;
  o.vocab_size = vocab_size;
  o.min_frequency = min_frequency;
  o.special_tokens = std::move(specials);
  o.threads = 1;
  return o;
}


// A reproducible corpus of pseudo-English with numbers, punctuation, indentation, blank lines,
// tabs, CRLF and non-ASCII text; documents of very different lengths.
std::vector<std::string> generated_corpus(int documents, size_t long_document_bytes) {
  static const char* kWords[] = {"the", "of", "recursion", "router", "token", "mixture", "depth", "shared",
                                 "layer", "cache", "key", "value", "attention", "model", "train", "ing",
                                 "é", "naïve", "über", "東京", "😀", "x", "don't", "it's", "we'll"};
  static const char* kSeps[] = {" ", " ", " ", " ", ", ", ". ", "\n", "\n\n", "  ", "\t", "\r\n", "\n    ", "; "};
  std::mt19937 rng(7);
  auto text = [&](size_t bytes) {
    std::string s;
    while (s.size() < bytes) {
      const auto r = rng() % 100;
      if (r < 8) {
        s += std::to_string(rng() % 100000);
      } else if (r < 30) {  // pseudo-words: many distinct pairs
        for (int k = 2 + int(rng() % 6); k > 0; --k) s += char('a' + rng() % 12);
      } else {
        s += kWords[rng() % std::size(kWords)];
      }
      s += kSeps[rng() % std::size(kSeps)];
    }
    return s;
  };
  std::vector<std::string> docs;
  for (int d = 0; d < documents; ++d) docs.push_back(text(200 + (rng() % 3000)));
  if (long_document_bytes > 0) docs.push_back(text(long_document_bytes));
  return docs;
}

// ---- Toy corpora, hand-computed -----------------------------------------------------------------------

// "aaab aab ab" pre-tokenizes into the words aaab, Ġaab, Ġab (once each). Pair counts, every
// occurrence counted: (a,a) 3 [two in aaab, one in Ġaab], (a,b) 3, (Ġ,a) 2. Ids: a 64, b 65, Ġ 220,
// new tokens 256.. in order.
//   1. (a,a) and (a,b) tie at 3; (64,64) < (64,65), so aa (256)  -> aa·a·b, Ġ·aa·b, Ġ·a·b
//   2. (a,b) 2                                   -> ab (257)     -> aa·ab, Ġ·aa·b, Ġ·ab
//   3. (Ġ,aa) (Ġ,ab) (aa,b) (aa,ab) tie at 1; the smallest ids are (220,256) -> Ġaa (258): Ġaa·b
//   4. (220,257) -> Ġab (259)   5. (256,257) -> aaab (260)   6. (258,65) -> Ġaab (261); no pair left.
TEST(BpeTrainer, ToyCorpusMergesMatchHandComputation) {
  BpeTrainer trainer(options(256 + 100));
  trainer.add_document("aaab aab ab");
  EXPECT_EQ(trainer.pretokenize("aaab aab ab"), (std::vector<std::string>{"aaab", "Ġaab", "Ġab"}));
  const auto model = trainer.train();
  EXPECT_EQ(model.merges,
            (Merges{{"a", "a"}, {"a", "b"}, {"Ġ", "aa"}, {"Ġ", "ab"}, {"aa", "ab"}, {"Ġaa", "b"}}));
  ASSERT_EQ(model.vocab.size(), 256u + 6u);  // training stops when no pair is left
  EXPECT_EQ(std::vector<std::string>(model.vocab.begin() + 256, model.vocab.end()),
            (std::vector<std::string>{"aa", "ab", "Ġaa", "Ġab", "aaab", "Ġaab"}));
}

TEST(BpeTrainer, ByteSymbolsComeInGpt2Order) {
  BpeTrainer trainer(options(256));
  trainer.add_document("x");
  const auto model = trainer.train();
  ASSERT_EQ(model.vocab.size(), 256u);
  EXPECT_EQ(model.vocab[0], "!");    // byte 33, the smallest code point that maps to itself
  EXPECT_EQ(model.vocab[93], "~");   // byte 126
  EXPECT_EQ(model.vocab[94], "¡");   // byte 161
  EXPECT_EQ(model.vocab[188], "Ā");  // byte 0, the first remapped byte (U+0100)
  EXPECT_EQ(model.vocab[220], "Ġ");  // space (U+0120)
  EXPECT_EQ(model.vocab[255], "Ń");  // byte 173 (U+0143)
  EXPECT_EQ(byte_level_symbol(' '), "Ġ");
  EXPECT_EQ(byte_level_symbol('\n'), "Ċ");
}

TEST(BpeTrainer, TiesGoToTheSmallestPairIds) {
  BpeTrainer trainer(options(300));
  trainer.add_word("ba", 2);
  trainer.add_word("ab", 2);
  trainer.add_word("cd", 2);
  EXPECT_EQ(trainer.train().merges, (Merges{{"a", "b"}, {"b", "a"}, {"c", "d"}}));
}

TEST(BpeTrainer, EveryOccurrenceCountsAndMergesGoLeftToRight) {
  // aaaa: (a,a) counted 3 times; merging left to right gives aa·aa, then (aa,aa) once.
  BpeTrainer trainer(options(300));
  trainer.add_word("aaaa");
  EXPECT_EQ(trainer.train().merges, (Merges{{"a", "a"}, {"aa", "aa"}}));
  // abab x5, ba x4: (a,b) 10 beats (b,a) 9; abab becomes ab·ab, so (b,a) drops to 4 and (ab,ab)
  // appears 5 times, which beats it.
  BpeTrainer trainer2(options(300));
  trainer2.add_word("abab", 5);
  trainer2.add_word("ba", 4);
  EXPECT_EQ(trainer2.train().merges, (Merges{{"a", "b"}, {"ab", "ab"}, {"b", "a"}}));
}

TEST(BpeTrainer, VocabSizeStopsTraining) {
  BpeTrainer trainer(options(256 + 2));
  trainer.add_document("aaab aab ab");
  const auto model = trainer.train();
  EXPECT_EQ(model.vocab.size(), 258u);
  EXPECT_EQ(model.merges, (Merges{{"a", "a"}, {"a", "b"}}));
}

TEST(BpeTrainer, MinFrequencyIsRespected) {
  auto train = [](int64_t min_frequency) {
    BpeTrainer trainer(options(300, min_frequency));
    trainer.add_word("ab", 3);
    trainer.add_word("cd", 2);
    trainer.add_word("ef", 1);
    return trainer.train().merges;
  };
  EXPECT_EQ(train(0), (Merges{{"a", "b"}, {"c", "d"}, {"e", "f"}}));
  EXPECT_EQ(train(1), (Merges{{"a", "b"}, {"c", "d"}, {"e", "f"}}));
  EXPECT_EQ(train(2), (Merges{{"a", "b"}, {"c", "d"}}));
  EXPECT_EQ(train(3), (Merges{{"a", "b"}}));
  EXPECT_TRUE(train(4).empty());
}

// ---- Special tokens and option errors -----------------------------------------------------------------

TEST(BpeTrainer, SpecialTokensGetTheFirstIdsAndAreNeverMerged) {
  const std::vector<std::string> specials = {"<|endoftext|>", "<|pad|>"};
  BpeTrainer trainer(options(400, 2, specials));
  std::string doc;
  for (int i = 0; i < 50; ++i) doc += "hello world<|endoftext|>more text<|pad|><|pad|>";
  trainer.add_document(doc);
  EXPECT_EQ(trainer.pretokenize("a<|endoftext|>b c<|pad|>"), (std::vector<std::string>{"a", "b", "Ġc"}));
  const auto model = trainer.train();
  ASSERT_GE(model.vocab.size(), 258u);
  EXPECT_EQ(model.vocab[0], "<|endoftext|>");
  EXPECT_EQ(model.vocab[1], "<|pad|>");
  EXPECT_EQ(model.vocab[2], "!");
  for (const auto& [a, b] : model.merges) {
    for (const auto& piece : {a, b, a + b}) {
      EXPECT_EQ(piece.find("endof"), std::string::npos) << piece;
      EXPECT_EQ(piece.find("<|"), std::string::npos) << piece;
      EXPECT_EQ(piece.find("pad"), std::string::npos) << piece;
    }
  }
  const auto tokenizer = Tokenizer::from_json(model.to_json(), "trained");
  EXPECT_EQ(tokenizer.encode("<|endoftext|>"), (std::vector<int32_t>{0}));
  EXPECT_EQ(tokenizer.encode("<|pad|>"), (std::vector<int32_t>{1}));
  EXPECT_EQ(tokenizer.eos_id(), 0);
  const auto json = nlohmann::json::parse(model.to_json());
  ASSERT_EQ(json["added_tokens"].size(), 2u);
  EXPECT_EQ(json["added_tokens"][1]["content"], "<|pad|>");
  EXPECT_EQ(json["added_tokens"][1]["id"], 1);
  EXPECT_EQ(json["added_tokens"][1]["special"], true);
}

TEST(BpeTrainer, VocabSizeBelowBytesPlusSpecialsIsAnError) {
  EXPECT_NE(error_of([] { BpeTrainer t(options(255)); }).find("vocab size 255 is smaller than"), std::string::npos);
  EXPECT_NE(error_of([] { BpeTrainer t(options(257, 1, {"<a>", "<b>"})); }).find("2 special tokens + 256"),
            std::string::npos);
  BpeTrainer exact(options(258, 1, {"<a>", "<b>"}));  // no room for merges: fine
  exact.add_document("aaaa");
  const auto model = exact.train();
  EXPECT_EQ(model.vocab.size(), 258u);
  EXPECT_TRUE(model.merges.empty());
}

TEST(BpeTrainer, BadSpecialTokensAreErrors) {
  EXPECT_NE(error_of([] { BpeTrainer t(options(300, 1, {""})); }).find("is empty"), std::string::npos);
  EXPECT_NE(error_of([] { BpeTrainer t(options(300, 1, {"<s>", "<s>"})); }).find("given twice"), std::string::npos);
  EXPECT_NE(error_of([] { BpeTrainer t(options(300, 1, {"a"})); }).find("equals a byte symbol"), std::string::npos);
  EXPECT_NE(error_of([] { BpeTrainer t(options(300, 1, {"\xff"})); }).find("not valid UTF-8"), std::string::npos);
}

TEST(BpeTrainer, EmptyCorpusIsAnErrorNamingTheInputs) {
  EXPECT_NE(error_of([] { BpeTrainer(options(300)).train(); }).find("no text to train on"), std::string::npos);

  const fs::path dir = fs::temp_directory_path() / ("mor_bpe_empty_" + std::to_string(::getpid()));
  fs::create_directories(dir / "sub");
  std::ofstream(dir / "sub" / "empty.txt").close();
  std::ofstream(dir / "blank.jsonl") << "\n  \n";
  const std::string message = error_of([&] { train_bpe_from_files({dir.string()}, options(300), {}); });
  EXPECT_NE(message.find("no text to train a tokenizer on in " + dir.string()), std::string::npos) << message;
  EXPECT_NE(message.find("2 files"), std::string::npos) << message;
  const std::string missing = error_of([&] { train_bpe_from_files({(dir / "nope.txt").string()}, options(300), {}); });
  EXPECT_NE(missing.find((dir / "nope.txt").string()), std::string::npos) << missing;
  fs::remove_all(dir);
}

TEST(BpeTrainer, JsonlErrorsNameFileAndLine) {
  const fs::path dir = fs::temp_directory_path() / ("mor_bpe_jsonl_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto path = (dir / "docs.jsonl").string();
  auto message = [&](const std::string& content, const std::string& field = "text") {
    std::ofstream(path) << content;
    BpeCorpusOptions corpus;
    corpus.text_field = field;
    return error_of([&] { train_bpe_from_files({path}, options(300), corpus); });
  };
  EXPECT_NE(message("{\"text\": \"ok\"}\n{\"text\": \n").find(path + ":2: invalid JSON"), std::string::npos);
  EXPECT_NE(message("{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n").find(path + ":3: no field \"text\""),
            std::string::npos);
  EXPECT_NE(message("{\"text\": 5}\n").find(path + ":1: field \"text\" is not a string"), std::string::npos);
  EXPECT_EQ(message("{\"body\": \"a b\"}\n", "body"), kNoError);
  fs::remove_all(dir);
}

// ---- Determinism and counting -------------------------------------------------------------------------

TEST(BpeTrainer, OutputDoesNotDependOnThreadsOrBatching) {
  const auto docs = generated_corpus(200, 700'000);  // the long one is cut into chunks
  std::string reference;
  for (const int threads : {1, 2, 3, 8}) {
    auto o = options(600, 2, {"<|endoftext|>"});
    o.threads = threads;
    BpeTrainer trainer(o);
    if (threads == 3) {
      for (const auto& d : docs) trainer.add_document(d);
    } else {
      trainer.add_documents(docs);
    }
    const auto json = trainer.train().to_json();
    if (reference.empty()) {
      reference = json;
    } else {
      EXPECT_EQ(json, reference) << "threads " << threads;
    }
  }
}

// A long document is counted in chunks; the counts must equal those of pre-tokenizing it whole.
TEST(BpeTrainer, ChunkedCountingEqualsWholeDocumentPreTokenization) {
  for (const bool split_digits : {false, true}) {
    const auto doc = generated_corpus(0, 1'500'000).back();
    auto o = options(700, 2);
    o.split_digits = split_digits;
    o.threads = 4;
    BpeTrainer chunked(o);
    chunked.add_document(doc);
    BpeTrainer whole(o);
    std::map<std::string, uint8_t> byte_of;  // byte-level symbol -> byte
    for (int b = 0; b < 256; ++b) byte_of[byte_level_symbol(uint8_t(b))] = uint8_t(b);
    std::map<std::string, int64_t> counts;
    for (const auto& piece : chunked.pretokenize(doc)) {  // whole document, no chunks
      std::string raw;
      for (size_t i = 0; i < piece.size();) {
        const size_t len = static_cast<unsigned char>(piece[i]) < 0x80 ? 1 : 2;
        raw.push_back(char(byte_of.at(piece.substr(i, len))));
        i += len;
      }
      ++counts[raw];
    }
    for (const auto& [word, count] : counts) whole.add_word(word, count);
    EXPECT_EQ(chunked.distinct_words(), whole.distinct_words());
    EXPECT_EQ(chunked.train().to_json(), whole.train().to_json()) << "split_digits " << split_digits;
  }
}

TEST(BpeTrainer, SplitDigitsIsolatesDigitsAndIsDeclared) {
  auto o = options(300);
  o.split_digits = true;
  BpeTrainer trainer(o);
  EXPECT_EQ(trainer.pretokenize("in 2024!"), (std::vector<std::string>{"in", "Ġ", "2", "0", "2", "4", "!"}));
  trainer.add_document("in 2024 and 2025 and 1999");
  const auto model = trainer.train();
  for (const auto& [a, b] : model.merges) EXPECT_EQ((a + b).find_first_of("0123456789"), std::string::npos) << a + b;
  const auto json = nlohmann::json::parse(model.to_json());
  EXPECT_EQ(json["pre_tokenizer"]["type"], "Sequence");
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][0]["individual_digits"], true);
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"], false);
}

// ---- The trained tokenizer ------------------------------------------------------------------------------

TEST(BpeTrainer, TrainedTokenizerRoundTripsAndUsesTheMerges) {
  for (const bool split_digits : {false, true}) {
    auto o = options(1000, 2, {"<|endoftext|>"});
    o.split_digits = split_digits;
    o.threads = 2;
    BpeTrainer trainer(o);
    trainer.add_documents(generated_corpus(300, 0));
    const auto model = trainer.train();
    EXPECT_EQ(model.vocab.size(), 1000u);
    const auto tokenizer = Tokenizer::from_json(model.to_json(), "trained");
    EXPECT_EQ(tokenizer.vocab_size(), 1000);
    for (size_t id = 0; id < model.vocab.size(); ++id) {
      EXPECT_EQ(tokenizer.token_to_id(model.vocab[id]), int32_t(id)) << model.vocab[id];
    }
    const std::vector<std::string> texts = {
        "",  "the recursion router", "  leading and trailing   ", "東京 😀 naïve über", "e\xcc\x81 combining",
        "numbers 12345 and 3.14", "tabs\tand\r\nCRLF\n\n\n", std::string(5000, 'a'), "bad \xff\xfe utf-8 \xc3",
        "text<|endoftext|>more", std::string(300, ' ') + "x"};
    for (const auto& text : texts) {
      const auto ids = tokenizer.encode(text);
      EXPECT_EQ(tokenizer.decode(ids), text);
    }
    // A frequent word of the corpus is one token.
    EXPECT_EQ(tokenizer.encode(" recursion").size(), 1u);
    EXPECT_EQ(tokenizer.encode("text<|endoftext|>").back(), 0);
  }
}

TEST(BpeTrainer, ReadsTextJsonlAndDirectories) {
  const fs::path dir = fs::temp_directory_path() / ("mor_bpe_read_" + std::to_string(::getpid()));
  fs::create_directories(dir / "d");
  std::ofstream(dir / "d" / "a.txt") << "alpha beta\ngamma";
  std::ofstream(dir / "d" / ".hidden.txt") << "never read";
  std::ofstream(dir / "b.jsonl") << "{\"text\": \"delta epsilon\", \"id\": 1}\n\n{\"text\": \"zeta\"}\n";
  BpeCorpusStats stats;
  train_bpe_from_files({(dir / "d").string(), (dir / "b.jsonl").string()}, options(300), {}, {}, &stats);
  EXPECT_EQ(stats.files, 2);
  EXPECT_EQ(stats.documents, 3);
  EXPECT_EQ(stats.bytes, int64_t(std::string("alpha beta\ngamma").size() + 13 + 4));
  std::vector<std::string> docs;
  read_corpus_documents((dir / "b.jsonl").string(), {}, [&](std::string&& d) { docs.push_back(d); });
  EXPECT_EQ(docs, (std::vector<std::string>{"delta epsilon", "zeta"}));
  fs::remove_all(dir);
}

TEST(BpeTrainer, ReadsZstdFiles) {
  const fs::path dir = fs::temp_directory_path() / ("mor_bpe_zstd_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write_zstd = [](const fs::path& path, const std::string& text) {
    std::string out(ZSTD_compressBound(text.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
    std::ofstream(path, std::ios::binary) << out;
  };
  std::string long_line(300'000, 'x');  // longer than one decompression block
  write_zstd(dir / "a.jsonl.zst", "{\"text\": \"one two\"}\n{\"text\": \"" + long_line + "\"}\n{\"text\": \"three\"}");
  write_zstd(dir / "b.txt.zst", "plain\ntext\n");
  std::vector<std::string> docs;
  auto sink = [&](std::string&& d) { docs.push_back(d); };
  read_corpus_documents((dir / "a.jsonl.zst").string(), {}, sink);
  read_corpus_documents((dir / "b.txt.zst").string(), {}, sink);
  EXPECT_EQ(docs, (std::vector<std::string>{"one two", long_line, "three", "plain\ntext\n"}));
  std::ofstream(dir / "bad.jsonl.zst", std::ios::binary) << "not zstd at all";
  const auto message = error_of([&] { read_corpus_documents((dir / "bad.jsonl.zst").string(), {}, sink); });
  EXPECT_NE(message.find("cannot decompress " + (dir / "bad.jsonl.zst").string()), std::string::npos) << message;
  std::ifstream whole(dir / "b.txt.zst", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(whole)), std::istreambuf_iterator<char>());
  std::ofstream(dir / "cut.zst", std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  const auto cut = error_of([&] { read_corpus_documents((dir / "cut.zst").string(), {}, sink); });
  EXPECT_NE(cut.find("cannot decompress " + (dir / "cut.zst").string()), std::string::npos) << cut;
  fs::remove_all(dir);
}

// ---- Parity with the `tokenizers` library on a tokenizer trained by `mor tokenizer train` -------------

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Case> read_cases(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>()});
  }
  return cases;
}

class BpeTrainedParity : public ::testing::TestWithParam<std::string> {};

TEST_P(BpeTrainedParity, OurEncodingEqualsTheLibrarys) {
  const auto tokenizer = Tokenizer::from_file((kFixtureDir / (GetParam() + ".json")).string());
  const auto cases = read_cases(kFixtureDir / (GetParam() + ".cases.jsonl"));
  ASSERT_GE(cases.size(), 50u);
  for (const auto& c : cases) {
    EXPECT_EQ(tokenizer.encode(c.text), c.ids) << c.text.substr(0, 200);
    EXPECT_EQ(tokenizer.decode(c.ids), c.text);
  }
}

// The committed tokenizer is what the trainer makes today from the committed corpus with the
// options in <name>.options (guards against silent changes of the training algorithm).
TEST_P(BpeTrainedParity, RetrainingReproducesTheCommittedTokenizer) {
  std::ifstream opt(kFixtureDir / (GetParam() + ".options"));
  BpeTrainerOptions o;
  std::string key;
  while (opt >> key) {
    if (key == "vocab-size") {
      opt >> o.vocab_size;
    } else if (key == "min-frequency") {
      opt >> o.min_frequency;
    } else if (key == "special") {
      opt >> o.special_tokens.emplace_back();
    } else if (key == "split-digits") {
      o.split_digits = true;
    }
  }
  ASSERT_GT(o.vocab_size, 0);
  const auto model = train_bpe_from_files({(kFixtureDir / "corpus.txt").string()}, o, {});
  std::ifstream committed(kFixtureDir / (GetParam() + ".json"));
  std::stringstream ss;
  ss << committed.rdbuf();
  EXPECT_EQ(model.to_json(), ss.str());
}

INSTANTIATE_TEST_SUITE_P(BpeFixtures, BpeTrainedParity, ::testing::Values("bytelevel", "split-digits"),
                         [](const auto& info) { return info.param == "bytelevel" ? "ByteLevel" : "SplitDigits"; });

}  // namespace
}  // namespace mor::io
