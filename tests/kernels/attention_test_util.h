// Shared helpers of the attention kernel tests: packed segment batches built on the host, their
// dense visibility mask built by plain loops (independent of the references), random positions, an
// fp32 emulation of a flash-attention style kernel and the FA-style tolerance used against the
// float64 references.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gated_scatter/gated_scatter.h"
#include "mor/core/error.h"
#include "varlen_attention/varlen_attention.h"

namespace mor_test {

using mor::kernels::Mask;
using mor::kernels::VarlenArgs;

inline at::TensorOptions f64() { return at::TensorOptions().dtype(at::kDouble); }
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// Strictly ascending positions: n values starting in [0, 3], steps in [1, 3].
inline std::vector<int32_t> ascending_positions(std::mt19937& rng, int n, int32_t start_max = 3) {
  std::vector<int32_t> p(n);
  int32_t x = std::uniform_int_distribution<int32_t>(0, start_max)(rng);
  for (int i = 0; i < n; ++i) {
    p[i] = x;
    x += std::uniform_int_distribution<int32_t>(1, 3)(rng);
  }
  return p;
}

// Arbitrary (non-strictly) ascending positions in [lo, hi].
inline std::vector<int32_t> arbitrary_ascending(std::mt19937& rng, int n, int32_t lo, int32_t hi) {
  std::vector<int32_t> p(n);
  for (auto& x : p) x = std::uniform_int_distribution<int32_t>(lo, hi)(rng);
  std::sort(p.begin(), p.end());
  return p;
}

// A random ascending subset of m entries of `from`.
inline std::vector<int32_t> random_subset(std::mt19937& rng, const std::vector<int32_t>& from, int m) {
  std::vector<int> idx(from.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(m);
  std::sort(idx.begin(), idx.end());
  std::vector<int32_t> out;
  for (int i : idx) out.push_back(from[i]);
  return out;
}

// A packed batch of segments described on the host.
struct Segments {
  Mask mask = Mask::kCausalIndex;
  std::vector<int32_t> cu_q{0}, cu_k{0}, q_pos, k_pos;
  int64_t max_q = 0, max_k = 0;

  explicit Segments(Mask m) : mask(m) {}

  // kCausalIndex segment (positions are segment-local indices, recorded for the padded layouts).
  void add_index(int len_q, int len_k) {
    std::vector<int32_t> qp(len_q), kp(len_k);
    for (int i = 0; i < len_q; ++i) qp[i] = i;
    for (int j = 0; j < len_k; ++j) kp[j] = j;
    add_pos(qp, kp);
  }
  void add_pos(const std::vector<int32_t>& qp, const std::vector<int32_t>& kp) {
    cu_q.push_back(cu_q.back() + static_cast<int32_t>(qp.size()));
    cu_k.push_back(cu_k.back() + static_cast<int32_t>(kp.size()));
    q_pos.insert(q_pos.end(), qp.begin(), qp.end());
    k_pos.insert(k_pos.end(), kp.begin(), kp.end());
    max_q = std::max<int64_t>(max_q, static_cast<int64_t>(qp.size()));
    max_k = std::max<int64_t>(max_k, static_cast<int64_t>(kp.size()));
  }
  int64_t segments() const { return static_cast<int64_t>(cu_q.size()) - 1; }
  int64_t total_q() const { return cu_q.back(); }
  int64_t total_k() const { return cu_k.back(); }
  int64_t len_q(int64_t s) const { return cu_q[s + 1] - cu_q[s]; }
  int64_t len_k(int64_t s) const { return cu_k[s + 1] - cu_k[s]; }

  // Whether (packed) query row i sees (packed) key row j, straight from the definition.
  bool visible(int64_t s, int64_t i, int64_t j) const {
    if (mask == Mask::kCausalIndex) return (j - cu_k[s]) <= (i - cu_q[s]);
    return k_pos[j] <= q_pos[i];
  }

  VarlenArgs args(const at::Device& device, double scale) const {
    auto i32 = at::TensorOptions().dtype(at::kInt);
    auto to_tensor = [&](const std::vector<int32_t>& x) {
      return at::tensor(at::ArrayRef<int32_t>(x), i32).to(device);
    };
    VarlenArgs a;
    a.cu_q = to_tensor(cu_q);
    a.cu_k = to_tensor(cu_k);
    if (mask == Mask::kCausalPos) {
      a.q_pos = q_pos.empty() ? at::empty({0}, i32.device(device)) : to_tensor(q_pos);
      a.k_pos = k_pos.empty() ? at::empty({0}, i32.device(device)) : to_tensor(k_pos);
    }
    a.max_q = max_q;
    a.max_k = max_k;
    a.mask = mask;
    a.scale = scale;
    return a;
  }

  // Dense [total_q, total_k] bool mask on the CPU, by loops.
  at::Tensor dense_mask() const {
    at::Tensor m = at::zeros({total_q(), total_k()}, at::kBool);
    auto a = m.accessor<bool, 2>();
    for (int64_t s = 0; s < segments(); ++s)
      for (int64_t i = cu_q[s]; i < cu_q[s + 1]; ++i)
        for (int64_t j = cu_k[s]; j < cu_k[s + 1]; ++j) a[i][j] = visible(s, i, j);
    return m;
  }
};

// --- FA-style emulation and tolerance (GPU tests) ------------------------------------------------
//
// The emulation computes what an ideal flash-attention kernel computes: inputs already in the 16-bit
// dtype, scores, softmax statistics and accumulations in fp32, the unnormalised probabilities
// rounded to the 16-bit dtype before the PV product (and dS before the dQ/dK products), outputs
// rounded to the dtype. Its distance to the float64 reference measures the error inherent to the
// dtype; a kernel may be at most twice as far, plus atol = 2 ulps of the dtype at the magnitude of
// the reference (max |ref|), which absorbs the last rounding of values near the largest ones when
// the emulation happens to round the other way.

// [B, Hq, Tq, D] float32 heads-first view of [T, H, D] / GQA expansion of [T, Hkv, D].
inline at::Tensor heads_first_f32(const at::Tensor& x, int64_t group) {
  at::Tensor h = x.to(at::kFloat).permute({1, 0, 2});
  if (group > 1) h = h.repeat_interleave(group, 0);
  return h.unsqueeze(0);
}

struct EmulFwd {
  at::Tensor out;  // like q (rounded to the dtype), float32 values [B, Hq, Tq, D]
  at::Tensor lse;  // [B, Hq, Tq] float32
};

// qh [B, Hq, Tq, D], kh/vh [B, Hq, Tk, D] float32 (values of the 16-bit inputs), mask broadcastable
// to [B, Hq, Tq, Tk].
inline EmulFwd emulate_fwd(const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh, const at::Tensor& mask,
                           double scale, at::ScalarType dtype) {
  at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)).mul_(scale);
  s.masked_fill_(mask.logical_not(), -kInf);
  at::Tensor m = std::get<0>(s.max(-1, true));
  m.masked_fill_(m.isneginf(), 0.0);
  const at::Tensor e = (s - m).exp_();
  const at::Tensor l = e.sum(-1, true);
  EmulFwd r;
  r.out = (at::matmul(e.to(dtype).to(at::kFloat), vh) / l.clamp_min(1.0)).to(dtype).to(at::kFloat);
  r.lse = (m + l.log()).squeeze(-1);
  return r;
}

