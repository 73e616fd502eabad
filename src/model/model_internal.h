// Internals shared by the model's translation units (model.cpp: full forward; decode.cpp: the
// cached incremental forward): parameter structs and the tensor helpers both passes use.
#pragma once

#include <ATen/ATen.h>

#include "mor/model/model.h"

namespace mor::model {

struct MoRModel::LayerParams {
  at::Tensor q, k, v, o, gate, up, down;
  at::Tensor input_norm, post_norm;  // undefined when norms are per unrolled layer
};

struct MoRModel::RouterParams {
  at::Tensor fc1;  // linear: [out, d]; mlp: [2d, d]
  at::Tensor fc2;  // mlp only: [out, 2d]
};

inline constexpr double kPi = 3.14159265358979323846;

inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

inline at::Tensor router_logits(const MoRModel::RouterParams& r, const at::Tensor& x) {
  if (!r.fc2.defined()) return at::linear(x, r.fc1);
  return at::linear(at::gelu(at::linear(x, r.fc1)), r.fc2);
}

inline at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Rotary tables for original positions: cos, sin [B, 1, T, D] in `dtype`.
struct Rope {
  at::Tensor cos, sin;
};

inline Rope make_rope(const at::Tensor& pos, int64_t head_dim, double theta, at::ScalarType dtype) {
  const auto wide = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = pos.options().dtype(wide);
  const at::Tensor exponent = at::arange(0, head_dim, 2, opts) / static_cast<double>(head_dim);
  const at::Tensor inv_freq = at::pow(theta, exponent).reciprocal();
  const at::Tensor angle = pos.to(wide).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  const at::Tensor emb = at::cat({angle, angle}, -1).unsqueeze(1);   // [B, 1, T, D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

inline at::Tensor apply_rope(const at::Tensor& x, const Rope& rope) {
  return x * rope.cos + rotate_half(x) * rope.sin;
}

}  // namespace mor::model
