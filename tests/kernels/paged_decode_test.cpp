// paged_decode: the float64 ATen reference against naive loops over shuffled block tables and
// against varlen_attention_fwd_ref on the equivalent contiguous keys (CPU, always); the CUDA kernel
// against the reference with FA-style tolerances (skipped without CUDA kernels or a GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

namespace {

using mor::kernels::paged_decode_ref;
using mor::kernels::PagedDecodeOut;
using mor_test::f64;
using mor_test::kInf;

// A paged cache: every row's keys k_pad[r, :len] / v_pad[r, :len] scattered into a shared pool of
// shuffled blocks. Some rows share their leading full blocks with an earlier row (prefix sharing);
// unused pool slots hold large garbage and unused block-table entries name blocks outside the pool.
struct Paged {
  std::vector<int> lens;
  at::Tensor q, k_pool, v_pool, block_table, kv_len;  // block_table/kv_len int32 on q's device
  at::Tensor k_pad, v_pad;                            // [R, max(1, max len), Hkv, D]
  int64_t block_size = 0;
};

Paged make_paged(std::mt19937& rng, const std::vector<int>& lens, int64_t block_size, int64_t hq, int64_t hkv,
                 int64_t d, const at::TensorOptions& opts) {
  Paged p;
  p.lens = lens;
  p.block_size = block_size;
  const int64_t rows = static_cast<int64_t>(lens.size());
  const int64_t max_len = std::max<int64_t>(1, *std::max_element(lens.begin(), lens.end()));
  p.q = at::randn({rows, hq, d}, opts);
  p.k_pad = at::randn({rows, max_len, hkv, d}, opts);
  p.v_pad = at::randn({rows, max_len, hkv, d}, opts);
  std::vector<int64_t> blocks_of(rows), shared_with(rows, -1), shared_blocks(rows, 0);
  int64_t unique = 0, max_blocks = 1;
  for (int64_t r = 0; r < rows; ++r) {
    blocks_of[r] = (lens[r] + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks_of[r]);
    for (int64_t o = 0; o < r && r % 3 == 2; ++o) {  // every third row shares a prefix if it can
      const int64_t full = std::min(lens[o], lens[r]) / block_size / 2;
      if (full > 0) {
        shared_with[r] = o;
        shared_blocks[r] = full;
        p.k_pad[r].narrow(0, 0, full * block_size).copy_(p.k_pad[o].narrow(0, 0, full * block_size));
        p.v_pad[r].narrow(0, 0, full * block_size).copy_(p.v_pad[o].narrow(0, 0, full * block_size));
        break;
      }
    }
    unique += blocks_of[r] - shared_blocks[r];
  }
  const int64_t num_blocks = unique + 5;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int64_t cols = max_blocks + 2;
  std::vector<int32_t> table(rows * cols, static_cast<int32_t>(num_blocks + 1000));
  int64_t next = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks_of[r]; ++b)
      table[r * cols + b] = b < shared_blocks[r] ? table[shared_with[r] * cols + b] : perm[next++];
  p.k_pool = at::randn({num_blocks, block_size, hkv, d}, opts).mul_(100);
  p.v_pool = at::randn({num_blocks, block_size, hkv, d}, opts).mul_(100);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks_of[r]; ++b) {
      const int64_t n = std::min<int64_t>(block_size, lens[r] - b * block_size);
      const int64_t blk = table[r * cols + b];
      p.k_pool[blk].narrow(0, 0, n).copy_(p.k_pad[r].narrow(0, b * block_size, n));
      p.v_pool[blk].narrow(0, 0, n).copy_(p.v_pad[r].narrow(0, b * block_size, n));
    }
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  p.block_table = at::tensor(at::ArrayRef<int32_t>(table), i32).view({rows, cols}).to(opts.device());
  p.kv_len = at::tensor(at::ArrayRef<int>(lens), i32).to(opts.device());
  return p;
}

