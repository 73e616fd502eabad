// Unit tests of mor::io::Tokenizer.
//   * Parity: every tests/fixtures/tokenizer/<name>/cases.jsonl (ids produced by the Hugging Face
//     `tokenizers` library, see tests/tools/make_tokenizer_fixtures.py) is encoded to the very same
//     ids and decodes to the library's output.
//   * Round trips: decode(encode(s)) == s for random bytes (invalid UTF-8 included), long inputs.
//   * to_json(): our output reloads (by us; by the library via the script's --check-to-json) and
//     encodes identically; hash() is stable and discriminating; errors name the file and JSON path.
#include "mor/io/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "../../src/io/tokenizer_internal.h"
#include "error_testing.h"
#include "mor/core/error.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::io {
namespace {

namespace fs = std::filesystem;
using mor::testing::expect_error;
using json = nlohmann::json;

const fs::path kFixtures = fs::path(MOR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::vector<Case> load_cases(const std::string& name) {
  std::ifstream in(kFixtures / name / "cases.jsonl");
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    cases.push_back(
        {j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>(), j["decoded"].get<std::string>()});
  }
  return cases;
}

// Cached loads: the SmolLM2 tokenizer takes a while to parse.
const Tokenizer& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::from_file((kFixtures / name / "tokenizer.json").string()));
  return *slot;
}

const std::vector<std::string> kFixtureNames = {"trained-bpe",  "prefix-space",    "digits-split",
                                                "llama3-split", "split-behaviors", "smollm2"};

std::string escaped(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}


// ---- Parity with the `tokenizers` library ------------------------------------------------------

class TokenizerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerParity, EncodesAndDecodesLikeTheLibrary) {
  const std::vector<Case> cases = load_cases(GetParam());
  ASSERT_GE(cases.size(), 100u) << "fixture " << GetParam() << " is missing or short; run the script";
  const Tokenizer& tok = fixture(GetParam());
  int mismatches = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> ids = tok.encode(c.text);
    if (ids != c.ids && ++mismatches <= 5) {
      ADD_FAILURE() << GetParam() << ": encode(" << escaped(c.text) << ") = " << json(ids).dump()
                    << ", the library gives " << json(c.ids).dump();
    }
    EXPECT_EQ(tok.decode(c.ids), c.decoded) << escaped(c.text);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_P(TokenizerParity, EncodeBatchMatchesEncodeInOrder) {
  const std::vector<Case> cases = load_cases(GetParam());
  const Tokenizer& tok = fixture(GetParam());
  std::vector<std::string> texts;
  for (int rep = 0; rep < 5; ++rep) {
    for (const Case& c : cases) texts.push_back(c.text);
  }
  for (int threads : {0, 1, 3}) {
    const auto batch = tok.encode_batch(texts, threads);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], cases[i % cases.size()].ids) << i;
  }
}

TEST_P(TokenizerParity, ToJsonReloadsAndEncodesIdentically) {
  const Tokenizer& tok = fixture(GetParam());
  const std::string text = tok.to_json();
  const Tokenizer again = Tokenizer::from_json(text, GetParam() + " (to_json)");
  EXPECT_EQ(again.hash(), tok.hash());
  EXPECT_EQ(again.vocab_size(), tok.vocab_size());
  EXPECT_EQ(again.to_json(), text);
  for (const Case& c : load_cases(GetParam())) EXPECT_EQ(again.encode(c.text), c.ids) << escaped(c.text);
  // For the library-side check: MOR_TOKENIZER_TO_JSON_DIR=dir, then
  // python tests/tools/make_tokenizer_fixtures.py --check-to-json dir
  if (const char* dir = std::getenv("MOR_TOKENIZER_TO_JSON_DIR")) {
    fs::create_directories(dir);
    std::ofstream(fs::path(dir) / (GetParam() + ".json"), std::ios::binary) << text;
  }
}

TEST(TokenizerBatch, ConcurrentBatchesFromManyThreads) {
  // One batch runs on the shared pool, the others start their own threads: all results agree.
  const Tokenizer& tok = fixture("trained-bpe");
  const std::vector<Case> cases = load_cases("trained-bpe");
  std::vector<std::string> texts;
  for (const Case& c : cases) texts.push_back(c.text);
  std::vector<std::vector<std::vector<int32_t>>> results(4);
  std::vector<std::thread> callers;
  for (size_t t = 0; t < results.size(); ++t) {
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) results[t] = tok.encode_batch(texts, 3);
    });
  }
  for (auto& c : callers) c.join();
  for (const auto& r : results) {
    ASSERT_EQ(r.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(r[i], cases[i].ids);
  }
}

