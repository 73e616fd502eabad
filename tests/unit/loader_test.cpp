// The data loader: packing against a naive concatenation of the shards' tokens, deterministic and
// complete epochs, disjoint rank slices whose union is the single-rank batch, exact cursor resume
// (also onto other world sizes), document indices against EOS positions, and corrupt-shard errors
// that name the file. Shards are written with data::ShardWriter (corrupt ones byte by byte).
#include "mor/data/loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mor/core/error.h"
#include "mor/data/shard.h"
#include "error_testing.h"

namespace mor::data {
namespace {

namespace fs = std::filesystem;
using mor::testing::error_of;
using mor::testing::kNoError;

constexpr int64_t kVocab = 1000;

class LoaderFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "mor_loader_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string write_shard(const std::string& name, const std::vector<int32_t>& tokens, int64_t vocab = kVocab) {
    ShardWriter w(path(name), shard_version_for_vocab(vocab), vocab);
    w.append(tokens);
    w.finish();
    return path(name);
  }

  // A shard written byte by byte: header {magic, version, count, vocab}, then uint16 tokens.
  std::string write_raw_shard(const std::string& name, int32_t magic, int32_t count,
                              const std::vector<uint16_t>& tokens, int32_t vocab = 0) {
    std::vector<int32_t> header(256, 0);
    header[0] = magic;
    header[1] = 1;
    header[2] = count;
    header[3] = vocab;
    std::ofstream f(path(name), std::ios::binary);
    f.write(reinterpret_cast<const char*>(header.data()), 1024);
    f.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
    return path(name);
  }

  static std::vector<int32_t> random_tokens(int64_t n, uint32_t seed, int64_t vocab = kVocab) {
    std::mt19937 gen(seed);
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (auto& t : out) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(vocab));
    return out;
  }

  // Shards of the given sizes with random tokens; `stream` receives their concatenation.
  std::vector<std::string> write_shards(const std::vector<int64_t>& sizes, std::vector<int32_t>* stream,
                                        uint32_t seed = 1) {
    std::vector<std::string> paths;
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto tokens = random_tokens(sizes[i], seed + static_cast<uint32_t>(i));
      if (stream) stream->insert(stream->end(), tokens.begin(), tokens.end());
      paths.push_back(write_shard("shard_" + std::to_string(100 + i) + ".bin", tokens));
    }
    return paths;
  }

  static LoaderOptions options(std::vector<std::string> shards, int64_t seq_len, int64_t rows_per_rank,
                               int64_t rank = 0, int64_t world = 1, uint64_t seed = 7, bool shuffle = true) {
    LoaderOptions o;
    o.shards = std::move(shards);
    o.vocab_size = kVocab;
    o.seq_len = seq_len;
    o.rows_per_rank = rows_per_rank;
    o.rank = rank;
    o.world_size = world;
    o.seed = seed;
    o.shuffle = shuffle;
    return o;
  }

  std::string dir_;
};


// The global batch at stream position `position` as the concatenation of every rank's slice.
struct Global {
  std::vector<int32_t> inputs, targets;
  std::vector<int64_t> row_ids;
};
Global concat(const std::vector<Batch>& slices) {
  Global g;
  for (const auto& b : slices) {
    g.inputs.insert(g.inputs.end(), b.inputs.begin(), b.inputs.end());
    g.targets.insert(g.targets.end(), b.targets.begin(), b.targets.end());
    g.row_ids.insert(g.row_ids.end(), b.row_ids.begin(), b.row_ids.end());
  }
  return g;
}

// One global step on `loaders` (one per rank), checking all ranks are at the same position.
Global step(std::vector<Loader>& loaders) {
  std::vector<Batch> slices;
  for (auto& l : loaders) slices.push_back(l.next());
  for (const auto& s : slices) EXPECT_EQ(s.position, slices.front().position);
  return concat(slices);
}

std::vector<Loader> make_ranks(const LoaderOptions& base, int64_t world, int64_t rows_per_rank) {
  std::vector<Loader> out;
  for (int64_t r = 0; r < world; ++r) {
    LoaderOptions o = base;
    o.world_size = world;
    o.rank = r;
    o.rows_per_rank = rows_per_rank;
    out.emplace_back(o);
  }
  return out;
}

// ---- packing -----------------------------------------------------------------------------------

class LoaderPackingTest : public LoaderFixture {};

