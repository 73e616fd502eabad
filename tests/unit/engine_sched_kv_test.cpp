// Unit tests of engine::KvBlockManager: block arithmetic, atomic appends, truncate/locate/release,
// and thousands of random operations checked against an independent per-(seq, slot) length model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "error_testing.h"
#include "mor/engine/kv_blocks.h"

namespace mor::engine {
namespace {

using mor::testing::error_of;
using mor::testing::expect_error;
using mor::testing::kNoError;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

TEST(KvBlocks, ConstructionValidatesArguments) {
  expect_error([] { KvBlockManager(0, 4, 8); });
  expect_error([] { KvBlockManager(2, 0, 8); });
  expect_error([] { KvBlockManager(2, 4, -1); });
  expect_error([] { KvBlockManager(2, 4, int64_t{1} << 32); });
  KvBlockManager kv(3, 4, 10);
  EXPECT_EQ(kv.num_slots(), 3);
  EXPECT_EQ(kv.block_size(), 4);
  EXPECT_EQ(kv.num_blocks(), 10);
  EXPECT_EQ(kv.free_blocks(), 10);
  EXPECT_EQ(kv.used_blocks(), 0);
  kv.check_invariants();
  KvBlockManager empty(1, 1, 0);
  EXPECT_FALSE(empty.append(0, 0, 1));
  EXPECT_TRUE(empty.append(0, 0, 0));
  EXPECT_FALSE(empty.has(0));
  empty.check_invariants();
}

TEST(KvBlocks, BlocksForBudget) {
  EXPECT_EQ(KvBlockManager::blocks_for_budget(1000, 100), 10);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(999, 100), 9);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(1001, 100), 10);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(99, 100), 0);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(0, 100), 0);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(-5000, 100), 0);
  EXPECT_EQ(KvBlockManager::blocks_for_budget(int64_t{80} << 30, int64_t{2} << 20), 40960);
  expect_error([] { KvBlockManager::blocks_for_budget(1000, 0); });
  expect_error([] { KvBlockManager::blocks_for_budget(1000, -3); });
}

TEST(KvBlocks, BlocksNeeded) {
  KvBlockManager kv(2, 4, 16);
  EXPECT_EQ(kv.blocks_needed(7, 0, 0), 0);
  EXPECT_EQ(kv.blocks_needed(7, 0, 1), 1);
  EXPECT_EQ(kv.blocks_needed(7, 0, 4), 1);
  EXPECT_EQ(kv.blocks_needed(7, 0, 5), 2);
  EXPECT_EQ(kv.blocks_needed(7, 1, 9), 3);
  ASSERT_TRUE(kv.append(7, 0, 3));
  EXPECT_EQ(kv.blocks_needed(7, 0, 1), 0);  // fills the partial block
  EXPECT_EQ(kv.blocks_needed(7, 0, 2), 1);
  EXPECT_EQ(kv.blocks_needed(7, 0, 5), 1);
  EXPECT_EQ(kv.blocks_needed(7, 0, 6), 2);
  EXPECT_EQ(kv.blocks_needed(7, 1, 1), 1);  // the other slot is empty
  expect_error([&] { kv.blocks_needed(7, 0, -1); });
  expect_error([&] { kv.blocks_needed(7, 2, 1); });
  expect_error([&] { kv.blocks_needed(7, -1, 1); });
}

TEST(KvBlocks, AllocationAcrossBlockBoundaries) {
  KvBlockManager kv(2, 4, 8);
  ASSERT_TRUE(kv.append(1, 0, 3));
  EXPECT_EQ(kv.length(1, 0), 3);
  EXPECT_EQ(kv.table(1, 0).size(), 1u);
  EXPECT_EQ(kv.used_blocks(), 1);
  ASSERT_TRUE(kv.append(1, 0, 1));  // exactly fills block 0
  EXPECT_EQ(kv.table(1, 0).size(), 1u);
  ASSERT_TRUE(kv.append(1, 0, 1));  // crosses into a second block
  EXPECT_EQ(kv.table(1, 0).size(), 2u);
  ASSERT_TRUE(kv.append(1, 0, 8));  // 13 tokens: 4 blocks
  EXPECT_EQ(kv.length(1, 0), 13);
  EXPECT_EQ(kv.table(1, 0).size(), 4u);
  EXPECT_EQ(kv.length(1, 1), 0);
  EXPECT_TRUE(kv.table(1, 1).empty());
  ASSERT_TRUE(kv.append(2, 1, 4));
  EXPECT_EQ(kv.used_blocks(), 5);
  EXPECT_EQ(kv.free_blocks(), 3);
  std::set<int32_t> distinct(kv.table(1, 0).begin(), kv.table(1, 0).end());
  distinct.insert(kv.table(2, 1).begin(), kv.table(2, 1).end());
  EXPECT_EQ(distinct.size(), 5u);
  for (int32_t b : distinct) EXPECT_TRUE(b >= 0 && b < 8);
  EXPECT_EQ(kv.sequences(), (std::vector<int64_t>{1, 2}));
  kv.check_invariants();
  expect_error([&] { kv.append(-1, 0, 1); });
  expect_error([&] { kv.append(1, 0, -1); });
  expect_error([&] { kv.append(1, 2, 1); });
}

