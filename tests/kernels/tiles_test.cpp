// The tile arithmetic of common/attention_tiles.h (the very code the CUDA kernels run) against brute
// force: key/query ranges of random tiles over random positions in both mask modes, the binary
// searches against the standard library, and the log-sum-exp merge of split-K partial states
// against the whole-row softmax.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "common/attention_tiles.h"

namespace {

namespace tiles = mor::kernels::tiles;
using tiles::Mask;

struct Layout {
  Mask mask;
  int len_q, len_k;
  std::vector<int32_t> q_pos, k_pos;  // kCausalPos only (empty vectors otherwise)

  bool visible(int i, int j) const { return tiles::visible(mask, i, j, q_pos.data(), k_pos.data()); }
  std::string describe() const {
    std::ostringstream os;
    os << (mask == Mask::kCausalIndex ? "index" : "pos") << " len_q=" << len_q << " len_k=" << len_k;
    if (mask == Mask::kCausalPos) {
      os << " q_pos=[";
      for (int32_t p : q_pos) os << p << ' ';
      os << "] k_pos=[";
      for (int32_t p : k_pos) os << p << ' ';
      os << ']';
    }
    return os.str();
  }
};

// Every property of key_range for the query tile [m0, m1), brute force over the tile.
void check_key_range(const Layout& l, int m0, int m1) {
  SCOPED_TRACE(l.describe() + " query tile [" + std::to_string(m0) + ", " + std::to_string(m1) + ")");
  const tiles::KeyRange r = tiles::key_range(l.mask, m0, m1, l.len_k, l.q_pos.data(), l.k_pos.data());
  ASSERT_LE(0, r.full);
  ASSERT_LE(r.full, r.end);
  ASSERT_LE(r.end, l.len_k);
  for (int j = 0; j < l.len_k; ++j) {
    bool any = false, all = true;
    for (int i = m0; i < m1; ++i) {
      any = any || l.visible(i, j);
      all = all && l.visible(i, j);
    }
    if (j < r.full) {
      EXPECT_TRUE(all) << "key " << j << " < full " << r.full << " is hidden from some query";
    }
    if (j >= r.end) {
      EXPECT_FALSE(any) << "key " << j << " >= end " << r.end << " is visible to some query";
    }
  }
  // Tight: the key at `full` is hidden from some query, the key before `end` visible to some.
  if (r.full < l.len_k) {
    bool all = true;
    for (int i = m0; i < m1; ++i) all = all && l.visible(i, r.full);
    EXPECT_FALSE(all) << "full " << r.full << " is not tight";
  }
  if (r.end > 0) {
    bool any = false;
    for (int i = m0; i < m1; ++i) any = any || l.visible(i, r.end - 1);
    EXPECT_TRUE(any) << "end " << r.end << " is not tight";
  }
}

// Every property of query_range for the key tile [n0, n1).
void check_query_range(const Layout& l, int n0, int n1) {
  SCOPED_TRACE(l.describe() + " key tile [" + std::to_string(n0) + ", " + std::to_string(n1) + ")");
  const tiles::QueryRange r = tiles::query_range(l.mask, n0, n1, l.len_q, l.q_pos.data(), l.k_pos.data());
  ASSERT_LE(0, r.begin);
  ASSERT_LE(r.begin, r.full);
  ASSERT_LE(r.full, l.len_q);
  for (int i = 0; i < l.len_q; ++i) {
    bool any = false, all = true;
    for (int j = n0; j < n1; ++j) {
      any = any || l.visible(i, j);
      all = all && l.visible(i, j);
    }
    if (i < r.begin) {
      EXPECT_FALSE(any) << "query " << i << " < begin " << r.begin << " sees a key of the tile";
    }
    if (i >= r.full) {
      EXPECT_TRUE(all) << "query " << i << " >= full " << r.full << " misses a key of the tile";
    }
  }
  // Tight: the query at `begin` sees some key of the tile, the one before `full` misses one.
  if (r.begin < l.len_q) {
    bool any = false;
    for (int j = n0; j < n1; ++j) any = any || l.visible(r.begin, j);
    EXPECT_TRUE(any) << "begin " << r.begin << " is not tight";
  }
  if (r.full > 0) {
    bool all = true;
    for (int j = n0; j < n1; ++j) all = all && l.visible(r.full - 1, j);
    EXPECT_FALSE(all) << "full " << r.full << " is not tight";
  }
}

// All tiles of a small layout (every m0 < m1), random tiles of a large one.
void check_layout(std::mt19937& rng, const Layout& l) {
  const bool exhaustive = l.len_q <= 12 && l.len_k <= 12;
  if (l.len_q > 0) {
    if (exhaustive) {
      for (int m0 = 0; m0 < l.len_q; ++m0)
        for (int m1 = m0 + 1; m1 <= l.len_q; ++m1) check_key_range(l, m0, m1);
    } else {
      for (int t = 0; t < 60; ++t) {
        const int m0 = std::uniform_int_distribution<int>(0, l.len_q - 1)(rng);
        const int m1 = std::uniform_int_distribution<int>(m0 + 1, l.len_q)(rng);
        check_key_range(l, m0, m1);
      }
    }
  }
  if (l.len_k > 0) {
    if (exhaustive) {
      for (int n0 = 0; n0 < l.len_k; ++n0)
        for (int n1 = n0 + 1; n1 <= l.len_k; ++n1) check_query_range(l, n0, n1);
    } else {
      for (int t = 0; t < 60; ++t) {
        const int n0 = std::uniform_int_distribution<int>(0, l.len_k - 1)(rng);
        const int n1 = std::uniform_int_distribution<int>(n0 + 1, l.len_k)(rng);
        check_query_range(l, n0, n1);
      }
    }
  }
}

TEST(Tiles, CausalIndexRangesMatchBruteForce) {
  std::mt19937 rng(11);
  for (int len_q : {1, 2, 3, 7, 12, 40, 130})
    for (int len_k : {0, 1, 2, 5, 12, 40, 130}) {
      check_layout(rng, Layout{Mask::kCausalIndex, len_q, len_k, {}, {}});
    }
  for (int len_k : {1, 4, 64}) check_layout(rng, Layout{Mask::kCausalIndex, 0, len_k, {}, {}});
}

TEST(Tiles, CausalPosRangesWithQueriesASubsetOfKeys) {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 40; ++trial) {
    const int len_k = trial < 4 ? 1 + trial % 2 : std::uniform_int_distribution<int>(1, trial < 30 ? 12 : 150)(rng);
    Layout l{Mask::kCausalPos, 0, len_k, {}, mor_test::ascending_positions(rng, len_k)};
    l.len_q = trial < 2 ? 1 : std::uniform_int_distribution<int>(1, len_k)(rng);
    l.q_pos = mor_test::random_subset(rng, l.k_pos, l.len_q);
    check_layout(rng, l);
    if (HasFailure()) return;
  }
}

