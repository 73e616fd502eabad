// varlen_attention: the float64 ATen reference against naive loops, against compact_attention_ref
// on the padded layout and against autograd (CPU, always); the CUDA kernels against the reference
// with FA-style tolerances (skipped without CUDA kernels or a GPU, compiled everywhere).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "compact_attention/compact_attention.h"
#include "varlen_attention/varlen_attention.h"

namespace {

using mor::kernels::varlen_attention_bwd_ref;
using mor::kernels::varlen_attention_fwd_ref;
using mor::kernels::VarlenArgs;
using mor::kernels::VarlenGrads;
using mor::kernels::VarlenOut;
using mor_test::f64;
using mor_test::kInf;
using mor_test::Mask;
using mor_test::Segments;

struct Heads {
  int64_t hq, hkv, d;
};

std::string describe(Mask mask, const Heads& h) {
  std::ostringstream os;
  os << (mask == Mask::kCausalIndex ? "kCausalIndex" : "kCausalPos") << " Hq=" << h.hq << " Hkv=" << h.hkv
     << " D=" << h.d;
  return os.str();
}

// Segments of lengths 0, 1, 5 and 13 mixed, with more or fewer keys than queries; in kCausalPos
// queries are subsets of the keys, their tail, or arbitrary positions (some before every key).
Segments cpu_segments(Mask mask, std::mt19937& rng) {
  Segments seg(mask);
  if (mask == Mask::kCausalIndex) {
    for (auto [lq, lk] : std::vector<std::pair<int, int>>{{0, 0}, {1, 1}, {5, 5}, {13, 13}, {0, 4}, {5, 3}, {3, 7}, {13, 13}, {1, 1}}) {
      seg.add_index(lq, lk);
    }
    return seg;
  }
  const auto k5 = mor_test::ascending_positions(rng, 5);
  seg.add_pos(mor_test::random_subset(rng, k5, 3), k5);
  const auto k1 = mor_test::ascending_positions(rng, 1);
  seg.add_pos(k1, k1);
  seg.add_pos({}, {});
  const auto k13 = mor_test::ascending_positions(rng, 13);
  seg.add_pos(mor_test::random_subset(rng, k13, 5), k13);
  auto k13b = mor_test::ascending_positions(rng, 13);
  for (auto& p : k13b) p += 6;
  auto q13 = mor_test::arbitrary_ascending(rng, 13, 0, k13b.back() + 2);
  q13[0] = 0;  // precedes every key
  seg.add_pos(q13, k13b);
  seg.add_pos({}, mor_test::ascending_positions(rng, 5));
  seg.add_pos(mor_test::ascending_positions(rng, 3), {});  // queries without any key
  const auto k13c = mor_test::ascending_positions(rng, 13);
  seg.add_pos(std::vector<int32_t>(k13c.end() - 5, k13c.end()), k13c);  // actives at the end
  seg.add_pos({4}, {5});                                                 // one query before its one key
  seg.add_pos(k13, k13);
  return seg;
}

// Naive float64 loops straight from the definition: out [total_q, Hq, D], lse [Hq, total_q].
VarlenOut naive_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Segments& seg,
                       double scale) {
  const int64_t hq = q.size(1), d = q.size(2), group = hq / k.size(1);
  VarlenOut r;
  r.out = at::zeros_like(q);
  r.lse = at::full({hq, q.size(0)}, -kInf, f64());
  auto qa = q.accessor<double, 3>(), ka = k.accessor<double, 3>(), va = v.accessor<double, 3>();
  auto oa = r.out.accessor<double, 3>();
  auto la = r.lse.accessor<double, 2>();
  for (int64_t s = 0; s < seg.segments(); ++s)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t i = seg.cu_q[s]; i < seg.cu_q[s + 1]; ++i) {
        std::vector<double> sc;
        std::vector<int64_t> keys;
        double mx = -kInf;
        for (int64_t j = seg.cu_k[s]; j < seg.cu_k[s + 1]; ++j) {
          if (!seg.visible(s, i, j)) continue;
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qa[i][h][c] * ka[j][h / group][c];
          sc.push_back(dot * scale);
          keys.push_back(j);
          mx = std::max(mx, dot * scale);
        }
        if (keys.empty()) continue;
        double z = 0;
        for (double x : sc) z += std::exp(x - mx);
        for (size_t n = 0; n < keys.size(); ++n) {
          const double p = std::exp(sc[n] - mx) / z;
          for (int64_t c = 0; c < d; ++c) oa[i][h][c] += p * va[keys[n]][h / group][c];
        }
        la[h][i] = mx + std::log(z);
      }
  return r;
}