TEST(KvBlocks, AppendFailsAtomically) {
  KvBlockManager kv(2, 4, 3);
  ASSERT_TRUE(kv.append(1, 0, 6));  // 2 blocks
  const std::vector<int32_t> before = kv.table(1, 0);
  EXPECT_FALSE(kv.append(1, 0, 7));  // 13 tokens would take 4 blocks, 2 more than the 1 free
  EXPECT_EQ(kv.length(1, 0), 6);
  EXPECT_EQ(kv.table(1, 0), before);
  EXPECT_EQ(kv.free_blocks(), 1);
  EXPECT_FALSE(kv.append(2, 0, 5));  // an unknown sequence stays unknown
  EXPECT_FALSE(kv.has(2));
  EXPECT_EQ(kv.sequences(), (std::vector<int64_t>{1}));
  kv.check_invariants();
  EXPECT_TRUE(kv.append(1, 0, 6));  // 12 tokens: exactly the 3 blocks
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_FALSE(kv.append(1, 1, 1));
  EXPECT_EQ(kv.length(1, 1), 0);
  kv.check_invariants();
}

TEST(KvBlocks, TruncateFreesUnneededBlocks) {
  KvBlockManager kv(2, 4, 8);
  ASSERT_TRUE(kv.append(3, 1, 10));  // 3 blocks
  const std::vector<int32_t> table = kv.table(3, 1);
  kv.truncate(3, 1, 9);  // still 3 blocks
  EXPECT_EQ(kv.length(3, 1), 9);
  EXPECT_EQ(kv.table(3, 1), table);
  kv.truncate(3, 1, 8);  // 2 blocks: the last goes back
  EXPECT_EQ(kv.table(3, 1), std::vector<int32_t>(table.begin(), table.begin() + 2));
  EXPECT_EQ(kv.free_blocks(), 6);
  kv.truncate(3, 1, 5);
  EXPECT_EQ(kv.table(3, 1).size(), 2u);
  kv.truncate(3, 1, 0);
  EXPECT_TRUE(kv.table(3, 1).empty());
  EXPECT_EQ(kv.free_blocks(), 8);
  EXPECT_TRUE(kv.has(3));  // known until released
  kv.check_invariants();
  expect_error([&] { kv.truncate(3, 1, 1); });   // beyond the length
  expect_error([&] { kv.truncate(3, 1, -1); });
  expect_error([&] { kv.truncate(9, 0, 1); });   // unknown sequence has length 0
  EXPECT_EQ(error_of([&] { kv.truncate(9, 0, 0); }), kNoError);
  EXPECT_FALSE(kv.has(9));
  ASSERT_TRUE(kv.append(3, 1, 4));  // grows again from 0
  EXPECT_EQ(kv.length(3, 1), 4);
  kv.check_invariants();
}

TEST(KvBlocks, LocateMapsTokensToBlockAndOffset) {
  KvBlockManager kv(2, 3, 8);
  ASSERT_TRUE(kv.append(5, 0, 2));
  ASSERT_TRUE(kv.append(6, 0, 4));  // interleaved allocation: the tables are not contiguous
  ASSERT_TRUE(kv.append(5, 0, 6));
  const std::vector<int32_t>& table = kv.table(5, 0);
  ASSERT_EQ(table.size(), 3u);
  for (int64_t k = 0; k < 8; ++k) {
    auto [block, offset] = kv.locate(5, 0, k);
    EXPECT_EQ(block, table[static_cast<size_t>(k / 3)]) << k;
    EXPECT_EQ(offset, k % 3) << k;
  }
  EXPECT_NE(kv.locate(5, 0, 3).first, kv.locate(5, 0, 2).first);
  expect_error([&] { kv.locate(5, 0, 8); });
  expect_error([&] { kv.locate(5, 0, -1); });
  expect_error([&] { kv.locate(5, 1, 0); });
  expect_error([&] { kv.locate(42, 0, 0); });
}

