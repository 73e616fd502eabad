// The CUDA kernels' device code run on the CPU under the emulated execution model (cuda_emu.h,
// through emu_kernels.cpp) and compared with the float64 references with the FA-style tolerance of
// the GPU tests. Catches indexing, masking, tiling, barrier-placement and uninitialised shared-memory
// bugs without a GPU; it cannot catch memory-model races, real warp-divergence effects or
// performance problems (see cuda_emu.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "emu/emu_kernels.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

namespace {

using mor::kernels::Mask;
using mor_test::Segments;

mor_emu_run::Dtype emu_dtype(at::ScalarType st) {
  return st == at::kBFloat16 ? mor_emu_run::Dtype::kBF16 : mor_emu_run::Dtype::kF16;
}

// Emulator diagnostics since the last call: none expected.
void expect_clean_emulation() {
  for (const auto& e : mor_emu_run::take_errors()) ADD_FAILURE() << "emulator: " << e;
  EXPECT_EQ(mor_emu_run::take_partial_barriers(), 0) << "barriers completed after some threads had exited";
}

// Segment lengths 0, 1, 17, 64, 65, 130 in random order. kCausalIndex: square segments plus one
// with fewer and one with more keys than queries. kCausalPos: queries a random subset of up to
// twice as many keys, a segment whose queries all precede every key, one with queries but no key
// and one with keys but no query.
Segments emu_segments(Mask mask, std::mt19937& rng, bool large = false) {
  std::vector<int> lens = {0, 1, 17, 64, 65, 130};
  if (large) lens = {0, 1, 2, 63, 64, 65, 127, 129, 300};
  std::shuffle(lens.begin(), lens.end(), rng);
  Segments seg(mask);
  for (int len : lens) {
    if (mask == Mask::kCausalIndex) {
      seg.add_index(len, len);
      continue;
    }
    const int extra = std::uniform_int_distribution<int>(0, std::max(1, len))(rng);
    const auto kp = mor_test::ascending_positions(rng, len + extra);
    seg.add_pos(mor_test::random_subset(rng, kp, len), kp);
  }
  if (mask == Mask::kCausalIndex) {
    seg.add_index(70, 40);
    seg.add_index(20, 70);
  } else {
    auto kp = mor_test::ascending_positions(rng, 40);
    for (auto& p : kp) p += 100;
    seg.add_pos(mor_test::ascending_positions(rng, 20), kp);  // every query precedes every key
    seg.add_pos(mor_test::ascending_positions(rng, 5), {});
    seg.add_pos({}, mor_test::ascending_positions(rng, 9));
    auto k2 = mor_test::ascending_positions(rng, 80);
    for (auto& p : k2) p += 30;
    std::vector<int32_t> range(k2.back() + 3);
    std::iota(range.begin(), range.end(), 0);
    seg.add_pos(mor_test::random_subset(rng, range, 70), k2);  // some queries before every key
  }
  return seg;
}

struct VarlenCase {
  at::ScalarType dtype;
  int64_t d, hq, hkv;
  Mask mask;
  bool fused;  // q/k/v strided views of one [T, Hq + 2 Hkv, D] projection
  int schedule;
  int64_t slack = 0;  // added to max_q / max_k (loose upper bounds: whole blocks with nothing to do)
};

std::string describe(const VarlenCase& c) {
  std::ostringstream os;
  os << c.dtype << " D=" << c.d << " Hq=" << c.hq << " Hkv=" << c.hkv
     << (c.mask == Mask::kCausalIndex ? " kCausalIndex" : " kCausalPos") << (c.fused ? " fused" : "")
     << " schedule=" << c.schedule << " slack=" << c.slack;
  return os.str();
}

void run_varlen_case(const VarlenCase& c, uint32_t seed, bool large = false) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const Segments seg = emu_segments(c.mask, rng, large);
  const int64_t tq = seg.total_q(), tk = seg.total_k();
  const auto opts = at::TensorOptions().dtype(c.dtype);
  at::Tensor q, k, v;
  if (c.fused) {
    const at::Tensor qkv = at::randn({std::max(tq, tk), c.hq + 2 * c.hkv, c.d}, opts);
    q = qkv.narrow(0, 0, tq).narrow(1, 0, c.hq);
    k = qkv.narrow(0, 0, tk).narrow(1, c.hq, c.hkv);
    v = qkv.narrow(0, 0, tk).narrow(1, c.hq + c.hkv, c.hkv);
  } else {
    q = at::randn({tq, c.hq, c.d}, opts);
    k = at::randn({tk, c.hkv, c.d}, opts);
    v = at::randn({tk, c.hkv, c.d}, opts);
  }
  const at::Tensor dout = at::randn({tq, c.hq, c.d}, opts);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const mor::kernels::VarlenArgs args = seg.args(at::Device(at::kCPU), scale);