// Naive float64 loops through the block table.
PagedDecodeOut naive_paged(const Paged& p, double scale) {
  const int64_t rows = p.q.size(0), hq = p.q.size(1), d = p.q.size(2), group = hq / p.k_pool.size(2);
  PagedDecodeOut r;
  r.out = at::zeros({rows, hq, d}, f64());
  r.lse = at::full({rows, hq}, -kInf, f64());
  auto qa = p.q.accessor<double, 3>();
  auto ka = p.k_pool.accessor<double, 4>(), va = p.v_pool.accessor<double, 4>();
  auto bt = p.block_table.accessor<int32_t, 2>();
  auto oa = r.out.accessor<double, 3>();
  auto la = r.lse.accessor<double, 2>();
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t h = 0; h < hq; ++h) {
      const int len = p.lens[row];
      if (len == 0) continue;
      std::vector<double> s(len);
      double mx = -kInf;
      for (int t = 0; t < len; ++t) {
        const int blk = bt[row][t / p.block_size], off = static_cast<int>(t % p.block_size);
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += qa[row][h][c] * ka[blk][off][h / group][c];
        s[t] = dot * scale;
        mx = std::max(mx, s[t]);
      }
      double z = 0;
      for (double x : s) z += std::exp(x - mx);
      for (int t = 0; t < len; ++t) {
        const int blk = bt[row][t / p.block_size], off = static_cast<int>(t % p.block_size);
        const double w = std::exp(s[t] - mx) / z;
        for (int64_t c = 0; c < d; ++c) oa[row][h][c] += w * va[blk][off][h / group][c];
      }
      la[row][h] = mx + std::log(z);
    }
  return r;
}

TEST(PagedDecodeRef, MatchesNaiveLoopsOverShuffledBlockTables) {
  std::mt19937 rng(41);
  at::manual_seed(41);
  for (int64_t bs : {4, 16})
    for (auto [hq, hkv, d] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{6, 2, 8}, {4, 4, 8}, {15, 5, 16}}) {
      SCOPED_TRACE("block_size=" + std::to_string(bs) + " Hq=" + std::to_string(hq) + " Hkv=" + std::to_string(hkv));
      std::vector<int> lens = {0, 1, static_cast<int>(bs), static_cast<int>(2 * bs), static_cast<int>(bs + 1), 3, 0,
                               static_cast<int>(3 * bs - 1), 50, 37, 50};
      std::shuffle(lens.begin(), lens.end(), rng);
      const Paged p = make_paged(rng, lens, bs, hq, hkv, d, f64());
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      const PagedDecodeOut got = paged_decode_ref(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, scale);
      const PagedDecodeOut want = naive_paged(p, scale);
      ASSERT_EQ(got.out.sizes(), p.q.sizes());
      ASSERT_EQ(got.lse.sizes(), (at::IntArrayRef{p.q.size(0), hq}));
      ASSERT_EQ(got.lse.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::allclose(got.out, want.out, 1e-12, 1e-12)) << (got.out - want.out).abs().max().item<double>();
      EXPECT_TRUE(at::equal(got.lse.isneginf(), want.lse.isneginf()));
      EXPECT_TRUE(at::allclose(got.lse.to(at::kDouble), want.lse, 1e-6, 1e-6));
      for (size_t r = 0; r < lens.size(); ++r) {
        if (lens[r] == 0) {
          EXPECT_TRUE(got.out[r].eq(0).all().item<bool>()) << "row " << r;
        }
      }
      EXPECT_FALSE(got.out.isnan().any().item<bool>());
    }
}

TEST(PagedDecodeRef, EqualsVarlenLastQueryRowOnContiguousKeys) {
  std::mt19937 rng(42);
  at::manual_seed(42);
  const int64_t hq = 6, hkv = 3, d = 8, bs = 4;
  const std::vector<int> lens = {5, 0, 1, 12, 8, 3};
  const Paged p = make_paged(rng, lens, bs, hq, hkv, d, f64());
  const double scale = 0.37;
  const PagedDecodeOut paged = paged_decode_ref(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, scale);

  // Row r as a kCausalIndex segment of lens[r] queries over its contiguous keys, whose last query
  // row is the decode query (it sees every key).
  mor_test::Segments seg(mor::kernels::Mask::kCausalIndex);
  std::vector<at::Tensor> qs, ks, vs;
  for (size_t r = 0; r < lens.size(); ++r) {
    seg.add_index(lens[r], lens[r]);
    if (lens[r] == 0) continue;
    at::Tensor qr = at::randn({lens[r], hq, d}, f64());
    qr[lens[r] - 1].copy_(p.q[r]);
    qs.push_back(qr);
    ks.push_back(p.k_pad[r].narrow(0, 0, lens[r]));
    vs.push_back(p.v_pad[r].narrow(0, 0, lens[r]));
  }
  const mor::kernels::VarlenOut varlen =
      mor::kernels::varlen_attention_fwd_ref(at::cat(qs), at::cat(ks), at::cat(vs), seg.args(at::kCPU, scale));
  for (size_t r = 0; r < lens.size(); ++r) {
    SCOPED_TRACE("row " + std::to_string(r));
    if (lens[r] == 0) {
      EXPECT_TRUE(paged.out[r].eq(0).all().item<bool>());
      EXPECT_TRUE(paged.lse[r].isneginf().all().item<bool>());
      continue;
    }
    const int64_t last = seg.cu_q[r + 1] - 1;
    EXPECT_TRUE(at::allclose(paged.out[r], varlen.out[last], 1e-12, 1e-12));
    EXPECT_TRUE(at::allclose(paged.lse[r], varlen.lse.select(1, last), 1e-6, 1e-6));
  }
}

