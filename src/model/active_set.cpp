#include "mor/model/active_set.h"

#include <ATen/ATen.h>

#include "gated_scatter/gated_scatter.h"

namespace mor::model {

ActiveSet ActiveSet::all_tokens(int64_t batch, int64_t seq, at::Device device) {
  ActiveSet s;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  s.pos = at::arange(seq, opts).unsqueeze(0).expand({batch, seq});
  s.flat = at::arange(batch * seq, opts);
  s.slot = s.flat;
  s.batch = batch;
  s.seq = seq;
  s.padded = seq;
  s.count = batch * seq;
  s.full = true;
  return s;
}

ActiveSet ActiveSet::compact(const at::Tensor& keep) const {
  ActiveSet s;
  s.batch = batch;
  s.seq = seq;
  const at::Tensor counts = keep.sum(1);
  s.count = counts.sum().item<int64_t>();
  s.padded = s.count == 0 ? 0 : counts.max().item<int64_t>();
  const auto long_opts = pos.options();
  if (s.count == 0) {
    s.pos = at::zeros({batch, 0}, long_opts);
    s.local = s.pos;
    s.flat = at::zeros({0}, long_opts);
    s.slot = s.flat;
    return s;
  }
  const at::Tensor nz = keep.nonzero();  // [N, 2], row-major: ascending columns within a row
  const at::Tensor rows = nz.select(1, 0), cols = nz.select(1, 1);
  const at::Tensor rank = (keep.to(at::kLong).cumsum(1) - 1).reshape(-1).index_select(0, rows * padded + cols);
  s.slot = rows * s.padded + rank;
  s.local = at::zeros({batch * s.padded}, long_opts).index_copy_(0, s.slot, cols).view({batch, s.padded});
  if (counts.min().item<int64_t>() != s.padded) {
    s.valid = at::zeros({batch * s.padded}, keep.options()).index_fill_(0, s.slot, true).view({batch, s.padded});
  }
  s.pos = pos.gather(1, s.local);
  s.flat = rows * seq + s.pos.reshape(-1).index_select(0, s.slot);
  return s;
}

ActiveSet ActiveSet::select_sorted(const at::Tensor& local_sorted) const {
  ActiveSet s;
  s.batch = batch;
  s.seq = seq;
  s.padded = local_sorted.size(1);
  s.count = batch * s.padded;
  s.local = local_sorted;
  s.pos = pos.gather(1, local_sorted);
  const auto long_opts = pos.options();
  s.flat = (at::arange(batch, long_opts).unsqueeze(1) * seq + s.pos).reshape(-1);
  s.slot = at::arange(s.count, long_opts);
  return s;
}

at::Tensor ActiveSet::valid_mask() const {
  if (valid.defined()) return valid;
  return at::ones({batch, padded}, pos.options().dtype(at::kBool));
}

at::Tensor ActiveSet::gather(const at::Tensor& h) const {
  if (full) return h;
  return h.gather(1, pos.unsqueeze(-1).expand({batch, padded, h.size(2)}));
}

at::Tensor ActiveSet::gated_add(const at::Tensor& h, const at::Tensor& y, const at::Tensor& w) const {
  if (full) return h + w.unsqueeze(-1) * y;
  const int64_t d = h.size(2);
  return kernels::gated_scatter_add_ref(h.reshape({batch * seq, d}), y.reshape({batch * padded, d}),
                                        w.reshape(-1).index_select(0, slot), flat, slot)
      .view({batch, seq, d});
}

at::Tensor ActiveSet::overwrite(const at::Tensor& h, const at::Tensor& y) const {
  if (full) return y;
  const int64_t d = h.size(2);
  return h.reshape({batch * seq, d})
      .index_copy(0, flat, y.reshape({batch * padded, d}).index_select(0, slot))
      .view({batch, seq, d});
}

at::Tensor ActiveSet::increment(const at::Tensor& depth) const {
  if (full) return depth + 1;
  return depth.reshape(-1).index_add(0, flat, at::ones({count}, depth.options())).view({batch, seq});
}

}  // namespace mor::model