TEST_F(LoaderPackingTest, SequentialRowsEqualSlicesOfTheNaiveTokenStream) {
  std::vector<int32_t> stream;
  const auto shards = write_shards({37, 50, 13, 0, 64}, &stream);
  const int64_t seq_len = 8;
  Loader loader(options(shards, seq_len, 1, 0, 1, 7, /*shuffle=*/false));
  const auto total = static_cast<int64_t>(stream.size());
  ASSERT_EQ(loader.num_tokens(), total);
  ASSERT_EQ(loader.num_rows(), (total - 1) / seq_len);
  for (int64_t i = 0; i < loader.num_rows(); ++i) {
    const Batch b = loader.next();
    ASSERT_EQ(b.row_ids[0], i);
    const auto begin = stream.begin() + i * seq_len;
    EXPECT_EQ(b.inputs, std::vector<int32_t>(begin, begin + seq_len)) << "row " << i;
    EXPECT_EQ(b.targets, std::vector<int32_t>(begin + 1, begin + seq_len + 1)) << "row " << i;
  }
  // The stream wraps into epoch 1, which is again sequential.
  const Batch wrapped = loader.next();
  EXPECT_EQ(wrapped.epoch, 1);
  EXPECT_EQ(wrapped.row_ids[0], 0);
  EXPECT_EQ(wrapped.inputs, std::vector<int32_t>(stream.begin(), stream.begin() + seq_len));
}

TEST_F(LoaderPackingTest, RemainderThatDoesNotFillARowIsDropped) {
  const int64_t seq_len = 8;
  std::vector<int32_t> tokens(25);
  std::iota(tokens.begin(), tokens.end(), 0);
  // 25 = 3 * 8 + 1 tokens: exactly 3 rows, the last target is the last token.
  Loader three(options({write_shard("a.bin", tokens)}, seq_len, 3, 0, 1, 7, false));
  EXPECT_EQ(three.num_rows(), 3);
  EXPECT_EQ(three.next().targets.back(), 24);
  // 24 tokens: the third row would need token 24, so only 2 rows; tokens 17..23 are dropped.
  tokens.pop_back();
  Loader two(options({write_shard("b.bin", tokens)}, seq_len, 2, 0, 1, 7, false));
  EXPECT_EQ(two.num_rows(), 2);
  const Batch b = two.next();
  EXPECT_EQ(b.targets.back(), 16);
  EXPECT_EQ(two.next().row_ids, (std::vector<int64_t>{0, 1}));  // wrapped: rows 0, 1 again
}

TEST_F(LoaderPackingTest, RowsReadAcrossSeveralShardBoundariesIncludingEmptyShards) {
  // Tokens equal their stream index, split over shards of 5, 1, 0, 3 and 20 tokens.
  std::vector<std::string> shards;
  int32_t next = 0;
  int index = 0;
  for (int64_t size : {5, 1, 0, 3, 20}) {
    std::vector<int32_t> t(static_cast<size_t>(size));
    std::iota(t.begin(), t.end(), next);
    next += static_cast<int32_t>(size);
    shards.push_back(write_shard("part_" + std::to_string(index++) + ".bin", t));
  }
  const int64_t seq_len = 10;
  Loader loader(options(shards, seq_len, 2, 0, 1, 7, false));
  ASSERT_EQ(loader.num_rows(), 2);  // 29 tokens
  const Batch b = loader.next();
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t j = 0; j < seq_len; ++j) {
      EXPECT_EQ(b.inputs[static_cast<size_t>(r * seq_len + j)], r * seq_len + j);
      EXPECT_EQ(b.targets[static_cast<size_t>(r * seq_len + j)], r * seq_len + j + 1);
    }
  }
}

// ---- order -------------------------------------------------------------------------------------

class LoaderOrderTest : public LoaderFixture {};

std::vector<int64_t> epoch_rows(Loader& loader) {
  std::vector<int64_t> rows;
  while (static_cast<int64_t>(rows.size()) < loader.num_rows()) {
    const Batch b = loader.next();
    rows.insert(rows.end(), b.row_ids.begin(), b.row_ids.end());
  }
  rows.resize(static_cast<size_t>(loader.num_rows()));
  return rows;
}

