// compact_attention_ref and gated_scatter_add against naive float64 loops; CUDA kernels against
// their ATen references when a GPU is present.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "compact_attention/compact_attention.h"
#include "gated_scatter/gated_scatter.h"

namespace {

using mor::kernels::compact_attention_ref;
using mor::kernels::gated_scatter_add_ref;

at::TensorOptions f64() { return at::TensorOptions().dtype(at::kDouble); }

// Naive attention: explicit loops over batch, head, query, key.
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& q_pos, const at::Tensor& k_pos, const at::Tensor& k_valid,
                           double scale) {
  const int64_t b_n = q.size(0), hq = q.size(1), tq = q.size(2), d = q.size(3);
  const int64_t hkv = k.size(1), tk = k.size(2), group = hq / hkv;
  at::Tensor out = at::zeros_like(q);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  auto qp = q_pos.accessor<int64_t, 2>(), kp = k_pos.accessor<int64_t, 2>();
  auto kv = k_valid.accessor<bool, 2>();
  for (int64_t b = 0; b < b_n; ++b)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t i = 0; i < tq; ++i) {
        std::vector<double> s(tk, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < tk; ++j) {
          if (!kv[b][j] || kp[b][j] > qp[b][i]) continue;
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qa[b][h][i][c] * ka[b][h / group][j][c];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < tk; ++j) z += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < tk; ++j) {
          if (std::isinf(s[j])) continue;
          const double p = std::exp(s[j] - mx) / z;
          for (int64_t c = 0; c < d; ++c) oa[b][h][i][c] += p * va[b][h / group][j][c];
        }
      }
  return out;
}

TEST(CompactAttentionRef, PositionCausalWithPaddedKeysMatchesNaiveLoops) {
  at::manual_seed(7);
  const int64_t b = 2, hq = 4, hkv = 2, tq = 3, tk = 6, d = 8;
  const at::Tensor q = at::randn({b, hq, tq, d}, f64()), k = at::randn({b, hkv, tk, d}, f64());
  const at::Tensor v = at::randn({b, hkv, tk, d}, f64());
  // Keys are a superset of the queries (KV sharing); row 1 has two padded keys.
  const at::Tensor k_pos = at::tensor({0, 2, 3, 5, 7, 8, 1, 4, 6, 9, 9, 9}, at::kLong).view({b, tk});
  const at::Tensor k_valid = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, at::kLong).view({b, tk}).ne(0);
  const at::Tensor q_pos = at::tensor({2, 5, 8, 1, 6, 9}, at::kLong).view({b, tq});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor got = compact_attention_ref(q, k, v, q_pos, k_pos, {}, k_valid, {}, {}, false, scale);
  const at::Tensor want = naive_attention(q, k, v, q_pos, k_pos, k_valid, scale);
  EXPECT_TRUE(at::allclose(got, want, 1e-12, 1e-12)) << (got - want).abs().max().item<double>();
}

TEST(CompactAttentionRef, PlainCausalEqualsPositionCausalOverArange) {
  at::manual_seed(8);
  const int64_t b = 2, h = 3, t = 7, d = 4;
  const at::Tensor q = at::randn({b, h, t, d}, f64()), k = at::randn({b, h, t, d}, f64());
  const at::Tensor v = at::randn({b, h, t, d}, f64());
  const at::Tensor pos = at::arange(t, at::kLong).unsqueeze(0).expand({b, t}).contiguous();
  const at::Tensor plain = compact_attention_ref(q, k, v, pos, pos, {}, {}, {}, {}, true, 0.5);
  const at::Tensor want = naive_attention(q, k, v, pos, pos, at::ones({b, t}, at::kBool), 0.5);
  EXPECT_TRUE(at::allclose(plain, want, 1e-12, 1e-12));
}

TEST(CompactAttentionRef, PaddedQueryRowsStayFinite) {
  const int64_t b = 1, h = 1, t = 3, d = 2;
  const at::Tensor q = at::randn({b, h, t, d}, f64()), k = at::randn({b, h, t, d}, f64());
  const at::Tensor pos = at::tensor({4, 7, 7}, at::kLong).view({1, 3});
  const at::Tensor valid = at::tensor({1, 1, 0}, at::kLong).view({1, 3}).ne(0);
  const at::Tensor out = compact_attention_ref(q, k, k, pos, pos, valid, valid, {}, {}, false, 1.0);
  EXPECT_TRUE(out.isfinite().all().item<bool>());
}

TEST(GatedScatterRef, MatchesLoopAndLeavesInputUntouched) {
  at::manual_seed(9);
  const at::Tensor h = at::randn({6, 5}, f64()), y = at::randn({4, 5}, f64());
  const at::Tensor w = at::randn({3}, f64());
  const at::Tensor flat = at::tensor({5, 0, 3}, at::kLong), slot = at::tensor({1, 3, 0}, at::kLong);
  const at::Tensor before = h.clone();
  const at::Tensor got = gated_scatter_add_ref(h, y, w, flat, slot);
  at::Tensor want = h.clone();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t c = 0; c < 5; ++c)
      want[flat[i].item<int64_t>()][c] += w[i].item<double>() * y[slot[i].item<int64_t>()][c].item<double>();
  EXPECT_TRUE(at::allclose(got, want, 1e-14, 1e-14));
  EXPECT_TRUE(at::equal(h, before));
}

TEST(GatedScatterCuda, MatchesReferenceOnGpu) {
  if (!mor::kernels::cuda_kernels_built()) GTEST_SKIP() << "built without CUDA kernels";
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(10);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto opts = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    const int64_t rows = 300, d = 200, k = 120;
    const at::Tensor h = at::randn({rows, d}, opts), y = at::randn({k + 7, d}, opts);
    const at::Tensor w = at::rand({k}, opts);
    const at::Tensor flat = at::randperm(rows, at::TensorOptions().dtype(at::kLong).device(at::kCUDA)).narrow(0, 0, k);
    const at::Tensor slot = at::randperm(k + 7, at::TensorOptions().dtype(at::kLong).device(at::kCUDA)).narrow(0, 0, k);
    at::Tensor out = mor::kernels::gated_scatter_add_cuda(h, y, w, flat, slot);
    const at::Tensor ref = gated_scatter_add_ref(h.to(at::kDouble), y.to(at::kDouble), w.to(at::kDouble), flat, slot);
    const double tol = dtype == at::kFloat ? 1e-5 : 3e-2;
    EXPECT_TRUE(at::allclose(out.to(at::kDouble), ref, tol, tol)) << dtype;
  }
}

}  // namespace