  mor_emu_run::VarlenIn in;
  in.dtype = emu_dtype(c.dtype);
  in.d = static_cast<int>(c.d);
  in.mask = static_cast<int>(c.mask);
  in.q = q.data_ptr();
  in.k = k.data_ptr();
  in.v = v.data_ptr();
  in.q_s0 = q.stride(0);
  in.q_s1 = q.stride(1);
  in.k_s0 = k.stride(0);
  in.k_s1 = k.stride(1);
  in.v_s0 = v.stride(0);
  in.v_s1 = v.stride(1);
  in.cu_q = args.cu_q.data_ptr<int32_t>();
  in.cu_k = args.cu_k.data_ptr<int32_t>();
  if (c.mask == Mask::kCausalPos) {
    in.q_pos = args.q_pos.data_ptr<int32_t>();
    in.k_pos = args.k_pos.data_ptr<int32_t>();
  }
  in.segments = seg.segments();
  in.total_q = tq;
  in.total_k = tk;
  in.max_q = seg.max_q + c.slack;
  in.max_k = seg.max_k + c.slack;
  in.hq = static_cast<int>(c.hq);
  in.hkv = static_cast<int>(c.hkv);
  in.scale = scale;

  mor_emu_run::set_schedule(c.schedule);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor out = at::full({tq, c.hq, c.d}, NAN, opts), lse = at::full({c.hq, tq}, NAN, f32);
  mor_emu_run::varlen_fwd(in, out.data_ptr(), lse.data_ptr<float>());
  expect_clean_emulation();

  at::Tensor dq = at::full({tq, c.hq, c.d}, NAN, opts), dk = at::full({tk, c.hkv, c.d}, NAN, opts);
  at::Tensor dv = at::full({tk, c.hkv, c.d}, NAN, opts);
  at::Tensor dq_accum = at::full({tq, c.hq, c.d}, NAN, f32), dsum = at::full({c.hq, tq}, NAN, f32);
  mor_emu_run::varlen_bwd(in, dout.data_ptr(), dout.stride(0), dout.stride(1), out.data_ptr(), out.stride(0),
                          out.stride(1), lse.data_ptr<float>(), dsum.data_ptr<float>(), dq_accum.data_ptr<float>(),
                          dq.data_ptr(), dk.data_ptr(), dv.data_ptr());
  expect_clean_emulation();

  const at::Tensor q64 = q.to(at::kDouble), k64 = k.to(at::kDouble), v64 = v.to(at::kDouble);
  const auto ref = mor::kernels::varlen_attention_fwd_ref(q64, k64, v64, args);
  const auto ref_g =
      mor::kernels::varlen_attention_bwd_ref(dout.to(at::kDouble), q64, k64, v64, ref.out, ref.lse, args);
  const int64_t group = c.hq / c.hkv;
  const at::Tensor mask = seg.dense_mask();
  const at::Tensor qh = mor_test::heads_first_f32(q, 1), kh = mor_test::heads_first_f32(k, group);
  const at::Tensor vh = mor_test::heads_first_f32(v, group), doh = mor_test::heads_first_f32(dout, 1);
  const mor_test::EmulFwd emul = mor_test::emulate_fwd(qh, kh, vh, mask, scale, c.dtype);
  const mor_test::EmulGrads eg = mor_test::emulate_bwd(doh, qh, kh, vh, emul, mask, scale, c.dtype);
  EXPECT_TRUE(mor_test::fa_close("out", out, emul.out[0].permute({1, 0, 2}), ref.out, c.dtype));
  EXPECT_TRUE(mor_test::lse_close("lse", lse, emul.lse[0], ref.lse));
  EXPECT_TRUE(mor_test::fa_close("dq", dq, eg.dq[0].permute({1, 0, 2}), ref_g.dq, c.dtype));
  EXPECT_TRUE(mor_test::fa_close("dk", dk, mor_test::group_sum(eg.dkh, c.hkv, c.dtype), ref_g.dk, c.dtype));
  EXPECT_TRUE(mor_test::fa_close("dv", dv, mor_test::group_sum(eg.dvh, c.hkv, c.dtype), ref_g.dv, c.dtype));
}

