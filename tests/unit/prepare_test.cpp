// `mor data prepare` (mor/data/prepare.h): shards decode back to the input documents in split order,
// output bytes do not depend on threads or runs, the split follows the seed, every bad input is an
// error naming file:line (or is counted with skip_bad), and a failed run leaves nothing that looks
// complete. Uses the checked-in trained tokenizer fixture.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/data/prepare.h"
#include "mor/data/shard.h"
#include "mor/io/tokenizer.h"
#include "error_testing.h"

namespace {

using mor::data::PrepareOptions;
using mor::data::prepare_corpus;
using mor::io::Tokenizer;

const std::string kFixture = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained-bpe/tokenizer.json";

const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tok = Tokenizer::from_file(kFixture);
  return tok;
}

std::string zstd_compress(const std::string& data, int level = 3) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string json_line(const std::string& text) { return nlohmann::json{{"id", 1}, {"text", text}}.dump() + "\n"; }

using mor::testing::error_of;

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mor_prepare_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void write(const std::string& name, const std::string& bytes) {
    const auto slash = name.find_last_of('/');
    if (slash != std::string::npos) mor::core::make_directories(path(name.substr(0, slash)));
    mor::core::atomic_write(path(name), bytes);
  }

  PrepareOptions options(std::vector<std::string> inputs, const std::string& out = "out") {
    PrepareOptions o;
    for (auto& i : inputs) o.inputs.push_back(path(i));
    o.out_dir = path(out);
    o.tokenizer_path = kFixture;
    o.progress = false;
    o.threads = 2;
    return o;
  }

  // Writes a mixed corpus; returns its documents in input order.
  std::vector<std::string> write_corpus(int jsonl_docs = 40) {
    std::vector<std::string> docs;
    // A directory of plain text files (nested; sorted by path).
    write("corpus/a.txt", "Hello world.\nThis is the first document.\n");
    write("corpus/sub/b.txt", "Unicode: héllo wörld, 日本語, emoji 🙂, combining e\u0301.\n\n\n   spaces   ");
    write("corpus/sub/c.txt", std::string("invalid utf-8: \xff\xfe\x80 end", 23));
    docs = {"Hello world.\nThis is the first document.\n",
            "Unicode: héllo wörld, 日本語, emoji 🙂, combining e\u0301.\n\n\n   spaces   ",
            std::string("invalid utf-8: \xff\xfe\x80 end", 23)};
    // JSONL with blank lines, and the same as two concatenated zstd frames.
    std::string jsonl;
    for (int i = 0; i < jsonl_docs; ++i) {
      const std::string text = "Document number " + std::to_string(i) + " says " + std::string(i % 7 + 1, 'x') +
                               (i % 3 == 0 ? "\nwith a \"quote\" and a tab\t." : "");
      jsonl += json_line(text);
      if (i % 10 == 0) jsonl += "\n   \n";
      docs.push_back(text);
    }
    write("data.jsonl", jsonl);
    std::string zjsonl;
    std::vector<std::string> zdocs;
    for (int i = 0; i < 12; ++i) {
      zdocs.push_back("compressed document " + std::to_string(i) + ": " + std::string(i * 50, 'a' + i % 26));
      zjsonl += json_line(zdocs.back());
    }
    const size_t half = zjsonl.find('\n', zjsonl.size() / 2) + 1;
    write("data.jsonl.zst", zstd_compress(zjsonl.substr(0, half)) + zstd_compress(zjsonl.substr(half), 19));
    docs.insert(docs.end(), zdocs.begin(), zdocs.end());
    return docs;
  }

  // The documents of one split, decoded: the split's shards concatenated and cut at EOS.
  std::vector<std::string> decode_split(const std::string& out, const std::string& split) {
    const auto manifest = nlohmann::json::parse(mor::core::read_file(path(out + "/manifest.json")));
    const Tokenizer& tok = fixture_tokenizer();
    const int32_t eos = *tok.eos_id();
    std::vector<int32_t> ids;
    for (const auto& e : manifest["splits"][split]["shards"]) {
      const auto shard = mor::data::Shard::open(path(out + "/" + e["file"].get<std::string>()), tok.vocab_size());
      EXPECT_EQ(shard.num_tokens(), e["tokens"].get<int64_t>());
      const size_t old = ids.size();
      ids.resize(old + static_cast<size_t>(shard.num_tokens()));
      shard.read(0, std::span(ids).subspan(old));
    }
    EXPECT_EQ(static_cast<int64_t>(ids.size()), manifest["splits"][split]["tokens"].get<int64_t>());
    std::vector<std::string> docs;
    std::vector<int32_t> current;
    for (const int32_t id : ids) {
      if (id == eos) {
        docs.push_back(tok.decode(current));
        current.clear();
      } else {
        current.push_back(id);
      }
    }
    EXPECT_TRUE(current.empty()) << "the stream must end with EOS";
    return docs;
  }

  // Every file of an output directory, name -> bytes.
  std::map<std::string, std::string> snapshot(const std::string& out) {
    std::map<std::string, std::string> files;
    for (const auto& name : mor::core::list_directory(path(out))) files[name] = mor::core::read_file(path(out + "/" + name));
    return files;
  }

  // What a run left in an output directory (nothing when it does not exist).
  std::vector<std::string> leftovers(const std::string& out) {
    return mor::core::is_directory(path(out)) ? mor::core::list_directory(path(out)) : std::vector<std::string>{};
  }

  std::string dir_;
};