INSTANTIATE_TEST_SUITE_P(TokenizerFixtures, TokenizerParity, ::testing::ValuesIn(kFixtureNames), [](const auto& info) {
  std::string n = info.param;
  for (char& c : n) c = (c == '-') ? '_' : c;
  return n;
});

// ---- Round trips -------------------------------------------------------------------------------

// What decode(encode(s)) gives: s without the bytes the vocabulary has no token for.
std::string without_missing_bytes(const Tokenizer& tok, const std::string& s) {
  const auto missing = tok.bytes_without_token();
  std::string out;
  for (char c : s) {
    if (std::find(missing.begin(), missing.end(), static_cast<uint8_t>(c)) == missing.end()) out += c;
  }
  return out;
}

TEST(TokenizerRoundTrip, RandomBytesIncludingInvalidUtf8) {
  std::mt19937 rng(42);
  for (const char* name : {"trained-bpe", "digits-split", "llama3-split", "smollm2"}) {
    const Tokenizer& tok = fixture(name);
    for (int i = 0; i < 1500; ++i) {
      std::string s(rng() % 200, '\0');
      const int mode = i % 3;
      for (char& c : s) {
        const uint32_t r = rng();
        // mode 0: uniform bytes; 1: mostly ASCII; 2: mostly high bytes (broken multi-byte runs).
        c = static_cast<char>(mode == 0 ? r & 0xFF : mode == 1 ? (r % 10 ? r % 128 : r & 0xFF) : 0x80 | (r & 0x7F));
      }
      const auto ids = tok.encode(s);
      ASSERT_EQ(tok.decode(ids), without_missing_bytes(tok, s)) << name << " case " << i;
    }
  }
}

TEST(TokenizerRoundTrip, EveryByteHasATokenInTrainedTokenizers) {
  EXPECT_TRUE(fixture("trained-bpe").bytes_without_token().empty());
  // SmolLM2's vocabulary lacks 21 byte symbols; the library drops those bytes, and so do we.
  const std::vector<uint8_t> smol = fixture("smollm2").bytes_without_token();
  EXPECT_EQ(smol.size(), 21u);
  EXPECT_EQ(smol.front(), 0x04);
  EXPECT_EQ(smol.back(), 0xFF);
  EXPECT_EQ(fixture("smollm2").decode(fixture("smollm2").encode("a\x04"
                                                                "b\xff")),
            "ab");
}

TEST(TokenizerRoundTrip, ValidTextWithInvalidBytesSpliced) {
  const Tokenizer& tok = fixture("trained-bpe");
  std::mt19937 rng(7);
  for (const char* name : {"trained-bpe", "smollm2"}) {
    for (const Case& c : load_cases(name)) {
      std::string s = c.text;
      for (int k = 0; k < 3 && !s.empty(); ++k) s.insert(rng() % s.size(), 1, static_cast<char>(0x80 | (rng() & 0x7F)));
      EXPECT_EQ(tok.decode(tok.encode(s)), s);
    }
  }
}

TEST(TokenizerRoundTrip, LongInputs) {
  const std::vector<std::string> inputs = {
      std::string(1 << 20, ' '),  // a megabyte of spaces (regex backtracking)
      std::string(300000, '\n') + "x",
      std::string(200000, 'a'),  // one word, heap-based merging
      [] {
        std::string s;
        for (int i = 0; i < 20000; ++i) s += "\xF0\x9F\x98\x80";
        return s;
      }(),
      [] {
        std::string s;
        for (int i = 0; i < 100000; ++i) s += "\xe1\x84";
        return s;
      }(),  // truncated runs
      [] {
        std::string s;
        for (int i = 0; i < 50000; ++i) s += "ab 1\t\n\xff";
        return s;
      }(),
  };
  for (const char* name : {"trained-bpe", "smollm2"}) {
    const Tokenizer& tok = fixture(name);
    for (const std::string& s : inputs) {
      const auto ids = tok.encode(s);
      EXPECT_FALSE(ids.empty());
      EXPECT_TRUE(tok.decode(ids) == without_missing_bytes(tok, s)) << name << ": input of " << s.size() << " bytes";
    }
  }
  // Long words are merged by the heap path; a token-by-token decode must rebuild them.
  const Tokenizer& tok = fixture("smollm2");
  std::string word;
  for (int i = 0; i < 30; ++i) word += "Supercalifragilistic";
  std::string rebuilt;
  for (int32_t id : tok.encode(word)) rebuilt += tok.decode(std::vector<int32_t>{id});
  EXPECT_EQ(rebuilt, word);
}