TEST(KernelEmu, VarlenAttentionIndexMask) {
  run_varlen_case({at::kBFloat16, 64, 3, 1, Mask::kCausalIndex, /*fused=*/true, /*schedule=*/3}, 101);
  run_varlen_case({at::kHalf, 128, 6, 2, Mask::kCausalIndex, false, 1}, 102);
}

TEST(KernelEmu, VarlenAttentionPosMask) {
  run_varlen_case({at::kHalf, 64, 6, 2, Mask::kCausalPos, false, 4}, 103);
  run_varlen_case({at::kBFloat16, 128, 3, 1, Mask::kCausalPos, false, 1, /*slack=*/70}, 104);
}

// The shapes of the GPU tests (segment lengths up to 300, Hq 15 / Hkv 5) under all five fiber
// schedules: minutes on a CPU, so only with MOR_EMU_STRESS=1 in the environment.
bool stress_enabled() {
  const char* e = std::getenv("MOR_EMU_STRESS");
  return e != nullptr && std::string(e) == "1";
}

TEST(KernelEmu, VarlenAttentionStress) {
  if (!stress_enabled()) GTEST_SKIP() << "set MOR_EMU_STRESS=1";
  uint32_t seed = 300;
  for (int schedule : {0, 1, 2, 3, 4})
    for (auto dtype : {at::kBFloat16, at::kHalf})
      for (Mask mask : {Mask::kCausalIndex, Mask::kCausalPos}) {
        const int64_t d = (seed % 2 == 0) ? 64 : 128;
        run_varlen_case({dtype, d, 15, 5, mask, mask == Mask::kCausalIndex, schedule, 0}, seed++, true);
      }
}

// --- paged decode ------------------------------------------------------------------------------

struct PagedCase {
  at::ScalarType dtype;
  int64_t d, hq, hkv, chunk, max_kv_len;
  int schedule;
};