struct EmulGrads {
  at::Tensor dq, dkh, dvh;  // float32 values rounded to the dtype; dkh/dvh per query head [B, Hq, Tk, D]
};

inline EmulGrads emulate_bwd(const at::Tensor& doh, const at::Tensor& qh, const at::Tensor& kh, const at::Tensor& vh,
                             const EmulFwd& fwd, const at::Tensor& mask, double scale, at::ScalarType dtype) {
  at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)).mul_(scale);
  const at::Tensor lse = fwd.lse.unsqueeze(-1);
  at::Tensor p = (s - lse.masked_fill(lse.isneginf(), 0.0)).exp_().masked_fill_(mask.logical_not(), 0.0);
  const at::Tensor p16 = p.to(dtype).to(at::kFloat);
  const at::Tensor dp = at::matmul(doh, vh.transpose(-1, -2));
  const at::Tensor delta = (doh * fwd.out).sum(-1, true);
  const at::Tensor ds16 = (p * (dp - delta)).to(dtype).to(at::kFloat);
  EmulGrads g;
  g.dvh = at::matmul(p16.transpose(-1, -2), doh);
  g.dq = (at::matmul(ds16, kh) * scale).to(dtype).to(at::kFloat);
  g.dkh = at::matmul(ds16.transpose(-1, -2), qh) * scale;
  return g;
}

// Sums per-query-head [1, Hq, Tk, D] over each GQA group and lays out as [Tk, Hkv, D].
inline at::Tensor group_sum(const at::Tensor& x, int64_t hkv, at::ScalarType dtype) {
  const int64_t hq = x.size(1), tk = x.size(2), d = x.size(3);
  return x.view({hkv, hq / hkv, tk, d}).sum(1).permute({1, 0, 2}).to(dtype).to(at::kFloat);
}

