// AdamW over flat fp32 parameter shards, updated in place (CPU or CUDA alike).
//
// A registered parameter is a contiguous fp32 tensor (typically one rank's flat shard) described by
// Segments: disjoint element ranges sharing an LR multiplier and a weight decay. Elements covered by
// no segment (padding, frozen entries) and their optimizer state are never changed.
//
// Update (torch.optim.AdamW semantics, decoupled decay), per element with lr_el = lr * lr_scale and
// t = steps() after the increment:
//   p *= 1 - lr_el * wd
//   m  = b1 * m + (1 - b1) * g
//   v  = b2 * v + (1 - b2) * g^2
//   p -= lr_el / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Work is done with in-place ATen ops on narrowed views, in chunks of at most
// options.chunk_elements elements, so the only temporary is one chunk-sized buffer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace mor::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  int64_t chunk_elements = int64_t{1} << 22;  // largest temporary buffer (elements); results don't depend on it
};

// A contiguous run of elements of a shard sharing one LR scale and weight decay.
struct Segment {
  int64_t offset = 0, length = 0;
  double lr_scale = 1.0;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options);

  // Registers a contiguous fp32 parameter tensor (updated in place) described by segments (disjoint,
  // inside [0, numel), any order; zero-length ones are dropped). Returns its index. State: zeros.
  int64_t add(at::Tensor param, std::vector<Segment> segments);

  // One update with peak-scaled learning rate `lr` (element LR = lr * lr_scale). grads[i] matches
  // param i (same numel, fp32, same device); an undefined grad leaves param i and its state untouched.
  // The step count (bias correction) advances once per call.
  void step(double lr, const std::vector<at::Tensor>& grads);

  int64_t steps() const { return steps_; }  // completed updates (for bias correction)
  void set_steps(int64_t steps);            // restoring from a checkpoint
  int64_t size() const { return static_cast<int64_t>(params_.size()); }  // registered params
  at::Tensor& exp_avg(int64_t i);           // first moment, fp32, same shape as param i
  at::Tensor& exp_avg_sq(int64_t i);        // second moment
  const at::Tensor& param(int64_t i) const;
  const std::vector<Segment>& segments(int64_t i) const;
  const AdamWOptions& options() const { return options_; }

 private:
  struct Entry {
    at::Tensor param, exp_avg, exp_avg_sq;
    std::vector<Segment> segments;  // sorted by offset
  };
  Entry& entry(int64_t i);
  const Entry& entry(int64_t i) const;

  AdamWOptions options_;
  int64_t steps_ = 0;
  std::vector<Entry> params_;
};

}  // namespace mor::train