// The same attention through compact_attention_ref on the padded [B, H, T, D] layout (one batch
// entry per segment, positions and valid masks). Rows without a visible key are meaningless there.
at::Tensor via_compact(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Segments& seg,
                       double scale) {
  const int64_t b = seg.segments(), hq = q.size(1), hkv = k.size(1), d = q.size(2);
  const int64_t tq = std::max<int64_t>(1, seg.max_q), tk = std::max<int64_t>(1, seg.max_k);
  at::Tensor qp = at::zeros({b, hq, tq, d}, f64()), kp = at::zeros({b, hkv, tk, d}, f64());
  at::Tensor vp = at::zeros({b, hkv, tk, d}, f64());
  at::Tensor q_pos = at::zeros({b, tq}, at::kLong), k_pos = at::zeros({b, tk}, at::kLong);
  at::Tensor q_valid = at::zeros({b, tq}, at::kBool), k_valid = at::zeros({b, tk}, at::kBool);
  for (int64_t s = 0; s < b; ++s) {
    const int64_t nq = seg.len_q(s), nk = seg.len_k(s);
    qp[s].narrow(1, 0, nq).copy_(q.narrow(0, seg.cu_q[s], nq).permute({1, 0, 2}));
    kp[s].narrow(1, 0, nk).copy_(k.narrow(0, seg.cu_k[s], nk).permute({1, 0, 2}));
    vp[s].narrow(1, 0, nk).copy_(v.narrow(0, seg.cu_k[s], nk).permute({1, 0, 2}));
    for (int64_t i = 0; i < nq; ++i) q_pos[s][i] = seg.q_pos[seg.cu_q[s] + i];
    for (int64_t j = 0; j < nk; ++j) k_pos[s][j] = seg.k_pos[seg.cu_k[s] + j];
    q_valid[s].narrow(0, 0, nq).fill_(true);
    k_valid[s].narrow(0, 0, nk).fill_(true);
  }
  const at::Tensor padded = mor::kernels::compact_attention_ref(qp, kp, vp, q_pos, k_pos, q_valid, k_valid, {}, {},
                                                                /*plain_causal=*/false, scale);
  at::Tensor out = at::zeros_like(q);
  for (int64_t s = 0; s < b; ++s) {
    out.narrow(0, seg.cu_q[s], seg.len_q(s)).copy_(padded[s].narrow(1, 0, seg.len_q(s)).permute({1, 0, 2}));
  }
  return out;
}

const std::vector<Heads> kCpuHeads = {{6, 2, 8}, {15, 5, 64}, {6, 2, 64}, {4, 4, 8}};

