// Token shards (mor/data/shard.h) and the file helpers under them (mor/core/file.h,
// mor/core/progress.h): write/read round trips for both versions, the llm.c byte layout, and
// corrupt shards detected on open with the file named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <thread>
#include <vector>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/progress.h"
#include "mor/data/shard.h"

namespace {

using mor::data::Shard;
using mor::data::ShardWriter;

// A fresh directory under the test temp dir, removed at the end.
class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mor_shard_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  void write_raw(const std::string& name, const std::vector<int32_t>& header, const std::string& payload) {
    std::string bytes(1024, '\0');
    std::memcpy(bytes.data(), header.data(), header.size() * 4);
    bytes += payload;
    mor::core::atomic_write(path(name), bytes);
  }

  std::string dir_;
};

// Expects a mor::Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    FAIL() << "no error thrown";
  } catch (const mor::Error& e) {
    for (const auto& frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << frag;
  }
}

TEST_F(ShardTest, VersionForVocab) {
  EXPECT_EQ(mor::data::shard_version_for_vocab(512), 1);
  EXPECT_EQ(mor::data::shard_version_for_vocab(49152), 1);
  EXPECT_EQ(mor::data::shard_version_for_vocab(65536), 1);
  EXPECT_EQ(mor::data::shard_version_for_vocab(65537), 2);
  EXPECT_EQ(mor::data::shard_version_for_vocab(128256), 2);
}