void run_paged_case(const PagedCase& c, uint32_t seed, std::vector<int> lens = {0, 1, 17, 200, 16, 33}) {
  std::ostringstream name;
  name << c.dtype << " D=" << c.d << " Hq=" << c.hq << " Hkv=" << c.hkv << " chunk=" << c.chunk
       << " max_kv_len=" << c.max_kv_len << " schedule=" << c.schedule;
  SCOPED_TRACE(name.str());
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  std::shuffle(lens.begin(), lens.end(), rng);
  const int64_t bs = 16, rows = static_cast<int64_t>(lens.size());
  const auto opts = at::TensorOptions().dtype(c.dtype);
  const int64_t max_len = *std::max_element(lens.begin(), lens.end());
  // Keys of each row laid out contiguously (for the emulation) and scattered over shuffled blocks.
  const at::Tensor k_pad = at::randn({rows, max_len, c.hkv, c.d}, opts);
  const at::Tensor v_pad = at::randn({rows, max_len, c.hkv, c.d}, opts);
  const at::Tensor q = at::randn({rows, c.hq, c.d}, opts);
  int64_t total_blocks = 0, max_blocks = 1;
  for (int len : lens) {
    total_blocks += (len + bs - 1) / bs;
    max_blocks = std::max<int64_t>(max_blocks, (len + bs - 1) / bs);
  }
  const int64_t num_blocks = total_blocks + 3, cols = max_blocks + 1;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(rows * cols, static_cast<int32_t>(num_blocks + 1000));  // unused entries: outside
  at::Tensor k_pool = at::randn({num_blocks, bs, c.hkv, c.d}, opts).mul_(100);
  at::Tensor v_pool = at::randn({num_blocks, bs, c.hkv, c.d}, opts).mul_(100);
  int64_t next = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b * bs < lens[r]; ++b) {
      const int32_t blk = perm[next++];
      table[r * cols + b] = blk;
      const int64_t n = std::min<int64_t>(bs, lens[r] - b * bs);
      k_pool[blk].narrow(0, 0, n).copy_(k_pad[r].narrow(0, b * bs, n));
      v_pool[blk].narrow(0, 0, n).copy_(v_pad[r].narrow(0, b * bs, n));
    }
  const at::Tensor block_table = at::tensor(at::ArrayRef<int32_t>(table), at::kInt).view({rows, cols});
  const at::Tensor kv_len = at::tensor(at::ArrayRef<int>(lens), at::kInt);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));

  mor_emu_run::PagedIn in;
  in.dtype = emu_dtype(c.dtype);
  in.d = static_cast<int>(c.d);
  in.q = q.data_ptr();
  in.q_stride_r = q.stride(0);
  in.q_stride_h = q.stride(1);
  in.k = k_pool.data_ptr();
  in.v = v_pool.data_ptr();
  in.block_table = block_table.data_ptr<int32_t>();
  in.kv_len = kv_len.data_ptr<int32_t>();
  in.rows = rows;
  in.max_blocks = cols;
  in.block_size = bs;
  in.hkv = c.hkv;
  in.hq = c.hq;
  in.max_kv_len = c.max_kv_len;
  in.chunk = c.chunk;
  in.scale = scale;
  mor_emu_run::set_schedule(c.schedule);
  at::Tensor out = at::full({rows, c.hq, c.d}, NAN, opts);
  at::Tensor lse = at::full({rows, c.hq}, NAN, at::TensorOptions().dtype(at::kFloat));
  const int n_chunks = mor_emu_run::paged_decode(in, out.data_ptr(), lse.data_ptr<float>());
  expect_clean_emulation();
  if (c.chunk < max_len) {
    EXPECT_GT(n_chunks, 1);
  } else {
    EXPECT_EQ(n_chunks, 1);
  }

  const auto ref = mor::kernels::paged_decode_ref(q.to(at::kDouble), k_pool.to(at::kDouble),
                                                  v_pool.to(at::kDouble), block_table, kv_len, scale);
  const at::Tensor qh = q.to(at::kFloat).unsqueeze(2);
  const at::Tensor kh = k_pad.to(at::kFloat).permute({0, 2, 1, 3}).repeat_interleave(c.hq / c.hkv, 1);
  const at::Tensor vh = v_pad.to(at::kFloat).permute({0, 2, 1, 3}).repeat_interleave(c.hq / c.hkv, 1);
  const at::Tensor mask =
      (at::arange(max_len, at::TensorOptions().dtype(at::kInt)).unsqueeze(0) < kv_len.unsqueeze(1))
          .view({rows, 1, 1, max_len});
  const mor_test::EmulFwd emul = mor_test::emulate_fwd(qh, kh, vh, mask, scale, c.dtype);
  EXPECT_TRUE(mor_test::fa_close("out", out, emul.out.squeeze(2), ref.out, c.dtype));
  EXPECT_TRUE(mor_test::lse_close("lse", lse, emul.lse.squeeze(2), ref.lse));
}

TEST(KernelEmu, PagedDecodeSplitKAndSingleChunk) {
  // Hq 3 / Hkv 1: one partial head tile (G 3 < GT 4); Hq 6 / Hkv 1 with D 128: two head tiles
  // (GT 4, then 2); Hq 4 / Hkv 4: G 1. Chunk 64: multi-chunk merges; 512: a single chunk.
  run_paged_case({at::kBFloat16, 64, 3, 1, 64, 200, 3}, 201);
  run_paged_case({at::kBFloat16, 64, 3, 1, 512, 200, 4}, 202);
  run_paged_case({at::kHalf, 128, 6, 1, 64, 237, 2}, 203);
  run_paged_case({at::kHalf, 128, 6, 1, 512, 200, 0}, 204);
  run_paged_case({at::kBFloat16, 128, 4, 4, 64, 200, 1}, 205);
  run_paged_case({at::kHalf, 64, 6, 2, 64, 200, 4}, 206);
  run_paged_case({at::kBFloat16, 128, 6, 1, 64, 200, 3}, 207);
}

TEST(KernelEmu, PagedDecodeStress) {
  if (!stress_enabled()) GTEST_SKIP() << "set MOR_EMU_STRESS=1";
  const std::vector<int> lens = {0, 1, 15, 16, 17, 500, 1300, 0, 1, 15, 16, 17, 500, 1300};
  uint32_t seed = 400;
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (int64_t d : {64, 128})
      for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {15, 5}, {8, 2}})
        for (auto [chunk, bound] : std::vector<std::pair<int64_t, int64_t>>{{64, 1300}, {512, 1337}, {2048, 1300}})
          run_paged_case({dtype, d, hq, hkv, chunk, bound, static_cast<int>(seed % 3)}, seed++, lens);
}

}  // namespace