TEST(VarlenAttentionRef, ForwardMatchesNaiveLoopsAndCompactAttention) {
  std::mt19937 rng(21);
  at::manual_seed(21);
  for (Mask mask : {Mask::kCausalIndex, Mask::kCausalPos})
    for (const Heads& h : kCpuHeads) {
      SCOPED_TRACE(describe(mask, h));
      const Segments seg = cpu_segments(mask, rng);
      const at::Tensor q = at::randn({seg.total_q(), h.hq, h.d}, f64());
      const at::Tensor k = at::randn({seg.total_k(), h.hkv, h.d}, f64());
      const at::Tensor v = at::randn({seg.total_k(), h.hkv, h.d}, f64());
      const double scale = 1.0 / std::sqrt(static_cast<double>(h.d));
      const VarlenOut got = varlen_attention_fwd_ref(q, k, v, seg.args(at::kCPU, scale));
      const VarlenOut want = naive_varlen(q, k, v, seg, scale);
      ASSERT_EQ(got.out.scalar_type(), at::kDouble);
      ASSERT_EQ(got.lse.scalar_type(), at::kFloat);
      ASSERT_EQ(got.lse.sizes(), (at::IntArrayRef{h.hq, seg.total_q()}));
      EXPECT_TRUE(got.out.isfinite().all().item<bool>());
      EXPECT_TRUE(at::allclose(got.out, want.out, 1e-12, 1e-12)) << (got.out - want.out).abs().max().item<double>();
      EXPECT_TRUE(at::allclose(got.lse.to(at::kDouble), want.lse, 1e-6, 1e-6, /*equal_nan=*/false));
      EXPECT_TRUE(at::equal(got.lse.isneginf(), want.lse.isneginf()));

      // Same values through compact_attention_ref, on the rows that see a key.
      const at::Tensor has_key = want.lse[0].isfinite();
      ASSERT_GT(has_key.sum().item<int64_t>(), 0);
      const at::Tensor compact = via_compact(q, k, v, seg, scale);
      const at::Tensor diff = (got.out - compact).abs().amax({1, 2}).masked_select(has_key);
      EXPECT_LT(diff.max().item<double>(), 1e-12);
    }
}

TEST(VarlenAttentionRef, RowsWithoutVisibleKeysGiveZeroAndMinusInfinity) {
  std::mt19937 rng(22);
  at::manual_seed(22);
  const Segments seg = cpu_segments(Mask::kCausalPos, rng);
  const at::Tensor mask = seg.dense_mask();
  const at::Tensor no_key = mask.any(1).logical_not();
  ASSERT_GE(no_key.sum().item<int64_t>(), 5);  // q13[0], the 3 keyless queries, the one before its key
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto opts = at::TensorOptions().dtype(dtype);
    const at::Tensor q = at::randn({seg.total_q(), 6, 8}, opts), k = at::randn({seg.total_k(), 2, 8}, opts);
    const at::Tensor v = at::randn({seg.total_k(), 2, 8}, opts);
    const VarlenArgs args = seg.args(at::kCPU, 0.3);
    const VarlenOut r = varlen_attention_fwd_ref(q, k, v, args);
    EXPECT_FALSE(r.out.isnan().any().item<bool>());
    EXPECT_FALSE(r.lse.isnan().any().item<bool>());
    EXPECT_TRUE(r.out.index({no_key}).eq(0).all().item<bool>());
    EXPECT_TRUE(r.lse.index({at::indexing::Slice(), no_key}).isneginf().all().item<bool>());
    EXPECT_TRUE(r.lse.index({at::indexing::Slice(), no_key.logical_not()}).isfinite().all().item<bool>());
    const VarlenGrads g = varlen_attention_bwd_ref(at::randn_like(q), q, k, v, r.out, r.lse, args);
    EXPECT_TRUE(g.dq.isfinite().all().item<bool>() && g.dk.isfinite().all().item<bool>() &&
                g.dv.isfinite().all().item<bool>());
    EXPECT_TRUE(g.dq.index({no_key}).eq(0).all().item<bool>());
  }
}

// A float64 autograd formulation with its own dense mask: rows without keys are masked out of the
// softmax by hand so that no NaN enters the graph.
struct AutogradGrads {
  at::Tensor out, dq, dk, dv;
};
AutogradGrads autograd_reference(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0,
                                 const at::Tensor& dout, const at::Tensor& mask, double scale) {
  const int64_t group = q0.size(1) / k0.size(1);
  at::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true);
  at::Tensor v = v0.clone().requires_grad_(true);
  const at::Tensor qh = q.permute({1, 0, 2});
  const at::Tensor kh = k.permute({1, 0, 2}).repeat_interleave(group, 0);
  const at::Tensor vh = v.permute({1, 0, 2}).repeat_interleave(group, 0);
  const at::Tensor has = mask.any(1).unsqueeze(1);  // [Tq, 1]
  at::Tensor s = at::matmul(qh, kh.transpose(1, 2)) * scale;
  s = at::where(has, s.masked_fill(mask.logical_not(), -kInf), at::zeros_like(s));
  const at::Tensor p = at::softmax(s, -1) * has.to(at::kDouble);
  const at::Tensor out = at::matmul(p, vh).permute({1, 0, 2});
  (out * dout).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