TEST(PagedDecodeRef, DtypesAndInvalidArguments) {
  std::mt19937 rng(43);
  at::manual_seed(43);
  const Paged p = make_paged(rng, {3, 9, 0}, 4, 4, 2, 8, f64());
  for (auto dtype : {at::kFloat, at::kHalf}) {
    const PagedDecodeOut r = paged_decode_ref(p.q.to(dtype), p.k_pool.to(dtype), p.v_pool.to(dtype), p.block_table,
                                              p.kv_len, 0.5);
    EXPECT_EQ(r.out.scalar_type(), dtype);
    EXPECT_EQ(r.lse.scalar_type(), at::kFloat);
  }
  // All rows empty: zeros and -inf without touching the pool.
  const PagedDecodeOut empty = paged_decode_ref(p.q, p.k_pool.narrow(0, 0, 0), p.v_pool.narrow(0, 0, 0),
                                                p.block_table, at::zeros({3}, at::kInt), 0.5);
  EXPECT_TRUE(empty.out.eq(0).all().item<bool>());
  EXPECT_TRUE(empty.lse.isneginf().all().item<bool>());

  // Each bad argument is reported by the check meant for it (message fragment).
  auto expect_error = [&](const at::Tensor& q, const at::Tensor& v_pool, const at::Tensor& bt,
                          const at::Tensor& kv_len, const char* fragment) {
    try {
      paged_decode_ref(q, p.k_pool, v_pool, bt, kv_len, 0.5);
      ADD_FAILURE() << "no error; expected one mentioning \"" << fragment << "\"";
    } catch (const mor::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  EXPECT_NO_THROW(paged_decode_ref(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, 0.5));
  const int capacity = static_cast<int>(p.block_table.size(1) * 4);
  expect_error(p.q, p.v_pool, p.block_table, at::tensor({3, capacity + 1, 0}, at::kInt), "but the block table holds");
  expect_error(p.q, p.v_pool, p.block_table, at::tensor({3, -1, 0}, at::kInt), "kv_len must not be negative");
  expect_error(p.q, p.v_pool, p.block_table, p.kv_len.to(at::kLong), "kv_len must be int32");
  expect_error(p.q, p.v_pool, p.block_table.to(at::kLong), p.kv_len, "block_table must be int32");
  expect_error(p.q, p.v_pool, p.block_table.narrow(0, 0, 2), p.kv_len, "block_table must be [R = 3");
  // A row reaching into its unused block-table entries (which name blocks outside the pool).
  expect_error(p.q, p.v_pool, p.block_table, at::tensor({3, 9, 1}, at::kInt), "outside the pool");
  expect_error(p.q, p.v_pool.to(at::kFloat), p.block_table, p.kv_len, "must share a dtype");
  expect_error(p.q.narrow(1, 0, 3), p.v_pool, p.block_table, p.kv_len, "must be a multiple of Hkv");
}

TEST(PagedDecodeCuda, EntryPointsRejectCpuTensors) {
  std::mt19937 rng(44);
  const Paged p = make_paged(rng, {3, 9}, 16, 4, 2, 64, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_FALSE(mor::kernels::paged_decode_cuda_supports(p.q, p.k_pool));
  EXPECT_THROW(mor::kernels::paged_decode_cuda(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, 9, 0.125),
               mor::Error);
}

// --- GPU ----------------------------------------------------------------------------------------

TEST(PagedDecodeCuda, MatchesReferenceWithSplitKMerges) {
  std::string why;
  if (!mor_test::gpu_available(&why)) GTEST_SKIP() << why;
  std::mt19937 rng(51);
  at::manual_seed(51);
  const at::Device dev(at::kCUDA);
  const int64_t bs = 16;
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (int64_t d : {64, 128})
      for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {15, 5}, {8, 2}}) {
        std::vector<int> lens = {0, 1, 15, 16, 17, 500, 1300, 0, 1, 15, 16, 17, 500, 1300};
        std::shuffle(lens.begin(), lens.end(), rng);
        const auto opts = at::TensorOptions().dtype(dtype).device(dev);
        const Paged p = make_paged(rng, lens, bs, hq, hkv, d, opts);
        const int64_t rows = static_cast<int64_t>(lens.size()), max_len = p.k_pad.size(1);
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        ASSERT_TRUE(mor::kernels::paged_decode_cuda_supports(p.q, p.k_pool));

        const PagedDecodeOut ref = paged_decode_ref(p.q.to(at::kDouble), p.k_pool.to(at::kDouble),
                                                    p.v_pool.to(at::kDouble), p.block_table, p.kv_len, scale);
        // Emulation on the contiguous keys: [R, Hq, 1, D] queries over [R, Hq, L, D] keys.
        const at::Tensor qh = p.q.to(at::kFloat).unsqueeze(2);
        const at::Tensor kh = p.k_pad.to(at::kFloat).permute({0, 2, 1, 3}).repeat_interleave(hq / hkv, 1);
        const at::Tensor vh = p.v_pad.to(at::kFloat).permute({0, 2, 1, 3}).repeat_interleave(hq / hkv, 1);
        const at::Tensor mask = (at::arange(max_len, at::TensorOptions().dtype(at::kInt).device(dev)).unsqueeze(0) <
                                 p.kv_len.unsqueeze(1))
                                    .view({rows, 1, 1, max_len});
        const mor_test::EmulFwd emul = mor_test::emulate_fwd(qh, kh, vh, mask, scale, dtype);

        // Chunks of 64 and 512 keys (multi-chunk merges), and one larger than every row; the
        // bound max_kv_len is exact or loose.
        for (auto [chunk, bound] : std::vector<std::pair<int64_t, int64_t>>{{64, 1300}, {512, 1337}, {2048, 1300}}) {
          std::ostringstream name;
          name << dtype << " D=" << d << " Hq=" << hq << " Hkv=" << hkv << " chunk=" << chunk << " max_kv_len=" << bound;
          SCOPED_TRACE(name.str());
          PagedDecodeOut got, again;
          {
            mor_test::PoisonScope poison;
            got = mor::kernels::paged_decode_cuda(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, bound, scale, chunk);
            again = mor::kernels::paged_decode_cuda(p.q, p.k_pool, p.v_pool, p.block_table, p.kv_len, bound, scale,
                                                    chunk);
          }
          ASSERT_EQ(got.out.sizes(), p.q.sizes());
          ASSERT_EQ(got.out.scalar_type(), dtype);
          ASSERT_EQ(got.lse.sizes(), (at::IntArrayRef{rows, hq}));
          ASSERT_EQ(got.lse.scalar_type(), at::kFloat);
          EXPECT_TRUE(at::equal(got.out, again.out)) << "not deterministic";
          EXPECT_TRUE(mor_test::fa_close("out", got.out, emul.out.squeeze(2), ref.out, dtype));
          EXPECT_TRUE(mor_test::lse_close("lse", got.lse, emul.lse.squeeze(2), ref.lse));
          if (HasFailure()) return;
        }
      }
}

TEST(PagedDecodeCuda, UnsupportedInputsAreRejected) {
  std::string why;
  if (!mor_test::gpu_available(&why)) GTEST_SKIP() << why;
  std::mt19937 rng(52);
  const at::Device dev(at::kCUDA);
  const Paged f32 = make_paged(rng, {3, 9}, 16, 4, 2, 64, at::TensorOptions().dtype(at::kFloat).device(dev));
  EXPECT_FALSE(mor::kernels::paged_decode_cuda_supports(f32.q, f32.k_pool));
  EXPECT_THROW(mor::kernels::paged_decode_cuda(f32.q, f32.k_pool, f32.v_pool, f32.block_table, f32.kv_len, 9, 0.1),
               mor::Error);
  const Paged d96 = make_paged(rng, {3, 9}, 16, 4, 2, 96, at::TensorOptions().dtype(at::kHalf).device(dev));
  EXPECT_FALSE(mor::kernels::paged_decode_cuda_supports(d96.q, d96.k_pool));
  const Paged ok = make_paged(rng, {3, 9}, 16, 4, 2, 128, at::TensorOptions().dtype(at::kHalf).device(dev));
  EXPECT_TRUE(mor::kernels::paged_decode_cuda_supports(ok.q, ok.k_pool));
}

}  // namespace