TEST_F(ShardTest, Uint16RoundTripAndLlmcLayout) {
  std::vector<int32_t> tokens(5000);
  std::iota(tokens.begin(), tokens.end(), 0);
  tokens.back() = 65535;
  {
    ShardWriter w(path("a.bin"), 1, 65536);
    w.append(std::span(tokens).first(10));
    w.append(std::span(tokens).subspan(10));
    EXPECT_EQ(w.num_tokens(), 5000);
    EXPECT_FALSE(mor::core::file_exists(path("a.bin")));  // not visible until finished
    EXPECT_TRUE(mor::core::file_exists(path("a.bin.tmp")));
    w.finish();
  }
  EXPECT_FALSE(mor::core::file_exists(path("a.bin.tmp")));
  // The exact llm.c layout: int32 header words, then uint16 little-endian tokens.
  const std::string bytes = mor::core::read_file(path("a.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 5000u * 2u);
  int32_t h[4];
  std::memcpy(h, bytes.data(), sizeof(h));
  EXPECT_EQ(h[0], 20240520);
  EXPECT_EQ(h[1], 1);
  EXPECT_EQ(h[2], 5000);
  EXPECT_EQ(h[3], 65536);
  EXPECT_TRUE(std::all_of(bytes.begin() + 16, bytes.begin() + 1024, [](char c) { return c == 0; }));
  uint16_t t7;
  std::memcpy(&t7, bytes.data() + 1024 + 7 * 2, 2);
  EXPECT_EQ(t7, 7);

  Shard s = Shard::open(path("a.bin"), 65536);
  EXPECT_EQ(s.version(), 1);
  EXPECT_EQ(s.token_bytes(), 2);
  EXPECT_EQ(s.num_tokens(), 5000);
  EXPECT_EQ(s.vocab_size(), 65536);
  EXPECT_EQ(s.path(), path("a.bin"));
  std::vector<int32_t> back(5000);
  s.read(0, back);
  EXPECT_EQ(back, tokens);
  std::vector<int32_t> mid(3);
  s.read(4997, mid);
  EXPECT_EQ(mid, (std::vector<int32_t>{4997, 4998, 65535}));
  expect_error([&] { s.read(4998, mid); }, {path("a.bin"), "outside"});
}

TEST_F(ShardTest, Uint32VersionRoundTrip) {
  const int64_t vocab = 200000;
  std::vector<int32_t> tokens = {0, 1, 65535, 65536, 70000, 199999, 42};
  {
    ShardWriter w(path("big.bin"), mor::data::shard_version_for_vocab(vocab), vocab);
    w.append(tokens);
    w.finish();
  }
  EXPECT_EQ(mor::core::file_size(path("big.bin")), 1024 + 7 * 4);
  Shard s = Shard::open(path("big.bin"), vocab);
  EXPECT_EQ(s.version(), 2);
  EXPECT_EQ(s.token_bytes(), 4);
  std::vector<int32_t> back(tokens.size());
  s.read(0, back);
  EXPECT_EQ(back, tokens);
  // A smaller expected vocabulary than the header's is a mismatch, named.
  expect_error([&] { Shard::open(path("big.bin"), 1000); }, {path("big.bin"), "200000", "1000"});
}

TEST_F(ShardTest, WriterRejectsIdsThatDoNotFit) {
  ShardWriter w(path("x.bin"), 1, 512);
  const std::vector<int32_t> bad = {1, 2, 512};
  expect_error([&] { w.append(bad); }, {path("x.bin"), "512", "position 2"});
  const std::vector<int32_t> neg = {-1};
  expect_error([&] { w.append(neg); }, {"negative"});
  expect_error([&] { ShardWriter(path("y.bin"), 1, 70000); }, {"70000", "version 1", "version 2"});
  expect_error([&] { ShardWriter(path("y.bin"), 3, 100); }, {"version 3"});
}

TEST_F(ShardTest, UnfinishedWriterLeavesNothing) {
  {
    ShardWriter w(path("p.bin"), 1, 100);
    const std::vector<int32_t> t = {1, 2, 3};
    w.append(t);
  }
  EXPECT_FALSE(mor::core::file_exists(path("p.bin")));
  EXPECT_FALSE(mor::core::file_exists(path("p.bin.tmp")));
}

TEST_F(ShardTest, EmptyShardIsValid) {
  {
    ShardWriter w(path("e.bin"), 1, 10);
    w.finish();
  }
  Shard s = Shard::open(path("e.bin"), 10);
  EXPECT_EQ(s.num_tokens(), 0);
}

TEST_F(ShardTest, CorruptShardsAreDetectedOnOpen) {
  // Bad magic.
  write_raw("magic.bin", {12345, 1, 2, 0}, std::string(4, '\0'));
  expect_error([&] { Shard::open(path("magic.bin")); }, {path("magic.bin"), "bad magic 12345"});
  // Unknown version.
  write_raw("ver.bin", {20240520, 9, 2, 0}, std::string(4, '\0'));
  expect_error([&] { Shard::open(path("ver.bin")); }, {path("ver.bin"), "version 9"});
  // Truncated: the header says 10 tokens, the file holds 9.
  write_raw("trunc.bin", {20240520, 1, 10, 0}, std::string(18, '\0'));
  expect_error([&] { Shard::open(path("trunc.bin")); }, {path("trunc.bin"), "does not match the header", "truncated"});
  // Trailing garbage is as wrong as truncation.
  write_raw("long.bin", {20240520, 1, 1, 0}, std::string(4, '\0'));
  expect_error([&] { Shard::open(path("long.bin")); }, {path("long.bin"), "does not match the header"});
  // Shorter than the header.
  mor::core::atomic_write(path("tiny.bin"), "abc");
  expect_error([&] { Shard::open(path("tiny.bin")); }, {path("tiny.bin"), "shorter than the 1024-byte header"});
  // An id >= the vocabulary, when asked to check.
  std::string payload(6, '\0');
  const uint16_t ids[3] = {5, 600, 7};
  std::memcpy(payload.data(), ids, 6);
  write_raw("ids.bin", {20240520, 1, 3, 0}, payload);
  EXPECT_NO_THROW(Shard::open(path("ids.bin")));  // unknown vocabulary: nothing to check
  expect_error([&] { Shard::open(path("ids.bin"), 512); },
               {path("ids.bin"), "token id 600 at position 1", ">= the vocabulary size 512"});
  // The header's vocabulary is used when the caller gives none.
  write_raw("hdr.bin", {20240520, 1, 3, 512}, payload);
  expect_error([&] { Shard::open(path("hdr.bin")); }, {path("hdr.bin"), "token id 600"});
  // Missing file.
  expect_error([&] { Shard::open(path("missing.bin")); }, {path("missing.bin")});
}

TEST_F(ShardTest, ReadsLlmcLlama3Shards) {
  std::string payload(8, '\0');
  const uint32_t ids[2] = {128000, 3};
  std::memcpy(payload.data(), ids, 8);
  write_raw("l3.bin", {20240801, 7, 2, 0}, payload);
  Shard s = Shard::open(path("l3.bin"), 128256);
  EXPECT_EQ(s.token_bytes(), 4);
  std::vector<int32_t> back(2);
  s.read(0, back);
  EXPECT_EQ(back, (std::vector<int32_t>{128000, 3}));
}

// ---- file helpers --------------------------------------------------------------------------

TEST_F(ShardTest, FileHelpers) {
  expect_error([&] { mor::core::read_file(path("nope.txt")); }, {"cannot read", path("nope.txt"), "No such file"});
  mor::core::atomic_write(path("a.txt"), "hello");
  EXPECT_EQ(mor::core::read_file(path("a.txt")), "hello");
  EXPECT_FALSE(mor::core::file_exists(path("a.txt.tmp")));
  mor::core::atomic_write(path("a.txt"), "bye");  // replaces
  EXPECT_EQ(mor::core::read_file(path("a.txt")), "bye");
  expect_error([&] { mor::core::atomic_write(path("no/such/dir/f"), "x"); }, {path("no/such/dir/f.tmp")});

  auto m = mor::core::MappedFile::open(path("a.txt"));
  EXPECT_EQ(m.view(), "bye");
  mor::core::MappedFile moved = std::move(m);
  EXPECT_EQ(moved.view(), "bye");
  EXPECT_EQ(m.size(), 0u);
  mor::core::atomic_write(path("empty"), "");
  EXPECT_EQ(mor::core::MappedFile::open(path("empty")).size(), 0u);

  mor::core::make_directories(path("d/sub/deeper"));
  mor::core::make_directories(path("d/a"));
  for (const char* f : {"d/b.txt", "d/a/z.jsonl", "d/a-b.txt", "d/sub/deeper/c.txt", "d/.hidden.txt", "d/a/x.bin"}) {
    mor::core::atomic_write(path(f), "x");
  }
  const auto all = mor::core::list_files(path("d"));
  EXPECT_EQ(all, (std::vector<std::string>{path("d/a-b.txt"), path("d/a/x.bin"), path("d/a/z.jsonl"),
                                           path("d/b.txt"), path("d/sub/deeper/c.txt")}));
  EXPECT_EQ(mor::core::list_files(path("d"), {".txt"}),
            (std::vector<std::string>{path("d/a-b.txt"), path("d/b.txt"), path("d/sub/deeper/c.txt")}));
  EXPECT_EQ(mor::core::list_files(path("d/*.txt")), (std::vector<std::string>{path("d/a-b.txt"), path("d/b.txt")}));
  EXPECT_EQ(mor::core::list_files(path("d/a/x.bin"), {".txt"}), (std::vector<std::string>{path("d/a/x.bin")}));
  expect_error([&] { mor::core::list_files(path("d/*.nothing")); }, {"no files match"});
  expect_error([&] { mor::core::list_files(path("absent")); }, {"no such file or directory", path("absent")});
}

TEST(ProgressTest, CountsFromManyThreadsAndRendersLines) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    mor::core::Progress::Options opt;
    opt.mode = mor::core::Progress::Mode::kLines;
    opt.unit = mor::core::Progress::Unit::kBytes;
    opt.secondary_label = "tokens";
    opt.interval_s = 1e9;  // only the final line
    opt.stream = out;
    mor::core::Progress p("tokenizing", 4'000'000, opt);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) p.add(1000, 10);
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(p.count(), 4'000'000);
    EXPECT_EQ(p.secondary(), 40'000);
    EXPECT_NE(p.status_line(true).find("[####"), std::string::npos);
    p.finish();
    p.finish();  // idempotent
  }
  std::rewind(out);
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, out);
  std::fclose(out);
  const std::string text(buf, n);
  EXPECT_NE(text.find("tokenizing 4.0 MB/4.0 MB 100%"), std::string::npos) << text;
  EXPECT_NE(text.find("40.0K tokens"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;

  // Silent mode prints nothing.
  mor::core::Progress::Options quiet;
  quiet.mode = mor::core::Progress::Mode::kSilent;
  mor::core::Progress s("x", 10, quiet);
  s.add(10);
  s.finish();
}

}  // namespace