TEST(VarlenAttentionRef, BackwardMatchesAutograd) {
  std::mt19937 rng(23);
  at::manual_seed(23);
  for (Mask mask : {Mask::kCausalIndex, Mask::kCausalPos})
    for (const Heads& h : kCpuHeads) {
      SCOPED_TRACE(describe(mask, h));
      const Segments seg = cpu_segments(mask, rng);
      const at::Tensor q = at::randn({seg.total_q(), h.hq, h.d}, f64());
      const at::Tensor k = at::randn({seg.total_k(), h.hkv, h.d}, f64());
      const at::Tensor v = at::randn({seg.total_k(), h.hkv, h.d}, f64());
      const at::Tensor dout = at::randn_like(q);
      const double scale = 0.7 / std::sqrt(static_cast<double>(h.d));
      const VarlenArgs args = seg.args(at::kCPU, scale);
      const VarlenOut fwd = varlen_attention_fwd_ref(q, k, v, args);
      const VarlenGrads got = varlen_attention_bwd_ref(dout, q, k, v, fwd.out, fwd.lse, args);
      const AutogradGrads want = autograd_reference(q, k, v, dout, seg.dense_mask(), scale);
      EXPECT_TRUE(at::allclose(fwd.out, want.out, 1e-12, 1e-12));
      ASSERT_EQ(got.dq.sizes(), q.sizes());
      ASSERT_EQ(got.dk.sizes(), k.sizes());
      ASSERT_EQ(got.dv.sizes(), v.sizes());
      EXPECT_TRUE(at::allclose(got.dq, want.dq, 1e-10, 1e-10)) << (got.dq - want.dq).abs().max().item<double>();
      EXPECT_TRUE(at::allclose(got.dk, want.dk, 1e-10, 1e-10)) << (got.dk - want.dk).abs().max().item<double>();
      EXPECT_TRUE(at::allclose(got.dv, want.dv, 1e-10, 1e-10)) << (got.dv - want.dv).abs().max().item<double>();
    }
}

TEST(VarlenAttentionRef, DtypesAndStridedViews) {
  std::mt19937 rng(24);
  at::manual_seed(24);
  Segments seg(Mask::kCausalIndex);
  for (int len : {4, 0, 9, 1}) seg.add_index(len, len);
  const int64_t hq = 4, hkv = 2, d = 6, t = seg.total_q();
  // q, k, v as strided views of one fused projection [T, Hq + 2 Hkv, D].
  const at::Tensor fused = at::randn({t, hq + 2 * hkv, d}, f64());
  const at::Tensor q = fused.narrow(1, 0, hq), k = fused.narrow(1, hq, hkv), v = fused.narrow(1, hq + hkv, hkv);
  ASSERT_FALSE(q.is_contiguous());
  const VarlenArgs args = seg.args(at::kCPU, 0.4);
  const VarlenOut strided = varlen_attention_fwd_ref(q, k, v, args);
  const VarlenOut contiguous = varlen_attention_fwd_ref(q.contiguous(), k.contiguous(), v.contiguous(), args);
  EXPECT_TRUE(at::allclose(strided.out, contiguous.out, 1e-14, 1e-14));
  const at::Tensor dout = at::randn_like(contiguous.out);
  const VarlenGrads gs = varlen_attention_bwd_ref(dout, q, k, v, strided.out, strided.lse, args);
  const VarlenGrads gc = varlen_attention_bwd_ref(dout, q.contiguous(), k.contiguous(), v.contiguous(),
                                                  contiguous.out, contiguous.lse, args);
  EXPECT_TRUE(at::allclose(gs.dk, gc.dk, 1e-14, 1e-14));
  // Other dtypes: outputs in q's dtype (lse fp32), values the float64 result rounded.
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const VarlenOut r = varlen_attention_fwd_ref(q.to(dtype), k.to(dtype), v.to(dtype), args);
    EXPECT_EQ(r.out.scalar_type(), dtype);
    EXPECT_EQ(r.lse.scalar_type(), at::kFloat);
    const VarlenOut r64 = varlen_attention_fwd_ref(q.to(dtype).to(at::kDouble), k.to(dtype).to(at::kDouble),
                                                   v.to(dtype).to(at::kDouble), args);
    EXPECT_TRUE(at::equal(r.out, r64.out.to(dtype)));
    const VarlenGrads g = varlen_attention_bwd_ref(dout.to(dtype), q.to(dtype), k.to(dtype), v.to(dtype), r.out,
                                                   r.lse, args);
    EXPECT_EQ(g.dq.scalar_type(), dtype);
    EXPECT_EQ(g.dk.scalar_type(), dtype);
    EXPECT_EQ(g.dv.scalar_type(), dtype);
  }
}