TEST(TokenizerInvalidUtf8, InvalidBytesArePiecesOfTheirOwn) {
  const Tokenizer& tok = fixture("trained-bpe");
  const auto pieces = tok.pretokenize(
      "ab\xff"
      "cd \xe2\x82 x\xed\xa0\x80");
  std::vector<std::string> want;
  for (std::string p : {"ab", "\xff", "cd", " ", "\xe2", "\x82", " x", "\xed", "\xa0", "\x80"}) {
    want.push_back(detail::bytes_to_bytelevel(p));
  }
  EXPECT_EQ(pieces, want);
  const auto ids = tok.encode("\xff");
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(tok.id_to_token(ids[0]), "\xc3\xbf");  // ÿ, byte 0xFF in GPT-2's alphabet
  for (std::string s : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xc3", "\xe2\x82"}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
    EXPECT_EQ(tok.encode(s).size(),
              std::count_if(s.begin(), s.end(), [](char c) { return c & 0x80; }) + std::count(s.begin(), s.end(), 'a'));
  }
}

// ---- Pre-tokenizer -----------------------------------------------------------------------------

TEST(TokenizerPretokenize, Gpt2AndSmolLMSplits) {
  const std::vector<std::string> gpt2 = {"Hello",
                                         "\xc4\xa0world",
                                         "\xc4\xa0"
                                         "2024",
                                         "'s",
                                         "\xc4\xa0\xc4\xa0",
                                         "\xc4\xa0x"};
  EXPECT_EQ(fixture("trained-bpe").pretokenize("Hello world 2024's   x"), gpt2);
  const std::vector<std::string> smol = {"Hello", "\xc4\xa0world", "\xc4\xa0", "2", "0", "2", "4", "'s"};
  EXPECT_EQ(fixture("smollm2").pretokenize("Hello world 2024's"), smol);
  const std::vector<std::string> digits = {"a", "123", "\xc4\xa0", "45"};
  EXPECT_EQ(fixture("digits-split").pretokenize("a123 45"), digits);
  // Added tokens are not split out by pretokenize (the library's trainer does not either).
  EXPECT_EQ(fixture("trained-bpe").pretokenize("<|endoftext|>").size(), 3u);  // "<|", "endoftext", "|>"
}

TEST(TokenizerPretokenize, WorksOnAnEmptyModelForTheTrainer) {
  const std::string text = R"({"version":"1.0","added_tokens":[],"normalizer":null,
    "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]},
    "decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{},"merges":[]}})";
  const Tokenizer tok = Tokenizer::from_json(text, "empty.json");
  const std::vector<std::string> want = {"x", "1", "2", "\xc4\xa0y"};
  EXPECT_EQ(tok.pretokenize("x12 y"), want);
  EXPECT_EQ(tok.vocab_size(), 0);
  EXPECT_TRUE(tok.encode("abc").empty());  // no symbols: the library drops unknown characters too
}

// ---- API ---------------------------------------------------------------------------------------

TEST(TokenizerApi, VocabularyLookups) {
  const Tokenizer& smol = fixture("smollm2");
  EXPECT_EQ(smol.vocab_size(), 49152);
  EXPECT_EQ(smol.eos_id(), 0);
  EXPECT_EQ(smol.token_to_id("<|im_end|>"), 2);
  EXPECT_EQ(smol.id_to_token(2), "<|im_end|>");
  EXPECT_EQ(smol.token_to_id("\xc4\xa0t"), smol.encode(" t").at(0));
  EXPECT_FALSE(smol.token_to_id("definitely not a token").has_value());
  const std::vector<int32_t> ids = smol.encode("<|im_start|>hi<|im_end|>");
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(smol.decode(ids), "<|im_start|>hi<|im_end|>");
  EXPECT_EQ(smol.decode(ids, /*skip_special=*/true), "hi");
  const Tokenizer& prefix = fixture("prefix-space");
  EXPECT_EQ(prefix.vocab_size(), 1006);
  const int32_t xyzzy = *prefix.token_to_id("xyzzy");
  EXPECT_EQ(prefix.decode(std::vector<int32_t>{xyzzy}, true), "xyzzy");  // not special: kept
}