TEST_F(LoaderOrderTest, SameSeedGivesTheSameOrderAndAnotherSeedADifferentOne) {
  const auto shards = write_shards({400, 300}, nullptr);
  Loader a(options(shards, 4, 5, 0, 1, /*seed=*/7));
  Loader b(options(shards, 4, 5, 0, 1, /*seed=*/7));
  Loader c(options(shards, 4, 5, 0, 1, /*seed=*/8));
  const auto ra = epoch_rows(a);
  EXPECT_EQ(ra, epoch_rows(b));
  EXPECT_NE(ra, epoch_rows(c));
  std::vector<int64_t> identity(ra.size());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(ra, identity);
}

TEST_F(LoaderOrderTest, EveryRowExactlyOncePerEpochWhenBatchesWrapAcrossEpochs) {
  const auto shards = write_shards({93}, nullptr);
  Loader loader(options(shards, 4, 5));  // 23 rows, global batch 5: batches straddle epochs
  const int64_t n = loader.num_rows();
  ASSERT_EQ(n, 23);
  std::vector<int64_t> stream;
  while (static_cast<int64_t>(stream.size()) < 3 * n) {
    const Batch b = loader.next();
    EXPECT_EQ(b.position, static_cast<int64_t>(stream.size()));
    stream.insert(stream.end(), b.row_ids.begin(), b.row_ids.end());
  }
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> rows(stream.begin() + e * n, stream.begin() + (e + 1) * n);
    epochs.push_back(rows);
    std::sort(rows.begin(), rows.end());
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(rows, all) << "epoch " << e;
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST_F(LoaderOrderTest, ShuffleOffVisitsRowsInStreamOrder) {
  const auto shards = write_shards({93}, nullptr);
  Loader loader(options(shards, 4, 5, 0, 1, 7, /*shuffle=*/false));
  for (int64_t s = 0; s < 10; ++s) {
    const Batch b = loader.next();
    for (int64_t r = 0; r < 5; ++r) EXPECT_EQ(b.row_ids[static_cast<size_t>(r)], (s * 5 + r) % 23);
  }
}

// Values from an independent Python implementation (arbitrary-precision integers, no __int128):
//   M = 2**64 - 1; mix(z): z = ((z ^ z >> 30) * 0xBF58476D1CE4E5B9) & M;
//                         z = ((z ^ z >> 27) * 0x94D049BB133111EB) & M; return z ^ z >> 31
//   state = mix((mix(seed ^ 0x6D6F722D64617461) + mix(epoch ^ 0x65706F6368000000)) & M)
//   next(): state = (state + 0x9E3779B97F4A7C15) & M; return mix(state)
//   below(b): m = next() * b; while (m & M) < (2**64 - b) % b: m = next() * b; return m >> 64
//   p = list(range(n)); for i in range(n - 1, 0, -1): j = below(i + 1); swap p[i], p[j]
// A change here changes every shuffled run's data order and breaks resuming old checkpoints.
TEST(LoaderPermutationTest, MatchesAnIndependentReferenceImplementation) {
  EXPECT_EQ(shuffle_permutation(12, 1234, 0), (std::vector<uint32_t>{7, 11, 10, 5, 9, 1, 4, 6, 2, 3, 0, 8}));
  EXPECT_EQ(shuffle_permutation(12, 1234, 1), (std::vector<uint32_t>{3, 0, 8, 2, 4, 5, 11, 7, 10, 6, 1, 9}));
  EXPECT_EQ(shuffle_permutation(12, 0, 0), (std::vector<uint32_t>{5, 7, 9, 6, 1, 2, 3, 10, 11, 8, 0, 4}));
  EXPECT_EQ(shuffle_permutation(12, UINT64_MAX, 7),
            (std::vector<uint32_t>{1, 7, 2, 9, 4, 3, 8, 10, 0, 6, 5, 11}));
  EXPECT_TRUE(shuffle_permutation(0, 1, 0).empty());
  EXPECT_EQ(shuffle_permutation(1, 1, 0), (std::vector<uint32_t>{0}));
}

TEST(LoaderPermutationTest, EveryElementReachesEveryPlaceAboutEquallyOften) {
  // n = 5 over 5000 (seed, epoch) pairs: each of the 25 (place, value) cells expects 1000 hits,
  // standard deviation ~28. A classic off-by-one (j drawn from [0, i)) leaves the diagonal empty.
  const int n = 5;
  std::vector<std::vector<int>> counts(n, std::vector<int>(n, 0));
  for (uint64_t seed = 0; seed < 1000; ++seed) {
    for (int64_t epoch = 0; epoch < 5; ++epoch) {
      const auto p = shuffle_permutation(n, seed, epoch);
      for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(i)][p[static_cast<size_t>(i)]];
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int v = 0; v < n; ++v) {
      EXPECT_NEAR(counts[static_cast<size_t>(i)][static_cast<size_t>(v)], 1000, 150) << "place " << i << " value " << v;
    }
  }
}