TEST(VarlenAttentionRef, RejectsInvalidArguments) {
  Segments seg(Mask::kCausalPos);
  seg.add_pos({1, 3}, {0, 1, 2, 3});
  seg.add_pos({2}, {1, 2});
  const at::Tensor q = at::randn({3, 4, 8}, f64()), k = at::randn({6, 2, 8}, f64()), v = at::randn({6, 2, 8}, f64());
  const VarlenArgs good = seg.args(at::kCPU, 1.0);
  EXPECT_NO_THROW(varlen_attention_fwd_ref(q, k, v, good));
  // Each bad argument is reported by the check meant for it (message fragment).
  auto expect_error = [&](const VarlenArgs& a, const at::Tensor& qq, const at::Tensor& kk, const char* fragment) {
    try {
      varlen_attention_fwd_ref(qq, kk, kk, a);
      ADD_FAILURE() << "no error; expected one mentioning \"" << fragment << "\"";
    } catch (const mor::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  VarlenArgs a = good;
  a.cu_q = at::tensor({0, 2, 4}, at::kInt);
  expect_error(a, q, k, "cu_q[S] = 4 but the tensor has 3 rows");
  a = good;
  a.cu_k = at::tensor({0, 7, 6}, at::kInt);
  a.max_k = 10;
  expect_error(a, q, k, "cu_k must ascend");
  a = good;
  a.cu_q = at::tensor({0, 2, 3}, at::kLong);
  expect_error(a, q, k, "cu_q must be int32");
  a = good;
  a.cu_k = at::tensor({0, 6}, at::kInt);
  expect_error(a, q, k, "segments but cu_k has");
  a = good;
  a.max_k = 3;
  expect_error(a, q, k, "more than max_k = 3");
  a = good;
  a.q_pos = at::Tensor();
  expect_error(a, q, k, "kCausalPos needs q_pos");
  a = good;
  a.k_pos = at::tensor({0, 2, 1, 3, 1, 2}, at::kInt);
  expect_error(a, q, k, "k_pos must ascend within each segment");
  a = good;
  a.k_pos = at::tensor({0, 1, 2, 3, 1}, at::kInt);
  expect_error(a, q, k, "k_pos must be [6]");
  a = good;
  a.mask = Mask::kCausalIndex;
  expect_error(a, q, k, "q_pos/k_pos are only taken with Mask::kCausalPos");
  a.q_pos = a.k_pos = at::Tensor();
  EXPECT_NO_THROW(varlen_attention_fwd_ref(q, k, v, a));
  expect_error(good, at::randn({3, 3, 8}, f64()), k, "must be a multiple of Hkv");
  expect_error(good, q, at::randn({6, 2, 4}, f64()), "differs from k head dim");
  EXPECT_THROW(varlen_attention_fwd_ref(q, k, v.to(at::kFloat), good), mor::Error);
  const VarlenOut r = varlen_attention_fwd_ref(q, k, v, good);
  EXPECT_THROW(varlen_attention_bwd_ref(q, q, k, v, r.out, r.lse.t(), good), mor::Error);
  EXPECT_THROW(varlen_attention_bwd_ref(k, q, k, v, r.out, r.lse, good), mor::Error);
  // k_pos ascending only within segments: a drop across the segment boundary is fine.
  a = good;
  a.k_pos = at::tensor({0, 1, 2, 3, 0, 1}, at::kInt);
  EXPECT_NO_THROW(varlen_attention_fwd_ref(q, k, v, a));
}

TEST(VarlenAttentionCuda, EntryPointsRejectCpuTensors) {
  Segments seg(Mask::kCausalIndex);
  seg.add_index(3, 3);
  const auto opts = at::TensorOptions().dtype(at::kBFloat16);
  const at::Tensor q = at::randn({3, 2, 64}, opts), k = at::randn({3, 2, 64}, opts);
  const VarlenArgs args = seg.args(at::kCPU, 0.125);
  EXPECT_FALSE(mor::kernels::varlen_attention_cuda_supports(q, k));
  EXPECT_THROW(mor::kernels::varlen_attention_fwd_cuda(q, k, k, args), mor::Error);
  const at::Tensor lse = at::zeros({2, 3}, at::kFloat);
  EXPECT_THROW(mor::kernels::varlen_attention_bwd_cuda(q, q, k, k, q, lse, args), mor::Error);
}

// --- GPU ----------------------------------------------------------------------------------------

enum class Variant { kIndex, kPosSubset, kPosTail };

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kIndex: return "kCausalIndex";
    case Variant::kPosSubset: return "kCausalPos/random-subset";
    default: return "kCausalPos/actives-at-end";
  }
}