TEST(TokenizerApi, ErrorsOnBadIdsAndThreads) {
  const Tokenizer& tok = fixture("trained-bpe");
  EXPECT_NE(expect_error([&] { tok.decode(std::vector<int32_t>{5000}); }).find("id 5000"), std::string::npos);
  EXPECT_NE(expect_error([&] { tok.decode(std::vector<int32_t>{-1}); }).find("id -1"), std::string::npos);
  expect_error([&] { tok.id_to_token(1000); });
  expect_error([&] { tok.encode_batch({"a"}, -1); });
  EXPECT_TRUE(tok.encode_batch({}, 0).empty());
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(TokenizerHash, StableAndDiscriminating) {
  const std::string a = fixture("trained-bpe").hash();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(Tokenizer::from_file((kFixtures / "trained-bpe" / "tokenizer.json").string()).hash(), a);
  EXPECT_NE(fixture("digits-split").hash(), a);  // pre-tokenizer differs
  EXPECT_NE(fixture("prefix-space").hash(), a);  // added tokens and prefix space differ
  EXPECT_NE(fixture("llama3-split").hash(), a);
  EXPECT_NE(fixture("smollm2").hash(), a);
}

TEST(TokenizerHash, Sha256KnownAnswers) {
  EXPECT_EQ(detail::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(detail::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(detail::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(detail::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(TokenizerText, ByteAlphabetAndUtf8) {
  const auto& map = detail::byte_to_unicode();
  EXPECT_EQ(map[' '], 0x120u);
  EXPECT_EQ(map['\n'], 0x10Au);
  EXPECT_EQ(map['!'], static_cast<char32_t>('!'));
  EXPECT_EQ(map[0xAD], 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(detail::unicode_to_byte(map[b]), b);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(detail::bytelevel_to_bytes(detail::bytes_to_bytelevel(all)), all);
  EXPECT_FALSE(detail::bytelevel_to_bytes(" ").has_value());  // U+0020 is not in the alphabet
  char32_t cp;
  EXPECT_EQ(detail::utf8_decode("\xf0\x9f\x98\x80", &cp), 4);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_EQ(detail::utf8_decode("\xc0\x80", &cp), 0);      // overlong
  EXPECT_EQ(detail::utf8_decode("\xed\xb0\x80", &cp), 0);  // surrogate
  EXPECT_TRUE(detail::is_white_space(0x85));
  EXPECT_FALSE(detail::is_white_space(0x180E));
  EXPECT_TRUE(detail::is_word_char(0x301));  // combining marks are word characters
  EXPECT_FALSE(detail::is_word_char('-'));
}

TEST(TokenizerText, RegexWhiteSpaceIsUnicodeWhiteSpace) {
  // PCRE2's \s would take U+180E; Oniguruma's (the library's) does not, and takes U+0085.
  const detail::Regex re("\\s+", false);
  auto count = [&](std::string_view s) {
    int n = 0;
    re.for_each_match(s, [&](size_t, size_t) { ++n; });
    return n;
  };
  EXPECT_EQ(count("a\xc2\x85"
                  "b"),
            1);
  EXPECT_EQ(count("a\xe1\xa0\x8e"
                  "b"),
            0);
  const detail::Regex cls("[^\\s\\p{L}]+", false);
  int n = 0;
  cls.for_each_match("a\xe1\xa0\x8e", [&](size_t b, size_t e) { n += (b == 1 && e == 4); });
  EXPECT_EQ(n, 1);
  // Empty matches advance one character.
  const detail::Regex empty("x*", false);
  std::vector<std::pair<size_t, size_t>> got;
  empty.for_each_match("ab", [&](size_t b, size_t e) { got.emplace_back(b, e); });
  EXPECT_EQ(got, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 1}, {2, 2}}));
}

// ---- Load errors -------------------------------------------------------------------------------

std::string base_json() {
  std::ifstream in(kFixtures / "trained-bpe" / "tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string load_error(const std::function<void(json&)>& edit) {
  json j = json::parse(base_json());
  edit(j);
  return expect_error([&] { Tokenizer::from_json(j.dump(), "tokenizer.json"); });
}

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nexpected: " << part;
}

TEST(TokenizerErrors, NameTheFileAndTheJsonPath) {
  expect_contains(expect_error([] { Tokenizer::from_json("{not json", "bad.json"); }), "bad.json: invalid JSON");
  expect_contains(expect_error([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); }),
                  "/nonexistent/tokenizer.json: cannot open");
  expect_contains(load_error([](json& j) { j.erase("model"); }), "tokenizer.json: model: missing");
  expect_contains(load_error([](json& j) { j["model"]["type"] = "WordPiece"; }), "model.type: unsupported model");
  expect_contains(load_error([](json& j) { j["model"]["merges"][12] = "a b c"; }), "tokenizer.json: model.merges[12]:");
  expect_contains(load_error([](json& j) { j["model"]["merges"][3] = 5; }), "model.merges[3]:");
  expect_contains(load_error([](json& j) { j["model"]["merges"][7] = "Ġ zzzz"; }),
                  "model.merges[7]: part 'zzzz' is not in model.vocab");
  expect_contains(load_error([](json& j) { j["model"]["vocab"].erase("Ġt"); }), "merged token 'Ġt' is not in");
  expect_contains(load_error([](json& j) { j["model"]["vocab"]["x"] = -3; }), "model.vocab[\"x\"]:");
  expect_contains(load_error([](json& j) { j["model"]["vocab"]["zz-new"] = 5; }), "id 5 is used by both");
  expect_contains(load_error([](json& j) { j["model"]["byte_fallback"] = true; }), "model.byte_fallback");
  expect_contains(load_error([](json& j) { j["model"]["dropout"] = 0.1; }), "model.dropout");
  expect_contains(load_error([](json& j) { j["model"]["unk_token"] = "<unk>"; }), "model.unk_token");
  expect_contains(load_error([](json& j) {
                    j["normalizer"] = {{"type", "NFC"}};
                  }),
                  "tokenizer.json: normalizer: unsupported normalizer NFC");
  expect_contains(load_error([](json& j) {
                    j["pre_tokenizer"] = {{"type", "Whitespace"}};
                  }),
                  "pre_tokenizer.type: unsupported pre-tokenizer 'Whitespace'");
  expect_contains(load_error([](json& j) { j["pre_tokenizer"] = nullptr; }), "pre_tokenizer: missing");
  expect_contains(
      load_error([](json& j) {
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {j["pre_tokenizer"], {{"type", "Digits"}}}}};
      }),
      "pre_tokenizer.pretokenizers: must end with a ByteLevel");
  expect_contains(load_error([](json& j) {
                    j["pre_tokenizer"] = {
                        {"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
                          j["pre_tokenizer"]}}};
                  }),
                  "pre_tokenizer.pretokenizers[0].pattern: cannot compile");
  expect_contains(
      load_error([](json& j) {
        j["pre_tokenizer"] = {
            {"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}}, j["pre_tokenizer"]}}};
      }),
      "pre_tokenizer.pretokenizers[0].behavior: unknown behavior 'Sideways'");
  expect_contains(load_error([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }), "decoder: unsupported decoder");
  expect_contains(load_error([](json& j) { j["added_tokens"][1]["id"] = 7; }),
                  "added_tokens[1]: '<|pad|>' has id 7 but the tokenizers library assigns it id 1");
  expect_contains(load_error([](json& j) { j["added_tokens"][0]["lstrip"] = "yes"; }), "added_tokens[0].lstrip");
  expect_contains(load_error([](json& j) { j["added_tokens"][0].erase("content"); }),
                  "added_tokens[0].content: missing");
  expect_contains(load_error([](json& j) { j["version"] = "2.0"; }), "version: unknown tokenizer.json version");
}

TEST(TokenizerErrors, AcceptsWhatTheLibraryAccepts) {
  // Missing decoder, empty normalizer Sequence, merges as pairs, and a String Split pattern load.
  json j = json::parse(base_json());
  j.erase("decoder");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
  ASSERT_TRUE(j["model"]["merges"][0].is_string());  // the fixture keeps the "a b" form
  for (auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"String", "|"}}}, {"behavior", "Removed"}, {"invert", false}},
        j["pre_tokenizer"]}}};
  const Tokenizer tok = Tokenizer::from_json(j.dump(), "variant.json");
  EXPECT_EQ(tok.decode(tok.encode("a|b||c")), "abc");
}

}  // namespace
}  // namespace mor::io