// ---- ranks ---------------------------------------------------------------------------------------

class LoaderRankTest : public LoaderFixture {};

TEST_F(LoaderRankTest, RankSlicesAreDisjointAndTheirUnionIsTheSingleRankGlobalBatch) {
  const auto shards = write_shards({500, 333}, nullptr);
  const LoaderOptions base = options(shards, 6, 6);
  Loader single(base);                       // 1 rank x 6 rows
  auto ranks = make_ranks(base, 3, 2);       // 3 ranks x 2 rows
  ASSERT_EQ(single.num_rows(), 138);
  for (int s = 0; s < 30; ++s) {             // 180 rows: crosses into epoch 1
    const Batch expected = single.next();
    std::vector<Batch> slices;
    for (auto& l : ranks) slices.push_back(l.next());
    std::set<int64_t> seen;
    for (const auto& b : slices) {
      EXPECT_EQ(b.rows, 2);
      EXPECT_EQ(b.inputs.size(), 2u * 6u);
      for (int64_t id : b.row_ids) seen.insert(id);
    }
    if (expected.position / 138 == (expected.position + 5) / 138) {
      EXPECT_EQ(seen.size(), 6u) << "ranks overlap in step " << s;  // within one epoch: disjoint
    }
    const Global g = concat(slices);
    EXPECT_EQ(g.inputs, expected.inputs) << "step " << s;
    EXPECT_EQ(g.targets, expected.targets) << "step " << s;
    EXPECT_EQ(g.row_ids, expected.row_ids) << "step " << s;
  }
}

// ---- cursor ----------------------------------------------------------------------------------------

class LoaderCursorTest : public LoaderFixture {};

TEST_F(LoaderCursorTest, RestoredCursorGivesTheIdenticalNextBatches) {
  const auto shards = write_shards({300, 211}, nullptr);
  LoaderOptions o = options(shards, 8, 4, 1, 2, /*seed=*/99);
  o.document_ids = true;
  o.eos_id = 3;
  Loader original(o);
  for (int i = 0; i < 9; ++i) original.next();  // 72 rows of 63: into epoch 1
  const std::string saved = cursor_to_json(original.cursor());
  Loader resumed(o);
  resumed.restore(cursor_from_json(saved));
  EXPECT_EQ(resumed.cursor(), original.cursor());
  for (int i = 0; i < 20; ++i) {
    const Batch a = original.next();
    const Batch b = resumed.next();
    EXPECT_EQ(a.position, b.position);
    EXPECT_EQ(a.row_ids, b.row_ids) << "batch " << i;
    EXPECT_EQ(a.inputs, b.inputs) << "batch " << i;
    EXPECT_EQ(a.targets, b.targets) << "batch " << i;
    EXPECT_EQ(a.doc_ids, b.doc_ids) << "batch " << i;
  }
}

TEST_F(LoaderCursorTest, JsonRoundTripKeepsEveryField) {
  LoaderCursor c;
  c.seed = UINT64_MAX;
  c.shuffle = false;
  c.epoch = 12;
  c.rows_consumed = 5;
  c.seq_len = 2048;
  c.total_rows = 1'000'000'007;
  c.fingerprint = "0123456789abcdef";
  EXPECT_EQ(cursor_from_json(cursor_to_json(c)), c);
}