TEST(Tiles, CausalPosRangesWithArbitraryAscendingQueries) {
  std::mt19937 rng(13);
  for (int trial = 0; trial < 60; ++trial) {
    const bool small = trial < 45;
    const int len_k = trial < 3 ? 1 : std::uniform_int_distribution<int>(0, small ? 12 : 150)(rng);
    const int len_q = trial < 3 ? 1 + trial : std::uniform_int_distribution<int>(0, small ? 12 : 150)(rng);
    if (len_q == 0 && len_k == 0) continue;
    Layout l{Mask::kCausalPos, len_q, len_k, {}, mor_test::ascending_positions(rng, len_k, 6)};
    const int32_t hi = len_k > 0 ? l.k_pos.back() + 3 : 10;
    // Queries may precede every key, follow every key, and repeat positions.
    l.q_pos = mor_test::arbitrary_ascending(rng, len_q, 0, hi);
    check_layout(rng, l);
    if (HasFailure()) return;
  }
}

TEST(Tiles, BinarySearchesMatchStandardLibrary) {
  std::mt19937 rng(14);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = trial % 17 == 0 ? 0 : std::uniform_int_distribution<int>(1, 40)(rng);
    std::vector<int32_t> a = mor_test::arbitrary_ascending(rng, n, -5, 30);  // with duplicates
    for (int32_t x = -8; x <= 33; ++x) {
      const int le = static_cast<int>(std::upper_bound(a.begin(), a.end(), x) - a.begin());
      const int lt = static_cast<int>(std::lower_bound(a.begin(), a.end(), x) - a.begin());
      ASSERT_EQ(tiles::count_le(a.data(), n, x), le) << "n=" << n << " x=" << x;
      ASSERT_EQ(tiles::count_lt(a.data(), n, x), lt) << "n=" << n << " x=" << x;
    }
  }
}

TEST(Tiles, NumChunksCoversEveryKeyOnce) {
  for (int chunk : {1, 16, 64, 512})
    for (int kv_len : {-1, 0, 1, 15, 16, 17, 63, 64, 65, 511, 512, 513, 1300}) {
      const int n = tiles::num_chunks(kv_len, chunk);
      if (kv_len <= 0) {
        EXPECT_EQ(n, 0);
        continue;
      }
      EXPECT_LT((n - 1) * chunk, kv_len) << "last chunk empty";
      EXPECT_GE(n * chunk, kv_len) << "keys left over";
    }
  EXPECT_EQ(tiles::ceil_div(0, 4), 0);
  EXPECT_EQ(tiles::ceil_div(9, 4), 3);
}