// Query segments of lengths 0, 1, 2, 63, 64, 65, 127, 129, 300 (tile edges) in one packed batch, in
// random order. kCausalIndex adds segments with fewer and more keys than queries; kCausalPos has up
// to twice as many keys as queries (a random subset or the tail of them), plus a segment whose
// queries partly precede every key and one with queries but no key.
Segments gpu_segments(Variant var, std::mt19937& rng) {
  std::vector<int> lens = {0, 1, 2, 63, 64, 65, 127, 129, 300};
  std::shuffle(lens.begin(), lens.end(), rng);
  Segments seg(var == Variant::kIndex ? Mask::kCausalIndex : Mask::kCausalPos);
  for (int len : lens) {
    if (var == Variant::kIndex) {
      seg.add_index(len, len);
      continue;
    }
    const int extra = std::uniform_int_distribution<int>(0, std::max(1, len))(rng);
    const auto kp = mor_test::ascending_positions(rng, len + extra);
    if (var == Variant::kPosSubset) {
      seg.add_pos(mor_test::random_subset(rng, kp, len), kp);
    } else {
      seg.add_pos(std::vector<int32_t>(kp.end() - len, kp.end()), kp);
    }
  }
  if (var == Variant::kIndex) {
    seg.add_index(70, 40);
    seg.add_index(40, 70);
  } else {
    auto kp = mor_test::ascending_positions(rng, 90);
    for (auto& p : kp) p += 50;
    std::vector<int32_t> range(kp.back() + 3);
    for (size_t i = 0; i < range.size(); ++i) range[i] = static_cast<int32_t>(i);
    auto qp = mor_test::random_subset(rng, range, 70);
    qp[0] = std::min(qp[0], 0);
    seg.add_pos(qp, kp);
    seg.add_pos(mor_test::ascending_positions(rng, 5), {});
  }
  return seg;
}

struct GpuRun {
  VarlenOut out;
  VarlenGrads grads;
};

// Forward twice (bitwise equal) and backward with NaN poisoning on.
GpuRun run_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                const VarlenArgs& args) {
  mor_test::PoisonScope poison;
  GpuRun r;
  r.out = mor::kernels::varlen_attention_fwd_cuda(q, k, v, args);
  const VarlenOut again = mor::kernels::varlen_attention_fwd_cuda(q, k, v, args);
  EXPECT_TRUE(at::equal(r.out.out, again.out)) << "forward output not deterministic";
  EXPECT_TRUE(at::equal(r.out.lse, again.lse)) << "forward lse not deterministic";
  r.grads = mor::kernels::varlen_attention_bwd_cuda(dout, q, k, v, r.out.out, r.out.lse, args);
  return r;
}