TEST(KvBlocks, ReleaseReturnsEveryBlock) {
  KvBlockManager kv(3, 2, 20);
  ASSERT_TRUE(kv.append(1, 0, 5));
  ASSERT_TRUE(kv.append(1, 2, 3));
  ASSERT_TRUE(kv.append(2, 1, 7));
  ASSERT_TRUE(kv.append(1, 1, 1));
  EXPECT_EQ(kv.used_blocks(), 3 + 2 + 4 + 1);
  kv.release(1);
  EXPECT_FALSE(kv.has(1));
  EXPECT_EQ(kv.length(1, 0), 0);
  EXPECT_TRUE(kv.table(1, 2).empty());
  EXPECT_EQ(kv.used_blocks(), 4);
  kv.release(1);   // unknown: no-op
  kv.release(77);  // unknown: no-op
  EXPECT_EQ(kv.used_blocks(), 4);
  kv.check_invariants();
  kv.release(2);
  EXPECT_EQ(kv.used_blocks(), 0);
  EXPECT_EQ(kv.free_blocks(), 20);
  EXPECT_TRUE(kv.sequences().empty());
  // Every block can be handed out again.
  ASSERT_TRUE(kv.append(3, 0, 40));
  EXPECT_EQ(kv.free_blocks(), 0);
  std::set<int32_t> all(kv.table(3, 0).begin(), kv.table(3, 0).end());
  EXPECT_EQ(all.size(), 20u);
  kv.check_invariants();
}

// Random appends/truncates/releases against a model that only knows lengths. A physical content
// array written through locate() catches any block handed to two owners at once.
TEST(KvBlocks, RandomOperationsMatchLengthModel) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    std::mt19937_64 rng(seed);
    auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    const int64_t slots = uniform(1, 4), bs = uniform(1, 6), blocks = uniform(0, 40);
    KvBlockManager kv(slots, bs, blocks);
    std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> model;  // (seq, slot) -> written values
    std::set<int64_t> known;
    std::vector<int64_t> content(static_cast<size_t>(blocks * bs), -1);
    int64_t next_value = 0, appends_ok = 0, appends_refused = 0;
    auto model_used = [&] {
      int64_t used = 0;
      for (const auto& [key, values] : model) used += ceil_div(static_cast<int64_t>(values.size()), bs);
      return used;
    };
    for (int op = 0; op < 3000; ++op) {
      const int64_t seq = uniform(0, 7), slot = uniform(0, slots - 1);
      const int64_t kind = uniform(0, 9);
      auto& values = model[{seq, slot}];
      const auto len = static_cast<int64_t>(values.size());
      if (kind < 6) {
        const int64_t n = uniform(0, 3 * bs);
        const int64_t need = ceil_div(len + n, bs) - ceil_div(len, bs);
        ASSERT_EQ(kv.blocks_needed(seq, slot, n), need);
        const bool expected = need <= blocks - model_used();
        ASSERT_EQ(kv.append(seq, slot, n), expected) << "seed " << seed << " op " << op;
        if (expected) {
          if (n > 0) known.insert(seq);
          for (int64_t k = 0; k < n; ++k) {
            values.push_back(next_value);
            auto [b, off] = kv.locate(seq, slot, len + k);
            content[static_cast<size_t>(b * bs + off)] = next_value++;
          }
          ++appends_ok;
        } else {
          ++appends_refused;
        }
      } else if (kind < 9) {
        const int64_t to = uniform(0, len);
        kv.truncate(seq, slot, to);
        values.resize(static_cast<size_t>(to));
      } else {
        kv.release(seq);
        for (int64_t s = 0; s < slots; ++s) model[{seq, s}].clear();
        known.erase(seq);
      }
      ASSERT_NO_THROW(kv.check_invariants()) << "seed " << seed << " op " << op;
      ASSERT_EQ(kv.used_blocks(), model_used());
      ASSERT_EQ(kv.used_blocks() + kv.free_blocks(), blocks);
      ASSERT_EQ(kv.sequences(), std::vector<int64_t>(known.begin(), known.end()));
      if (op % 50 == 0 || op == 2999) {
        for (const auto& [key, vals] : model) {
          ASSERT_EQ(kv.length(key.first, key.second), static_cast<int64_t>(vals.size()));
          for (size_t k = 0; k < vals.size(); ++k) {
            auto [b, off] = kv.locate(key.first, key.second, static_cast<int64_t>(k));
            ASSERT_EQ(content[static_cast<size_t>(b * bs + off)], vals[k])
                << "seed " << seed << " op " << op << ": a block is shared by two owners";
          }
        }
      }
    }
    if (blocks > 4) {
      EXPECT_GT(appends_ok, 100) << "seed " << seed;
      EXPECT_GT(appends_refused, 0) << "seed " << seed;
    }
    for (int64_t seq : kv.sequences()) kv.release(seq);
    EXPECT_EQ(kv.used_blocks(), 0);
    EXPECT_EQ(kv.free_blocks(), blocks);
    kv.check_invariants();
  }
}

}  // namespace
}  // namespace mor::engine