TEST_F(PrepareTest, RoundTripReproducesDocumentsInSplitOrder) {
  const auto docs = write_corpus();
  auto o = options({"corpus", "data.jsonl", "data.jsonl.zst"});
  o.val_fraction = 0.1;
  o.shard_tokens = 100;  // many shards; documents straddle shard boundaries
  const auto s = prepare_corpus(o, fixture_tokenizer());
  EXPECT_EQ(s.files, 5);
  EXPECT_EQ(s.records, static_cast<int64_t>(docs.size()));
  EXPECT_EQ(s.val.documents, 6);  // round(55 * 0.1)
  EXPECT_EQ(s.train.documents + s.val.documents, static_cast<int64_t>(docs.size()));
  EXPECT_GT(s.train.shards.size(), 3u);
  EXPECT_EQ(s.train.shards.front().file, "train_000000.bin");
  for (size_t i = 0; i + 1 < s.train.shards.size(); ++i) EXPECT_EQ(s.train.shards[i].tokens, 100);

  const auto train = decode_split("out", "train");
  const auto val = decode_split("out", "val");
  ASSERT_EQ(train.size() + val.size(), docs.size());
  // Each split is a subsequence of the input, and together they are the whole input.
  size_t ti = 0, vi = 0;
  for (const auto& d : docs) {
    if (ti < train.size() && train[ti] == d) {
      ++ti;
    } else if (vi < val.size() && val[vi] == d) {
      ++vi;
    } else {
      FAIL() << "document not found in split order: " << d;
    }
  }
  EXPECT_EQ(ti, train.size());
  EXPECT_EQ(vi, val.size());

  // The manifest.
  const auto m = nlohmann::json::parse(mor::core::read_file(path("out/manifest.json")));
  EXPECT_EQ(m["format"], "mor-token-shards");
  EXPECT_EQ(m["format_version"], 1);
  EXPECT_EQ(m["shard_version"], 1);
  EXPECT_EQ(m["tokenizer"]["hash"], fixture_tokenizer().hash());
  EXPECT_EQ(m["tokenizer"]["vocab_size"], fixture_tokenizer().vocab_size());
  EXPECT_EQ(m["tokenizer"]["eos_id"], *fixture_tokenizer().eos_id());
  EXPECT_EQ(m["seed"], 1234);
  EXPECT_EQ(m["splits"]["train"]["documents"], s.train.documents);
  EXPECT_EQ(m["counts"]["bad_records"], 0);
  EXPECT_EQ(m["inputs"].size(), 3u);
  EXPECT_FALSE(m["mor_version"].get<std::string>().empty());
  EXPECT_NE(mor::data::verify_prepared(path("out"), &fixture_tokenizer()).find("train:"), std::string::npos);
  // Nothing but shards and the manifest remains.
  for (const auto& name : leftovers("out")) {
    EXPECT_TRUE(name == "manifest.json" || mor::core::ends_with(name, ".bin")) << name;
  }
}

TEST_F(PrepareTest, OutputBytesDoNotDependOnThreadsOrRuns) {
  write_corpus(300);
  std::map<std::string, std::string> first;
  for (const int threads : {1, 2, 5, 1}) {
    auto o = options({"data.jsonl", "corpus", "data.jsonl.zst"});
    o.threads = threads;
    o.val_fraction = 0.05;
    o.shard_tokens = 1000;
    prepare_corpus(o, fixture_tokenizer());
    const auto files = snapshot("out");
    if (first.empty()) {
      first = files;
      EXPECT_GT(first.size(), 3u);
    } else {
      EXPECT_EQ(files, first) << "threads " << threads;
    }
  }
}

