// ActiveSet: the tokens processed at one recursion, compacted per batch row ("compact, don't mask").
//
// Row b holds its active tokens in order of original position, padded to the longest row:
//   pos   [B, Tc] int64  original positions (ascending over valid entries; padding repeats a valid one)
//   valid [B, Tc] bool   undefined when no row is padded
//   local [B, Tc] int64  index of each entry in the parent set it was selected from (undefined for full)
//   flat  [N]     int64  b * T + pos of the N valid entries; slot [N] = b * Tc + c of the same entries
// Everything is built with index tensors: no loops over rows.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mor::model {

struct ActiveSet {
  at::Tensor pos, valid, local, flat, slot;
  int64_t batch = 0;
  int64_t seq = 0;     // T of the full sequence
  int64_t padded = 0;  // Tc
  int64_t count = 0;   // N
  bool full = false;   // every token, positions 0..T-1 in order

  // Every token of a [batch, seq] input.
  static ActiveSet all_tokens(int64_t batch, int64_t seq, at::Device device);

  // Sub-set of this set's entries where keep [B, Tc] is true (keep must be false on padding).
  ActiveSet compact(const at::Tensor& keep) const;
  // Sub-set given sorted local indices [B, k] (same count in every row, this set unpadded).
  ActiveSet select_sorted(const at::Tensor& local_sorted) const;

  // valid, or all-true when undefined.
  at::Tensor valid_mask() const;
  // h [B, T, d] -> [B, Tc, d] (padding rows hold copies of valid rows).
  at::Tensor gather(const at::Tensor& h) const;
  // h + scatter(w * y) over valid entries: h [B, T, d], y [B, Tc, d], w [B, Tc].
  at::Tensor gated_add(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w) const;
  // h with valid entries replaced by y.
  at::Tensor overwrite(const at::Tensor& h, const at::Tensor& y) const;
  // depth [B, T] int64 plus one at every valid entry.
  at::Tensor increment(const at::Tensor& depth) const;
};

}  // namespace mor::model
