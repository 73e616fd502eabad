// Unit tests of the GGUF reader (mor/io/gguf.h): the checked-in tests/fixtures/tokenizer/tiny.gguf
// (metadata of every type, two tensors, trained-bpe's vocabulary) read field by field; the tokenizer
// it carries equals the tokenizer.json one; corrupt files (bad magic, truncation at every point,
// bad versions, impossible counts, bad tensor infos) fail with mor::Error naming the file. The real
// SmolLM2 GGUF (not checked in) is compared too when present (MOR_SMOLLM2_GGUF or the script's cache).
#include "mor/io/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "error_testing.h"
#include "gguf_testing.h"
#include "mor/core/error.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::io {
namespace {

namespace fs = std::filesystem;
using mor::testing::expect_error;
using namespace mor::testing;  // GGUF byte builders (gguf_testing.h)
const fs::path kFixtures = fs::path(MOR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
const std::string kTiny = (kFixtures / "tiny.gguf").string();

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A file of `data_bytes` zero bytes after the header (the reader checks tensor bounds only).
std::string gguf(const std::vector<Kv>& kvs, const std::vector<TensorInfoBytes>& tensors = {}, uint64_t data_bytes = 0,
                 uint32_t version = 3, const std::string& magic = "GGUF") {
  return gguf_header(kvs, tensors, version, magic) + std::string(data_bytes, '\0');
}

// Opens `bytes` as a file; returns the error, which must start with the file name.
std::string open_error(const std::string& bytes) {
  TempFile f(bytes);
  const std::string e = expect_error([&] { GgufFile::open(f.path()); });
  EXPECT_EQ(e.rfind(f.path() + ": ", 0), 0u) << e;
  return e;
}

// ---- Reading the fixture -----------------------------------------------------------------------

TEST(GgufReader, ReadsEveryValueTypeAndTensorInfo) {
  const GgufFile f = GgufFile::open(kTiny);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.file_size(), fs::file_size(kTiny));
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.at("test.u8").type, GgufType::Uint8);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000LL);
  EXPECT_EQ(f.at("test.f32").to_double(), 0.5);
  EXPECT_EQ(f.at("test.f32").type, GgufType::Float32);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(std::get<uint64_t>(f.at("test.u64").value), (uint64_t{1} << 63) + 5);
  EXPECT_FALSE(f.at("test.u64").to_int().has_value());  // above INT64_MAX
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.at("test.f64").to_double(), -1.25);
  EXPECT_EQ(f.get_string("test.str"), "h\xc3\xa9llo \xe2\x9c\x93");
  EXPECT_EQ(f.get_ints("test.arr_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.at("test.arr_empty").element_type, GgufType::Float32);
  EXPECT_TRUE(f.at("test.arr_empty").array()->empty());
  const GgufValue& nested = f.at("test.arr_nested");
  ASSERT_EQ(nested.element_type, GgufType::Array);
  ASSERT_EQ(nested.array()->size(), 2u);
  EXPECT_EQ((*nested.array())[0].element_type, GgufType::Uint8);
  EXPECT_EQ(*(*(*nested.array())[1].array())[1].string(), "bc");
  EXPECT_EQ(f.get_strings("tokenizer.ggml.tokens").size(), 1000u);
  EXPECT_EQ(f.metadata().front().first, "general.architecture");  // file order kept
  EXPECT_EQ(f.find("no.such.key"), nullptr);

  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo& a = f.tensors()[0];
  EXPECT_EQ(a.name, "tok.weight");
  EXPECT_EQ(a.shape, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(a.type_name, "F32");
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.elements, 6u);
  EXPECT_EQ(a.file_offset, f.data_offset());
  const GgufTensorInfo* q = f.find_tensor("q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, 8u);
  EXPECT_EQ(q->type_name, "Q8_0");
  EXPECT_EQ(q->offset, 32u);
  EXPECT_EQ(q->nbytes, 68u);
  EXPECT_EQ(q->file_offset + q->nbytes, f.file_size());
  // The F32 data really is where the info says.
  const std::string bytes = read_all(kTiny);
  float first[6];
  std::memcpy(first, bytes.data() + a.file_offset, sizeof(first));
  EXPECT_EQ(first[0], 1.0f);
  EXPECT_EQ(first[5], 6.0f);
}

TEST(GgufReader, TypedGettersNameTheKey) {
  const GgufFile f = GgufFile::open(kTiny);
  expect_contains(expect_error([&] { f.at("missing.key"); }), "tiny.gguf: metadata 'missing.key' is missing");
  expect_contains(expect_error([&] { f.get_string("test.u8"); }), "metadata 'test.u8': expected STRING, got UINT8");
  expect_contains(expect_error([&] { f.get_int("test.str"); }), "metadata 'test.str': expected an integer");
  expect_contains(expect_error([&] { f.get_bool("test.u8"); }), "expected BOOL");
  expect_contains(expect_error([&] { f.get_strings("test.arr_i32"); }), "expected an ARRAY of STRING, got ARRAY of INT32");
  expect_contains(expect_error([&] { f.get_ints("test.arr_nested"); }), "metadata 'test.arr_nested'[0]");
}

// ---- The tokenizer it carries ------------------------------------------------------------------

TEST(GgufTokenizer, EqualsTheTokenizerJsonItWasWrittenFrom) {
  const Tokenizer from_gguf = tokenizer_from_gguf(kTiny);
  const Tokenizer from_json = Tokenizer::from_file((kFixtures / "trained-bpe" / "tokenizer.json").string());
  EXPECT_EQ(from_gguf.hash(), from_json.hash());
  EXPECT_EQ(from_gguf.vocab_size(), from_json.vocab_size());
  std::ifstream in(kFixtures / "trained-bpe" / "cases.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const auto text = j["text"].get<std::string>();
    const auto ids = from_gguf.encode(text);
    EXPECT_EQ(ids, j["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(from_gguf.decode(ids), text);
    ++n;
  }
  EXPECT_GE(n, 100);
  const GgufTokenizerInfo info = gguf_tokenizer_info(GgufFile::open(kTiny));
  EXPECT_EQ(info.model, "gpt2");
  EXPECT_EQ(info.pre, "gpt2");
  EXPECT_EQ(info.bos_id, 0);
  EXPECT_EQ(info.eos_id, 0);
  EXPECT_EQ(info.padding_id, 1);
  EXPECT_FALSE(info.unknown_id.has_value());
  EXPECT_EQ(info.add_bos, false);
  EXPECT_FALSE(info.add_eos.has_value());
}

// A minimal byte-level tokenizer GGUF: the 256 byte symbols plus "ab" and a control token.
std::vector<Kv> tokenizer_kvs(const std::string& model = "gpt2", const std::string& pre = "gpt2") {
  std::vector<std::string> tokens;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const char32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    tokens.push_back(s);
  }
  tokens.push_back("ab");
  tokens.push_back("<|end|>");
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  return {kv_str("tokenizer.ggml.model", model),       kv_str("tokenizer.ggml.pre", pre),
          kv_strings("tokenizer.ggml.tokens", tokens), kv_strings("tokenizer.ggml.merges", {"a b"}),
          kv_i32s("tokenizer.ggml.token_type", types), kv_u32("tokenizer.ggml.eos_token_id", 257)};
}

TEST(GgufTokenizer, BuildsFromMetadataAndPreTypes) {
  for (const std::string pre : {"gpt2", "smollm", "llama-bpe"}) {
    TempFile f(gguf(tokenizer_kvs("gpt2", pre)));
    const Tokenizer tok = tokenizer_from_gguf(f.path());
    EXPECT_EQ(tok.vocab_size(), 258);
    EXPECT_EQ(tok.encode("ab<|end|>"), (std::vector<int32_t>{256, 257})) << pre;
    EXPECT_EQ(tok.eos_id(), 257);
    EXPECT_EQ(tok.decode(tok.encode("x 12\xff ab")), "x 12\xff ab");
  }
  TempFile smol(gguf(tokenizer_kvs("gpt2", "smollm")));
  EXPECT_EQ(tokenizer_from_gguf(smol.path()).pretokenize("a12").size(), 3u);  // Digits(individual)
}

TEST(GgufTokenizer, ErrorsNameTheFileAndKey) {
  auto err = [](const std::vector<Kv>& kvs) {
    TempFile f(gguf(kvs));
    const std::string e = expect_error([&] { tokenizer_from_gguf(f.path()); });
    EXPECT_EQ(e.rfind(f.path() + ": ", 0), 0u) << e;
    return e;
  };
  expect_contains(err(tokenizer_kvs("llama")), "'tokenizer.ggml.model' is 'llama'; only 'gpt2'");
  expect_contains(err(tokenizer_kvs("gpt2", "qwen2")), "'tokenizer.ggml.pre' is 'qwen2'; supported: gpt2, smollm");
  auto kvs = tokenizer_kvs();
  kvs.erase(kvs.begin() + 2);  // tokens
  expect_contains(err(kvs), "metadata 'tokenizer.ggml.tokens' is missing");
  kvs = tokenizer_kvs();
  kvs[3] = kv_strings("tokenizer.ggml.merges", {"a b", "abc"});
  expect_contains(err(kvs), "metadata 'tokenizer.ggml.merges'[1]: expected \"left right\"");
  kvs = tokenizer_kvs();
  kvs[3] = kv_strings("tokenizer.ggml.merges", {"a q"});
  kvs[2] = kv_strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
  kvs[4] = kv_i32s("tokenizer.ggml.token_type", {1, 1, 1});
  kvs[5] = kv_u32("tokenizer.ggml.eos_token_id", 1);
  expect_contains(err(kvs), "metadata 'tokenizer.ggml.merges'[0]: part 'q' is not in metadata 'tokenizer.ggml.tokens'");
  kvs = tokenizer_kvs();
  kvs[4] = kv_i32s("tokenizer.ggml.token_type", {1, 1});
  expect_contains(err(kvs), "'tokenizer.ggml.token_type' has 2 entries for 258 tokens");
  kvs = tokenizer_kvs();
  kvs[5] = kv_u32("tokenizer.ggml.eos_token_id", 9999);
  expect_contains(err(kvs), "'tokenizer.ggml.eos_token_id': id 9999 is outside the vocabulary");
  kvs = tokenizer_kvs();
  kvs[2] = kv_strings("tokenizer.ggml.tokens", {"\xff"});
  kvs[4] = kv_i32s("tokenizer.ggml.token_type", {1});
  kvs[5] = kv_u32("tokenizer.ggml.eos_token_id", 0);
  expect_contains(err(kvs), "'tokenizer.ggml.tokens'[0]: not valid UTF-8");
}

// ---- Corrupt files -----------------------------------------------------------------------------

TEST(GgufErrors, BadMagicVersionAndEmptyFile) {
  expect_contains(open_error(""), "truncated GGUF: the magic");
  expect_contains(open_error("GG"), "truncated GGUF");
  expect_contains(open_error(gguf({}, {}, 0, 3, "GGML")), "not a GGUF file: bad magic \"GGML\"");
  expect_contains(open_error(std::string("\x00\x01\x02\x03", 4) + std::string(40, '\0')), "bad magic \"\\x00\\x01");
  expect_contains(open_error(gguf({}, {}, 0, 1)), "GGUF version 1 is not supported");
  expect_contains(open_error(gguf({}, {}, 0, 7)), "unsupported GGUF version 7");
  expect_contains(open_error(gguf({}, {}, 0, 0x03000000)), "big-endian");
  expect_contains(expect_error([] { GgufFile::open("/nonexistent/x.gguf"); }), "/nonexistent/x.gguf: cannot open");
  EXPECT_EQ(GgufFile::open(TempFile(gguf({}, {}, 0, 2)).path()).version(), 2u);  // v2 reads
}

TEST(GgufErrors, TruncationAnywhereIsDetected) {
  const std::string bytes = read_all(kTiny);
  ASSERT_GT(bytes.size(), 1000u);
  for (size_t len = 0; len < bytes.size(); len += (len < 600 ? 1 : 61)) {
    const std::string e = expect_error([&] { GgufFile::parse(std::string_view(bytes).substr(0, len), "cut.gguf"); });
    ASSERT_EQ(e.rfind("cut.gguf: ", 0), 0u) << len << ": " << e;
  }
  // The last byte of the tensor data matters too.
  expect_contains(open_error(bytes.substr(0, bytes.size() - 1)),
                  "tensor 'q.weight': data [32, 100) lies outside the data section");
  expect_contains(open_error(bytes.substr(0, 30)), "metadata count 27 is impossible for a file of 30 bytes");
}

TEST(GgufErrors, ImpossibleCountsAndValues) {
  std::string big_string = gguf({kv_str("k", "v")});
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(&big_string[24], &huge, 8);  // the key's length
  expect_contains(open_error(big_string), "truncated GGUF");

  Bytes arr;
  arr.put<uint32_t>(4).put<uint64_t>(uint64_t{1} << 60);
  expect_contains(open_error(gguf({{"k", 9, arr.b}})),
                  "metadata 'k': an array of 1152921504606846976 UINT32 cannot fit");

  std::string many = gguf({});
  const uint64_t count = 1000000;
  std::memcpy(&many[16], &count, 8);  // kv_count
  expect_contains(open_error(many), "metadata count 1000000 is impossible");
  std::memcpy(&many[16], "\0\0\0\0\0\0\0\0", 8);
  std::memcpy(&many[8], &count, 8);  // tensor_count
  expect_contains(open_error(many), "tensor count 1000000 is impossible");

  expect_contains(open_error(gguf({{"k", 13, Bytes().put<uint32_t>(0).b}})), "metadata 'k': unknown value type 13");
  expect_contains(open_error(gguf({{"k", 7, Bytes().put<uint8_t>(2).b}})), "metadata 'k': invalid BOOL value 2");
  expect_contains(open_error(gguf({kv_u32("k", 1), kv_u32("k", 2)})), "metadata 'k': the key appears twice");
  Bytes deep;
  for (int i = 0; i < 10; ++i) deep.put<uint32_t>(9).put<uint64_t>(1);
  deep.put<uint32_t>(4).put<uint64_t>(0);
  expect_contains(open_error(gguf({{"deep", 9, deep.b}})), "nested deeper than 8");
  expect_contains(open_error(gguf({{"general.alignment", 10, Bytes().put<uint64_t>(32).b}})),
                  "'general.alignment': expected UINT32, got UINT64");
  expect_contains(open_error(gguf({kv_u32("general.alignment", 24)})), "24 is not a power of two");
}

TEST(GgufErrors, BadTensorInfos) {
  expect_contains(open_error(gguf({}, {{"t", {1, 1, 1, 1, 1}, 0, 0}}, 32)), "tensor 't': 5 dimensions (at most 4)");
  expect_contains(open_error(gguf({}, {{"t", {4}, 99, 0}}, 32)), "tensor 't': unknown ggml type 99");
  expect_contains(open_error(gguf({}, {{"t", {4}, 0, 8}}, 64)), "offset 8 is not a multiple of the alignment 32");
  expect_contains(open_error(gguf({}, {{"t", {31}, 8, 0}}, 64)), "not a multiple of the Q8_0 block size 32");
  expect_contains(open_error(gguf({}, {{"t", {64}, 0, 0}}, 32)), "tensor 't': data [0, 256) lies outside");
  expect_contains(open_error(gguf({}, {{"t", {4}, 0, 0}, {"t", {4}, 0, 32}}, 64)),
                  "tensor 't': the name appears twice");
  expect_contains(open_error(gguf({}, {{"t", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0}}, 32)), "overflows");
  const GgufFile ok = GgufFile::open(
      TempFile(gguf({kv_u32("general.alignment", 64)}, {{"t", {4}, 1, 0}, {"u", {4}, 30, 64}}, 128)).path());
  EXPECT_EQ(ok.alignment(), 64u);
  EXPECT_EQ(ok.data_offset() % 64, 0u);
  EXPECT_EQ(ok.tensors()[1].type_name, "BF16");
}

// ---- The real SmolLM2 GGUF, when available -----------------------------------------------------

TEST(GgufSmolLM2, MatchesTheTokenizerJsonFixture) {
  const std::string path = smollm2_gguf();
  if (path.empty())
    GTEST_SKIP() << "no SmolLM2 GGUF (set MOR_SMOLLM2_GGUF or run tests/tools/make_tokenizer_fixtures.py)";
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.find_tensor("token_embd.weight")->type_name, "Q8_0");  // Q4_1 file, Q8_0 embeddings
  EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type_name, "Q4_1");
  const GgufTokenizerInfo info = gguf_tokenizer_info(f);
  EXPECT_EQ(info.pre, "smollm");
  EXPECT_EQ(info.eos_id, 2);
  const Tokenizer from_gguf = tokenizer_from_gguf(f);
  const Tokenizer from_json = Tokenizer::from_file((kFixtures / "smollm2" / "tokenizer.json").string());
  EXPECT_EQ(from_gguf.hash(), from_json.hash());
  std::ifstream in(kFixtures / "smollm2" / "cases.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(from_gguf.encode(j["text"].get<std::string>()), j["ids"].get<std::vector<int32_t>>());
  }
}

}  // namespace
}  // namespace mor::io