TEST_F(PrepareTest, SplitFollowsTheSeed) {
  std::string jsonl;
  for (int i = 0; i < 200; ++i) jsonl += json_line("doc " + std::to_string(i));
  write("d.jsonl", jsonl);
  auto val_docs = [&](uint64_t seed) {
    auto o = options({"d.jsonl"});
    o.val_fraction = 0.1;
    o.seed = seed;
    prepare_corpus(o, fixture_tokenizer());
    auto v = decode_split("out", "val");
    return std::set<std::string>(v.begin(), v.end());
  };
  const auto a = val_docs(1);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(val_docs(1), a);
  EXPECT_NE(val_docs(2), a);
  // Tiny fractions still hold out one document; zero holds out none.
  auto o = options({"d.jsonl"});
  o.val_fraction = 0.0001;
  EXPECT_EQ(prepare_corpus(o, fixture_tokenizer()).val.documents, 1);
  o.val_fraction = 0;
  const auto s = prepare_corpus(o, fixture_tokenizer());
  EXPECT_EQ(s.val.documents, 0);
  EXPECT_TRUE(s.val.shards.empty());
}

TEST_F(PrepareTest, BadJsonLinesNameFileAndLine) {
  const std::string good = json_line("fine");
  struct Case {
    std::string content;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {good + "\n" + "{\"text\": \"unterminated\n", "bad.jsonl:3: invalid JSON: "},
      {good + "{\"body\": \"x\", \"id\": 2}\n", "bad.jsonl:2: no \"text\" field (fields: body, id)"},
      {good + good + "{\"text\": 17}\n", "bad.jsonl:3: field \"text\" is number, not a string"},
      {good + "{\"text\": null}\n", "bad.jsonl:2: field \"text\" is null, not a string"},
      {"[1, 2]\n", "bad.jsonl:1: expected a JSON object, got array"},
      {good + std::string("{\"text\": \"\xff\"}\n"), "bad.jsonl:2: invalid JSON: "},
  };
  for (const auto& c : cases) {
    write("bad.jsonl", c.content);
    const std::string err = error_of([&] { prepare_corpus(options({"bad.jsonl"}), fixture_tokenizer()); });
    EXPECT_NE(err.find(path(c.expected)), std::string::npos) << "got: " << err << "\nwant: " << c.expected;
    EXPECT_TRUE(leftovers("out").empty()) << "a failed run must leave nothing";
  }
}

TEST_F(PrepareTest, UnreadableAndCorruptFiles) {
  write("good.jsonl", json_line("good document"));
  // Unreadable even for root: reading /proc/self/mem at offset 0 fails with EIO.
  ASSERT_EQ(::symlink("/proc/self/mem", path("unreadable.jsonl").c_str()), 0);
  std::string err = error_of([&] { prepare_corpus(options({"good.jsonl", "unreadable.jsonl"}), fixture_tokenizer()); });
  EXPECT_NE(err.find(path("unreadable.jsonl") + ": read error"), std::string::npos) << err;
  ASSERT_EQ(::symlink("/proc/self/mem", path("unreadable.txt").c_str()), 0);
  err = error_of([&] { prepare_corpus(options({"good.jsonl", "unreadable.txt"}), fixture_tokenizer()); });
  EXPECT_NE(err.find(path("unreadable.txt") + ": read error"), std::string::npos) << err;
  EXPECT_TRUE(leftovers("out").empty());

  std::string lines;
  for (int i = 0; i < 2000; ++i) lines += json_line("line " + std::to_string(i));
  const std::string z = zstd_compress(lines);
  write("trunc.jsonl.zst", z.substr(0, z.size() - 9));
  err = error_of([&] { prepare_corpus(options({"trunc.jsonl.zst"}), fixture_tokenizer()); });
  EXPECT_NE(err.find(path("trunc.jsonl.zst:")), std::string::npos) << err;
  EXPECT_NE(err.find("zstd"), std::string::npos) << err;
  write("garbage.jsonl.zst", "this is not zstd at all\n");
  err = error_of([&] { prepare_corpus(options({"garbage.jsonl.zst"}), fixture_tokenizer()); });
  EXPECT_NE(err.find(path("garbage.jsonl.zst:1: corrupt zstd data")), std::string::npos) << err;

  err = error_of([&] { prepare_corpus(options({"absent.jsonl"}), fixture_tokenizer()); });
  EXPECT_NE(err.find(path("absent.jsonl")), std::string::npos) << err;
}