// The kernel results against the float64 reference with the FA-style tolerance (see
// attention_test_util.h).
void check_against_reference(const GpuRun& got, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& dout, const Segments& seg, const VarlenArgs& args) {
  const auto dtype = q.scalar_type();
  const int64_t hkv = k.size(1), group = q.size(1) / hkv;
  ASSERT_EQ(got.out.out.sizes(), q.sizes());
  ASSERT_EQ(got.out.out.scalar_type(), dtype);
  ASSERT_EQ(got.out.lse.sizes(), (at::IntArrayRef{q.size(1), q.size(0)}));
  ASSERT_EQ(got.out.lse.scalar_type(), at::kFloat);
  ASSERT_EQ(got.grads.dq.sizes(), q.sizes());
  ASSERT_EQ(got.grads.dk.sizes(), k.sizes());
  ASSERT_EQ(got.grads.dv.sizes(), v.sizes());
  ASSERT_EQ(got.grads.dq.scalar_type(), dtype);
  ASSERT_EQ(got.grads.dk.scalar_type(), dtype);
  ASSERT_EQ(got.grads.dv.scalar_type(), dtype);

  const at::Tensor q64 = q.to(at::kDouble), k64 = k.to(at::kDouble), v64 = v.to(at::kDouble);
  const VarlenOut ref = varlen_attention_fwd_ref(q64, k64, v64, args);
  const VarlenGrads ref_g = varlen_attention_bwd_ref(dout.to(at::kDouble), q64, k64, v64, ref.out, ref.lse, args);

  const at::Tensor mask = seg.dense_mask().to(q.device());
  const at::Tensor qh = mor_test::heads_first_f32(q, 1), kh = mor_test::heads_first_f32(k, group);
  const at::Tensor vh = mor_test::heads_first_f32(v, group), doh = mor_test::heads_first_f32(dout, 1);
  const mor_test::EmulFwd emul = mor_test::emulate_fwd(qh, kh, vh, mask, args.scale, dtype);
  const mor_test::EmulGrads eg = mor_test::emulate_bwd(doh, qh, kh, vh, emul, mask, args.scale, dtype);

  EXPECT_TRUE(mor_test::fa_close("out", got.out.out, emul.out[0].permute({1, 0, 2}), ref.out, dtype));
  EXPECT_TRUE(mor_test::lse_close("lse", got.out.lse, emul.lse[0], ref.lse));
  EXPECT_TRUE(mor_test::fa_close("dq", got.grads.dq, eg.dq[0].permute({1, 0, 2}), ref_g.dq, dtype));
  EXPECT_TRUE(mor_test::fa_close("dk", got.grads.dk, mor_test::group_sum(eg.dkh, hkv, dtype), ref_g.dk, dtype));
  EXPECT_TRUE(mor_test::fa_close("dv", got.grads.dv, mor_test::group_sum(eg.dvh, hkv, dtype), ref_g.dv, dtype));
}

TEST(VarlenAttentionCuda, MatchesReferenceForwardAndBackward) {
  std::string why;
  if (!mor_test::gpu_available(&why)) GTEST_SKIP() << why;
  std::mt19937 rng(31);
  at::manual_seed(31);
  const at::Device dev(at::kCUDA);
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (int64_t d : {64, 128})
      for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {15, 5}, {8, 2}})
        for (Variant var : {Variant::kIndex, Variant::kPosSubset, Variant::kPosTail}) {
          std::ostringstream name;
          name << dtype << " D=" << d << " Hq=" << hq << " Hkv=" << hkv << " " << variant_name(var);
          SCOPED_TRACE(name.str());
          const Segments seg = gpu_segments(var, rng);
          const auto opts = at::TensorOptions().dtype(dtype).device(dev);
          const at::Tensor q = at::randn({seg.total_q(), hq, d}, opts);
          const at::Tensor k = at::randn({seg.total_k(), hkv, d}, opts);
          const at::Tensor v = at::randn({seg.total_k(), hkv, d}, opts);
          const at::Tensor dout = at::randn({seg.total_q(), hq, d}, opts);
          const VarlenArgs args = seg.args(dev, 1.0 / std::sqrt(static_cast<double>(d)));
          ASSERT_TRUE(mor::kernels::varlen_attention_cuda_supports(q, k));
          const GpuRun got = run_cuda(q, k, v, dout, args);
          check_against_reference(got, q, k, v, dout, seg, args);
          if (HasFailure()) return;
        }
}