TEST_F(LoaderCursorTest, RestoreOnWorldSizes1Then2Then4ContinuesTheSameGlobalSequence) {
  const auto shards = write_shards({400, 130}, nullptr);
  const LoaderOptions base = options(shards, 8, 8);  // 66 rows, global batch 8
  Loader reference(base);
  std::vector<Global> expected;
  for (int s = 0; s < 12; ++s) expected.push_back(concat({reference.next()}));

  auto one = make_ranks(base, 1, 8);
  for (int s = 0; s < 4; ++s) EXPECT_EQ(step(one).row_ids, expected[static_cast<size_t>(s)].row_ids);
  const std::string after_one = cursor_to_json(one[0].cursor());

  auto two = make_ranks(base, 2, 4);
  for (auto& l : two) l.restore(cursor_from_json(after_one));
  for (int s = 4; s < 8; ++s) {
    const Global g = step(two);
    EXPECT_EQ(g.row_ids, expected[static_cast<size_t>(s)].row_ids) << "step " << s;
    EXPECT_EQ(g.inputs, expected[static_cast<size_t>(s)].inputs) << "step " << s;
  }
  EXPECT_EQ(two[0].cursor(), two[1].cursor());
  const std::string after_two = cursor_to_json(two[1].cursor());

  auto four = make_ranks(base, 4, 2);
  for (auto& l : four) l.restore(cursor_from_json(after_two));
  for (int s = 8; s < 12; ++s) {  // position 64..95 crosses the epoch boundary at 66
    const Global g = step(four);
    EXPECT_EQ(g.row_ids, expected[static_cast<size_t>(s)].row_ids) << "step " << s;
    EXPECT_EQ(g.inputs, expected[static_cast<size_t>(s)].inputs) << "step " << s;
    EXPECT_EQ(g.targets, expected[static_cast<size_t>(s)].targets) << "step " << s;
  }
}

TEST_F(LoaderCursorTest, ChangedGlobalBatchSizeContinuesFromTheSameStreamPosition) {
  const auto shards = write_shards({400}, nullptr);
  const LoaderOptions base = options(shards, 8, 6);
  Loader six(base);
  for (int s = 0; s < 3; ++s) six.next();  // 18 rows consumed
  auto four = make_ranks(base, 2, 2);      // global batch 4
  for (auto& l : four) l.restore(six.cursor());
  Loader stream(options(shards, 8, 1));    // one row per step: the raw stream
  std::vector<int64_t> rows;
  for (int i = 0; i < 30; ++i) rows.push_back(stream.next().row_ids[0]);
  for (int s = 0; s < 3; ++s) {
    const Global g = step(four);
    EXPECT_EQ(g.row_ids, std::vector<int64_t>(rows.begin() + 18 + 4 * s, rows.begin() + 22 + 4 * s));
  }
}

TEST_F(LoaderCursorTest, MismatchedSeqLenIsAnErrorNamingTheField) {
  const auto shards = write_shards({400}, nullptr);
  Loader a(options(shards, 8, 2));
  a.next();
  Loader b(options(shards, 16, 2));
  EXPECT_NE(error_of([&] { b.restore(a.cursor()); }).find("'seq_len'"), std::string::npos);
}

TEST_F(LoaderCursorTest, MismatchedDataIsAnErrorNamingTheFingerprint) {
  const auto shards = write_shards({400, 100}, nullptr);
  Loader a(options(shards, 8, 2));
  const LoaderCursor saved = a.cursor();
  // Same names, one token more in the second shard.
  write_shard("shard_101.bin", random_tokens(101, 5));
  Loader longer(options(shards, 8, 2));
  EXPECT_NE(error_of([&] { longer.restore(saved); }).find("'fingerprint'"), std::string::npos);
  // Same token counts, a shard renamed.
  write_shard("other_101.bin", random_tokens(100, 5));
  Loader renamed(options({shards[0], path("other_101.bin")}, 8, 2));
  EXPECT_EQ(renamed.num_tokens(), a.num_tokens());
  EXPECT_NE(error_of([&] { renamed.restore(saved); }).find("'fingerprint'"), std::string::npos);
}

TEST_F(LoaderCursorTest, FingerprintDependsOnFileNamesAndCountsNotOnTheDirectory) {
  const auto shards = write_shards({400, 100}, nullptr);
  Loader a(options(shards, 8, 2));
  fs::create_directory(path("moved"));
  for (const auto& s : shards) fs::copy_file(s, fs::path(dir_) / "moved" / fs::path(s).filename());
  Loader moved(options({path("moved")}, 8, 2));
  EXPECT_EQ(moved.fingerprint(), a.fingerprint());
  EXPECT_NO_THROW(moved.restore(a.cursor()));
  EXPECT_NE(data_fingerprint({"a.bin"}, {10}), data_fingerprint({"a.bin"}, {11}));
  EXPECT_NE(data_fingerprint({"a.bin"}, {10}), data_fingerprint({"b.bin"}, {10}));
  EXPECT_NE(data_fingerprint({"a.bin", "b.bin"}, {1, 2}), data_fingerprint({"b.bin", "a.bin"}, {2, 1}));
}