TEST_F(PrepareTest, SkipBadCountsAndSkips) {
  write("mixed.jsonl", json_line("one") + "not json\n" + json_line("two") + "{\"text\": 5}\n" + "{\"other\": \"x\"}\n" +
                           json_line("three"));
  ASSERT_EQ(::symlink("/proc/self/mem", path("unreadable.txt").c_str()), 0);
  ASSERT_EQ(::symlink("/proc/self/mem", path("unreadable.jsonl").c_str()), 0);
  write("garbage.jsonl.zst", "not zstd\n");
  auto o = options({"mixed.jsonl", "unreadable.txt", "unreadable.jsonl", "garbage.jsonl.zst"});
  o.skip_bad = true;
  o.val_fraction = 0;
  const auto s = prepare_corpus(o, fixture_tokenizer());
  EXPECT_EQ(s.bad_records, 3);
  EXPECT_EQ(s.bad_files, 3);
  EXPECT_EQ(decode_split("out", "train"), (std::vector<std::string>{"one", "two", "three"}));
  const auto m = nlohmann::json::parse(mor::core::read_file(path("out/manifest.json")));
  EXPECT_EQ(m["counts"]["bad_records"], 3);
  EXPECT_EQ(m["counts"]["bad_files"], 3);
}

TEST_F(PrepareTest, EmptyCorpusIsAnError) {
  mor::core::make_directories(path("emptydir"));
  EXPECT_NE(error_of([&] { prepare_corpus(options({"emptydir"}), fixture_tokenizer()); }).find("empty corpus"),
            std::string::npos);
  write("blank.jsonl", "\n  \n\n");
  EXPECT_NE(error_of([&] { prepare_corpus(options({"blank.jsonl"}), fixture_tokenizer()); }).find("empty corpus"),
            std::string::npos);
  write("empty_texts.jsonl", json_line("") + json_line(""));
  write("empty.txt", "");
  const std::string err = error_of([&] { prepare_corpus(options({"empty_texts.jsonl", "empty.txt"}), fixture_tokenizer()); });
  EXPECT_NE(err.find("empty corpus: no document has any text"), std::string::npos) << err;
  EXPECT_TRUE(leftovers("out").empty());
  // Empty documents next to real ones are skipped and counted.
  write("some.jsonl", json_line("") + json_line("real"));
  auto o = options({"some.jsonl"});
  o.val_fraction = 0;
  const auto s = prepare_corpus(o, fixture_tokenizer());
  EXPECT_EQ(s.empty_documents, 1);
  EXPECT_EQ(decode_split("out", "train"), (std::vector<std::string>{"real"}));
}

TEST_F(PrepareTest, FailureMidwayLeavesNoShardsAndNoManifest) {
  write_corpus(200);
  // A complete earlier run in the same directory.
  auto o = options({"corpus", "data.jsonl"});
  o.shard_tokens = 200;
  prepare_corpus(o, fixture_tokenizer());
  ASSERT_TRUE(mor::core::file_exists(path("out/manifest.json")));
  ASSERT_TRUE(mor::core::file_exists(path("out/train_000001.bin")));
  write("out/notes.txt", "the user's own file");
  // This run fails after its second shard.
  int written = 0;
  o.on_shard_written = [&](const std::string& name, int64_t tokens) {
    EXPECT_EQ(tokens, 200);
    EXPECT_FALSE(mor::core::file_exists(path("out/" + name))) << "shards stay staged until the end";
    if (++written == 2) throw mor::Error("simulated failure");
  };
  EXPECT_EQ(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }), "simulated failure");
  EXPECT_EQ(leftovers("out"), (std::vector<std::string>{"notes.txt"}));
  // An error from the input (after shards were written) cleans up the same way.
  o.on_shard_written = nullptr;
  write("late_bad.jsonl", std::string(3000, '\n') + "{oops\n");
  o.inputs.push_back(path("late_bad.jsonl"));
  EXPECT_NE(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }).find("late_bad.jsonl:3001: invalid JSON"),
            std::string::npos);
  EXPECT_EQ(leftovers("out"), (std::vector<std::string>{"notes.txt"}));
}