inline int mantissa_bits(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return 7;
    case at::kHalf: return 10;
    case at::kFloat: return 23;
    default: return 52;
  }
}

// One ulp of `dtype` at magnitude x (x > 0).
inline double ulp(at::ScalarType dtype, double x) {
  x = std::max(x, 1e-30);
  return std::ldexp(1.0, std::ilogb(x) - mantissa_bits(dtype));
}

// max|got - ref| <= 2 max|emul - ref| + 2 ulp(max|ref|), got finite. All tensors of one shape.
inline ::testing::AssertionResult fa_close(const char* what, const at::Tensor& got, const at::Tensor& emul,
                                           const at::Tensor& ref, at::ScalarType dtype) {
  if (got.sizes() != ref.sizes() || emul.sizes() != ref.sizes()) {
    return ::testing::AssertionFailure() << what << ": shapes differ: got " << got.sizes() << ", emul "
                                         << emul.sizes() << ", ref " << ref.sizes();
  }
  const at::Tensor g = got.to(at::kDouble), e = emul.to(at::kDouble), r = ref.to(at::kDouble);
  if (!g.isfinite().all().item<bool>()) {
    return ::testing::AssertionFailure() << what << ": " << g.isfinite().logical_not().sum().item<int64_t>()
                                         << " non-finite values";
  }
  if (r.numel() == 0) return ::testing::AssertionSuccess();
  const double err = (g - r).abs().max().item<double>();
  const double emul_err = (e - r).abs().max().item<double>();
  const double atol = 2.0 * ulp(dtype, r.abs().max().item<double>());
  if (err <= 2.0 * emul_err + atol) return ::testing::AssertionSuccess();
  const int64_t worst = (g - r).abs().flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure() << what << ": max|kernel - ref| = " << err << " > 2 * " << emul_err
                                       << " + " << atol << " (worst flat index " << worst << ": kernel "
                                       << g.flatten()[worst].item<double>() << ", ref "
                                       << r.flatten()[worst].item<double>() << ")";
}

// lse: the same -inf entries as the reference, and the finite ones within FA-style tolerance
// (twice the emulation's error plus 1e-4 relative to the largest magnitude).
inline ::testing::AssertionResult lse_close(const char* what, const at::Tensor& got, const at::Tensor& emul,
                                            const at::Tensor& ref) {
  const at::Tensor g = got.to(at::kDouble), e = emul.to(at::kDouble), r = ref.to(at::kDouble);
  if (g.sizes() != r.sizes()) {
    return ::testing::AssertionFailure() << what << ": shape " << g.sizes() << " != " << r.sizes();
  }
  if (g.isnan().any().item<bool>() || g.isposinf().any().item<bool>()) {
    return ::testing::AssertionFailure() << what << ": NaN or +inf";
  }
  if (!at::equal(g.isneginf(), r.isneginf())) {
    return ::testing::AssertionFailure() << what << ": -inf pattern differs (" << g.isneginf().sum().item<int64_t>()
                                         << " vs " << r.isneginf().sum().item<int64_t>() << " entries)";
  }
  const at::Tensor fin = r.isfinite();
  if (!fin.any().item<bool>()) return ::testing::AssertionSuccess();
  const at::Tensor gf = g.masked_select(fin), ef = e.masked_select(fin), rf = r.masked_select(fin);
  const double err = (gf - rf).abs().max().item<double>();
  const double emul_err = (ef - rf).abs().max().item<double>();
  const double tol = 2.0 * emul_err + 1e-4 * std::max(1.0, rf.abs().max().item<double>());
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max|kernel - ref| = " << err << " > " << tol;
}

// Turns the NaN-poisoning hook on for a scope.
struct PoisonScope {
  PoisonScope() { mor::kernels::set_poison_buffers(true); }
  ~PoisonScope() { mor::kernels::set_poison_buffers(false); }
  PoisonScope(const PoisonScope&) = delete;
  PoisonScope& operator=(const PoisonScope&) = delete;
};

// Whether the GPU tests can run: a build with the CUDA kernels and a CUDA device.
inline bool gpu_available(std::string* why) {
  if (!mor::kernels::cuda_kernels_built()) {
    *why = "built without CUDA kernels";
    return false;
  }
  if (!at::hasCUDA()) {
    *why = "no CUDA device";
    return false;
  }
  return true;
}

}  // namespace mor_test