// Softmax state of scores s[b, e) with values v: normalised output and natural-log lse (float).
void chunk_state(const std::vector<double>& s, const std::vector<std::vector<double>>& v, int b, int e, int d,
                 float* o, float* lse) {
  double m = -mor_test::kInf;
  for (int j = b; j < e; ++j) m = std::max(m, s[j]);
  if (m == -mor_test::kInf) {  // no visible key in the chunk: o is never read
    *lse = -INFINITY;
    for (int x = 0; x < d; ++x) o[x] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  double z = 0;
  std::vector<double> acc(d, 0.0);
  for (int j = b; j < e; ++j) {
    if (s[j] == -mor_test::kInf) continue;
    const double w = std::exp(s[j] - m);
    z += w;
    for (int x = 0; x < d; ++x) acc[x] += w * v[j][x];
  }
  for (int x = 0; x < d; ++x) o[x] = static_cast<float>(acc[x] / z);
  *lse = static_cast<float>(m + std::log(z));
}

TEST(Tiles, MergePartialsEqualsWholeRowSoftmax) {
  std::mt19937 rng(15);
  std::normal_distribution<double> normal(0.0, 3.0);
  for (int trial = 0; trial < 200; ++trial) {
    const int len = std::uniform_int_distribution<int>(1, 300)(rng);
    const int d = std::uniform_int_distribution<int>(1, 9)(rng);
    std::vector<double> s(len);
    std::vector<std::vector<double>> v(len, std::vector<double>(d));
    for (int j = 0; j < len; ++j) {
      s[j] = normal(rng) + (trial % 5 == 0 ? 40.0 : 0.0);  // also large scores
      for (int x = 0; x < d; ++x) v[j][x] = normal(rng);
    }
    // Mask out whole random spans (so some chunks have no visible key) but keep one key.
    if (trial % 2 == 1) {
      const int b = std::uniform_int_distribution<int>(0, len - 1)(rng);
      const int e = std::uniform_int_distribution<int>(b, len)(rng);
      for (int j = b; j < e; ++j) s[j] = -mor_test::kInf;
      if (std::all_of(s.begin(), s.end(), [](double x) { return x == -mor_test::kInf; })) s[0] = 0.5;
    }
    // Random chunk boundaries.
    std::vector<int> cuts{0};
    while (cuts.back() < len) cuts.push_back(std::min(len, cuts.back() + std::uniform_int_distribution<int>(1, 40)(rng)));
    const int n = static_cast<int>(cuts.size()) - 1;
    const int stride = d + 3;  // o rows padded: the merge must honour o_stride
    std::vector<float> lse(n), o(static_cast<size_t>(n) * stride, 1e30f);
    for (int c = 0; c < n; ++c) chunk_state(s, v, cuts[c], cuts[c + 1], d, &o[c * stride], &lse[c]);
    std::vector<float> out(d, std::numeric_limits<float>::quiet_NaN());
    float merged_lse = 0;
    tiles::merge_partials(n, lse.data(), o.data(), stride, d, out.data(), &merged_lse);

    std::vector<float> whole(d);
    float whole_lse = 0;
    chunk_state(s, v, 0, len, d, whole.data(), &whole_lse);
    ASSERT_NEAR(merged_lse, whole_lse, 1e-5 * std::max(1.0f, std::fabs(whole_lse))) << "trial " << trial;
    for (int x = 0; x < d; ++x) {
      ASSERT_NEAR(out[x], whole[x], 1e-5 * std::max(1.0f, std::fabs(whole[x]))) << "trial " << trial << " x " << x;
    }
  }
}

TEST(Tiles, MergePartialsWithoutKeysGivesZerosAndMinusInfinity) {
  float out[4] = {NAN, NAN, NAN, NAN};
  float lse = 0;
  tiles::merge_partials(0, nullptr, nullptr, 4, 4, out, &lse);
  EXPECT_TRUE(std::isinf(lse) && lse < 0);
  for (float x : out) EXPECT_EQ(x, 0.f);

  const float lses[3] = {-INFINITY, -INFINITY, -INFINITY};
  const float o[12] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
  float out2[4] = {NAN, NAN, NAN, NAN};
  lse = 0;
  tiles::merge_partials(3, lses, o, 4, 4, out2, &lse);
  EXPECT_TRUE(std::isinf(lse) && lse < 0);
  for (float x : out2) EXPECT_EQ(x, 0.f);

  // One live chunk among dead ones with NaN outputs: exactly that chunk.
  const float lses3[3] = {-INFINITY, 1.25f, -INFINITY};
  const float o3[6] = {NAN, NAN, 0.5f, -2.f, NAN, NAN};
  float out3[2] = {NAN, NAN};
  tiles::merge_partials(3, lses3, o3, 2, 2, out3, &lse);
  EXPECT_FLOAT_EQ(lse, 1.25f);
  EXPECT_FLOAT_EQ(out3[0], 0.5f);
  EXPECT_FLOAT_EQ(out3[1], -2.f);
}

}  // namespace