TEST(VarlenAttentionCuda, StridedViewsOfAFusedProjection) {
  std::string why;
  if (!mor_test::gpu_available(&why)) GTEST_SKIP() << why;
  std::mt19937 rng(32);
  at::manual_seed(32);
  const at::Device dev(at::kCUDA);
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (int64_t d : {64, 128}) {
      SCOPED_TRACE(std::string(dtype == at::kHalf ? "fp16" : "bf16") + " D=" + std::to_string(d));
      const int64_t hq = 8, hkv = 2;
      const Segments seg = gpu_segments(Variant::kIndex, rng);
      // kCausalIndex with extra segments of unequal lengths does not fit one fused buffer; use the
      // equal-length segments only.
      Segments eq(Mask::kCausalIndex);
      for (int64_t s = 0; s < seg.segments(); ++s)
        if (seg.len_q(s) == seg.len_k(s)) eq.add_index(static_cast<int>(seg.len_q(s)), static_cast<int>(seg.len_k(s)));
      const auto opts = at::TensorOptions().dtype(dtype).device(dev);
      const at::Tensor fused = at::randn({eq.total_q(), hq + 2 * hkv, d}, opts);
      const at::Tensor q = fused.narrow(1, 0, hq), k = fused.narrow(1, hq, hkv);
      const at::Tensor v = fused.narrow(1, hq + hkv, hkv);
      const at::Tensor dout = at::randn({eq.total_q(), hq, d}, opts);
      const VarlenArgs args = eq.args(dev, 1.0 / std::sqrt(static_cast<double>(d)));
      ASSERT_TRUE(mor::kernels::varlen_attention_cuda_supports(q, k));
      const GpuRun strided = run_cuda(q, k, v, dout, args);
      const GpuRun contiguous = run_cuda(q.contiguous(), k.contiguous(), v.contiguous(), dout, args);
      EXPECT_TRUE(at::equal(strided.out.out, contiguous.out.out)) << "strided forward differs from contiguous";
      EXPECT_TRUE(at::equal(strided.out.lse, contiguous.out.lse));
      check_against_reference(strided, q, k, v, dout, eq, args);
      if (HasFailure()) return;
    }
}

TEST(VarlenAttentionCuda, UnsupportedInputsAreRejected) {
  std::string why;
  if (!mor_test::gpu_available(&why)) GTEST_SKIP() << why;
  Segments seg(Mask::kCausalIndex);
  seg.add_index(5, 5);
  const at::Device dev(at::kCUDA);
  const VarlenArgs args = seg.args(dev, 0.1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  const auto b16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  EXPECT_FALSE(mor::kernels::varlen_attention_cuda_supports(at::randn({5, 2, 64}, f32), at::randn({5, 2, 64}, f32)));
  EXPECT_FALSE(mor::kernels::varlen_attention_cuda_supports(at::randn({5, 2, 96}, b16), at::randn({5, 2, 96}, b16)));
  EXPECT_TRUE(mor::kernels::varlen_attention_cuda_supports(at::randn({5, 2, 64}, b16), at::randn({5, 2, 64}, b16)));
  const at::Tensor q = at::randn({5, 2, 64}, f32);
  EXPECT_THROW(mor::kernels::varlen_attention_fwd_cuda(q, q, q, args), mor::Error);
}

}  // namespace