TEST_F(LoaderCursorTest, MismatchedSeedOrShuffleIsAnErrorNamingTheField) {
  const auto shards = write_shards({400}, nullptr);
  Loader a(options(shards, 8, 2, 0, 1, /*seed=*/1));
  Loader other_seed(options(shards, 8, 2, 0, 1, /*seed=*/2));
  Loader unshuffled(options(shards, 8, 2, 0, 1, /*seed=*/1, /*shuffle=*/false));
  EXPECT_NE(error_of([&] { other_seed.restore(a.cursor()); }).find("'seed'"), std::string::npos);
  EXPECT_NE(error_of([&] { unshuffled.restore(a.cursor()); }).find("'shuffle'"), std::string::npos);
}

TEST_F(LoaderCursorTest, MalformedCursorJsonIsAnErrorNamingTheField) {
  LoaderCursor c;
  c.seq_len = 8;
  c.total_rows = 10;
  c.fingerprint = "x";
  const std::string good = cursor_to_json(c);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  EXPECT_NE(error_of([&] { cursor_from_json(with("\"epoch\":0,", "")); }).find("'epoch' is missing"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cursor_from_json(with("\"seq_len\":8", "\"seq_len\":\"8\"")); }).find("'seq_len'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cursor_from_json(with("\"format_version\":1", "\"format_version\":2")); })
                .find("'format_version'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cursor_from_json(with("\"rows_consumed\":0", "\"rows_consumed\":10")); })
                .find("'rows_consumed'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cursor_from_json(with("\"seed\":0", "\"seed\":-1")); }).find("'seed'"), std::string::npos);
  EXPECT_NE(error_of([&] { cursor_from_json("{not json"); }), kNoError);
  EXPECT_NE(error_of([&] { cursor_from_json("[1]"); }), kNoError);
}

// ---- document indices ----------------------------------------------------------------------------

class LoaderDocumentTest : public LoaderFixture {};

TEST_F(LoaderDocumentTest, DocumentIndexCountsTheEosTokensBeforeEachPosition) {
  // EOS = 0 on about one token in five.
  auto tokens = random_tokens(700, 11, 5);
  const auto shards = std::vector<std::string>{write_shard("docs.bin", tokens)};
  LoaderOptions o = options(shards, 16, 3);
  o.document_ids = true;
  o.eos_id = 0;
  Loader loader(o);
  int64_t restarts = 0;
  for (int s = 0; s < 20; ++s) {
    const Batch b = loader.next();
    ASSERT_EQ(b.doc_ids.size(), b.inputs.size());
    for (int64_t r = 0; r < b.rows; ++r) {
      const auto row = b.inputs.begin() + r * 16;
      std::vector<int64_t> eos_positions;
      for (int64_t j = 0; j < 16; ++j) {
        if (row[j] == 0) eos_positions.push_back(j);
      }
      for (int64_t j = 0; j < 16; ++j) {
        // Document of position j = number of EOS strictly before j.
        const auto expected = std::lower_bound(eos_positions.begin(), eos_positions.end(), j) - eos_positions.begin();
        EXPECT_EQ(b.doc_ids[static_cast<size_t>(r * 16 + j)], expected) << "row " << r << " position " << j;
      }
      restarts += static_cast<int64_t>(eos_positions.size());
    }
  }
  EXPECT_GT(restarts, 0);
}

TEST_F(LoaderDocumentTest, DocumentIndicesOfAHandWrittenRowAndTheirAbsenceWhenNotAsked) {
  const int32_t e = 9;
  const std::vector<int32_t> tokens{5, e, 6, 7, e, e, 8, 1};  // one row of 7 inputs
  LoaderOptions o = options({write_shard("row.bin", tokens)}, 7, 1, 0, 1, 7, false);
  o.document_ids = true;
  o.eos_id = e;
  EXPECT_EQ(Loader(o).next().doc_ids, (std::vector<int32_t>{0, 0, 1, 1, 1, 2, 3}));
  o.document_ids = false;
  EXPECT_TRUE(Loader(o).next().doc_ids.empty());
}

// ---- paths, options and corrupt shards --------------------------------------------------------