TEST_F(PrepareTest, VocabularyOverflowAndUint32Shards) {
  // The fixture grown past 65,536 tokens with unreachable filler tokens.
  auto j = nlohmann::json::parse(mor::core::read_file(kFixture));
  auto& vocab = j["model"]["vocab"];
  const int64_t base = static_cast<int64_t>(vocab.size());
  for (int64_t i = base; i < 70000; ++i) vocab["~fill" + std::to_string(i)] = i;
  const Tokenizer big = Tokenizer::from_json(j.dump(), "big-tokenizer.json");
  ASSERT_EQ(big.vocab_size(), 70000);
  write("d.jsonl", json_line("some text for the big vocabulary") + json_line("and more"));

  auto o = options({"d.jsonl"});
  o.tokenizer_path = "big-tokenizer.json";
  o.shard_version = 1;
  const std::string err = error_of([&] { prepare_corpus(o, big); });
  EXPECT_NE(err.find("vocabulary overflow: tokenizer big-tokenizer.json has 70000 tokens but shard version 1 holds "
                     "ids below 65536"),
            std::string::npos)
      << err;
  EXPECT_TRUE(leftovers("out").empty());

  o.shard_version = 0;  // automatic: uint32
  o.val_fraction = 0;
  const auto s = prepare_corpus(o, big);
  EXPECT_EQ(s.shard_version, 2);
  const auto shard = mor::data::Shard::open(path("out/train_000000.bin"), 70000);
  EXPECT_EQ(shard.version(), 2);
  std::vector<int32_t> ids(static_cast<size_t>(shard.num_tokens()));
  shard.read(0, ids);
  EXPECT_EQ(ids, [&] {
    auto a = big.encode("some text for the big vocabulary");
    a.push_back(*big.eos_id());
    auto b = big.encode("and more");
    a.insert(a.end(), b.begin(), b.end());
    a.push_back(*big.eos_id());
    return a;
  }());
}

TEST_F(PrepareTest, TokenizerWithoutEosIsAnError) {
  auto j = nlohmann::json::parse(mor::core::read_file(kFixture));
  j["added_tokens"] = nlohmann::json::array();
  j["model"]["vocab"].erase("<|endoftext|>");
  j["model"]["vocab"].erase("<|pad|>");
  // Keep ids contiguous: move the two highest ids into the freed slots.
  std::vector<std::pair<std::string, int64_t>> top;
  for (auto& [k, v] : j["model"]["vocab"].items()) {
    if (v.get<int64_t>() >= 998) top.emplace_back(k, v.get<int64_t>());
  }
  for (size_t i = 0; i < top.size(); ++i) j["model"]["vocab"][top[i].first] = static_cast<int64_t>(i);
  const Tokenizer no_eos = Tokenizer::from_json(j.dump(), "no-eos.json");
  ASSERT_FALSE(no_eos.eos_id().has_value());
  write("d.jsonl", json_line("x"));
  auto o = options({"d.jsonl"});
  o.tokenizer_path = "no-eos.json";
  EXPECT_NE(error_of([&] { prepare_corpus(o, no_eos); }).find("tokenizer no-eos.json has no end-of-text token"),
            std::string::npos);
}

TEST_F(PrepareTest, VerifyDetectsTampering) {
  write("d.jsonl", json_line("a document long enough to make a few tokens") + json_line("another one"));
  auto o = options({"d.jsonl"});
  o.val_fraction = 0;
  prepare_corpus(o, fixture_tokenizer());
  EXPECT_NO_THROW(mor::data::verify_prepared(path("out"), nullptr));
  const std::string shard = path("out/train_000000.bin");
  const std::string bytes = mor::core::read_file(shard);
  mor::core::atomic_write(shard, bytes.substr(0, bytes.size() - 2));
  const std::string err = error_of([&] { mor::data::verify_prepared(path("out"), nullptr); });
  EXPECT_NE(err.find(shard + ": size"), std::string::npos) << err;
  EXPECT_NE(error_of([&] { mor::data::verify_prepared(path("nowhere"), nullptr); }).find("manifest.json"),
            std::string::npos);
}

TEST_F(PrepareTest, OptionsAreValidated) {
  write("d.jsonl", json_line("x"));
  auto o = options({"d.jsonl"});
  o.val_fraction = 1.0;
  EXPECT_NE(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }).find("validation fraction"), std::string::npos);
  o = options({"d.jsonl"});
  o.shard_tokens = 0;
  EXPECT_NE(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }).find("shard size"), std::string::npos);
  o = options({});
  EXPECT_NE(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }).find("no input"), std::string::npos);
  // The output directory's own shards cannot be inputs; other files in it can.
  o = options({"d.jsonl"});
  prepare_corpus(o, fixture_tokenizer());
  write("out/extra.txt", "an input that lives in the output directory");
  o = options({"d.jsonl", "out"});
  EXPECT_NE(error_of([&] { prepare_corpus(o, fixture_tokenizer()); }).find("is an output of this run"),
            std::string::npos);
  EXPECT_TRUE(mor::core::file_exists(path("out/manifest.json"))) << "refused before touching the output";
  o = options({"d.jsonl", "out/extra.txt"});
  EXPECT_EQ(prepare_corpus(o, fixture_tokenizer()).records, 2);
}

}  // namespace