class LoaderErrorTest : public LoaderFixture {};

TEST_F(LoaderErrorTest, DirectoriesAndGlobsResolveSortedByName) {
  for (const char* name : {"c_train.bin", "a_train.bin", "b_val.bin"}) write_shard(name, random_tokens(20, 1));
  std::ofstream(path("notes.txt")) << "not a shard";
  EXPECT_EQ(resolve_shard_paths({dir_}), (std::vector<std::string>{path("a_train.bin"), path("b_val.bin"),
                                                                    path("c_train.bin")}));
  EXPECT_EQ(resolve_shard_paths({path("*_train.bin")}),
            (std::vector<std::string>{path("a_train.bin"), path("c_train.bin")}));
  // Explicit lists keep their order.
  EXPECT_EQ(resolve_shard_paths({path("c_train.bin"), path("a_train.bin")}),
            (std::vector<std::string>{path("c_train.bin"), path("a_train.bin")}));
  EXPECT_NE(error_of([&] { resolve_shard_paths({path("*_test.bin")}); }).find("_test.bin"), std::string::npos);
  EXPECT_NE(error_of([&] { resolve_shard_paths({path("missing.bin")}); }).find("missing.bin"), std::string::npos);
  EXPECT_NE(error_of([&] { resolve_shard_paths({dir_, path("a_train.bin")}); }).find("listed twice"),
            std::string::npos);
}

TEST_F(LoaderErrorTest, BadMagicIsDetectedAtConstructionAndNamesTheFile) {
  const auto good = write_shards({100, 100}, nullptr);
  const std::string bad = write_raw_shard("shard_bad.bin", 12345, 50, std::vector<uint16_t>(50, 1));
  const std::string msg = error_of([&] { Loader(options({good[0], bad, good[1]}, 8, 2)); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  EXPECT_EQ(msg.find(good[0]), std::string::npos) << msg;
}

TEST_F(LoaderErrorTest, TruncatedShardIsDetectedAtConstructionAndNamesTheFile) {
  const std::string bad = write_raw_shard("short.bin", kShardMagic, 100, std::vector<uint16_t>(60, 1));
  const std::string msg = error_of([&] { Loader(options({bad}, 8, 2)); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
}

TEST_F(LoaderErrorTest, TokenIdAtOrAboveTheVocabularyIsDetectedAtConstructionAndNamesTheFile) {
  std::vector<uint16_t> tokens(64, 1);
  tokens[40] = static_cast<uint16_t>(kVocab);
  const std::string bad = write_raw_shard("big_id.bin", kShardMagic, 64, tokens);
  const std::string msg = error_of([&] { Loader(options({bad}, 8, 2)); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  tokens[40] = static_cast<uint16_t>(kVocab - 1);
  const std::string ok = write_raw_shard("ok.bin", kShardMagic, 64, tokens);
  EXPECT_NO_THROW(Loader(options({ok}, 8, 2)));
}

TEST_F(LoaderErrorTest, TooFewTokensForOneRowIsAnError) {
  const std::string s = write_shard("tiny.bin", random_tokens(8, 1));
  EXPECT_NE(error_of([&] { Loader(options({s}, 8, 1)); }).find("seq_len + 1"), std::string::npos);
  EXPECT_NO_THROW(Loader(options({s}, 7, 1)));
}

TEST_F(LoaderErrorTest, InvalidOptionsAreErrorsNamingTheOption) {
  const auto shards = write_shards({100}, nullptr);
  auto msg = [&](auto edit) {
    LoaderOptions o = options(shards, 8, 2);
    edit(o);
    return error_of([&] { Loader l(o); });
  };
  EXPECT_NE(msg([](LoaderOptions& o) { o.seq_len = 0; }).find("seq_len"), std::string::npos);
  EXPECT_NE(msg([](LoaderOptions& o) { o.rows_per_rank = 0; }).find("rows_per_rank"), std::string::npos);
  EXPECT_NE(msg([](LoaderOptions& o) { o.rank = 1; }).find("rank"), std::string::npos);
  EXPECT_NE(msg([](LoaderOptions& o) { o.document_ids = true; }).find("eos_id"), std::string::npos);
  EXPECT_NE(msg([](LoaderOptions& o) {
              o.document_ids = true;
              o.eos_id = kVocab;
            }).find("eos_id"),
            std::string::npos);
}

}  // namespace
}  // namespace mor::data
