// ShardedModel: flat per-unit shards, gather/free of the model's parameter storage, gradient
// reduction. See the header for the layout and the modes.
#include "mor/dist/sharded_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StorageImpl.h>

#include <algorithm>

#include "mor/core/error.h"

namespace mor::dist {

using config::ShardingMode;

namespace {

c10::StorageImpl* storage_of(const at::Tensor& t) {
  return t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl();
}

// Gives the parameter's storage its full size again (new memory, contents undefined).
void allocate_storage(const at::Tensor& t) {
  c10::StorageImpl* s = storage_of(t);
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (s->nbytes() == bytes && s->data() != nullptr) return;
  // Device allocators allocate on the current device: make it the parameter's.
  const c10::DeviceGuard guard(t.device());
  at::Allocator* alloc = s->allocator() != nullptr ? s->allocator() : c10::GetAllocator(t.device().type());
  s->set_data_ptr_noswap(alloc->allocate(bytes));
  s->set_nbytes(bytes);
}

// Releases the parameter's memory; the tensor keeps its shape, autograd references stay valid.
void free_storage(const at::Tensor& t) {
  c10::StorageImpl* s = storage_of(t);
  s->set_data_ptr_noswap(at::DataPtr(nullptr, t.device()));
  s->set_nbytes(0);
}

// Writes `values` into the parameter's memory without touching its autograd version counter
// (tensors saved for backward by the forward stay valid across a free/re-gather cycle).
void write_parameter(const at::Tensor& param, const at::Tensor& values) {
  allocate_storage(param);
  at::Tensor alias = at::from_blob(param.data_ptr(), param.sizes(), param.options().requires_grad(false));
  alias.copy_(values.view(param.sizes()));
}

}  // namespace

int64_t UnitShard::valid() const { return std::clamp<int64_t>(numel - shard_begin, 0, shard_numel); }

ShardedModel::ShardedModel(model::MoRModel& model, Communicator& comm, ShardingMode mode, bool reshard_after_forward)
    : model_(model), comm_(comm), mode_(mode), reshard_after_forward_(reshard_after_forward) {
  const at::NoGradGuard no_grad;
  const auto& params = model_.parameters();
  const int64_t world = comm_.world_size(), rank = comm_.rank();
  const bool sharded = mode_ != ShardingMode::kNone && world > 1;
  unit_of_param_.assign(params.size(), -1);
  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(model_.device());
  for (const model::ParamUnit& pu : model_.param_units()) {
    UnitShard u;
    u.name = pu.name;
    u.params = pu.params;
    for (int64_t i : pu.params) {
      const at::Tensor& t = params[i].tensor;
      MOR_CHECK(t.is_contiguous() && t.storage_offset() == 0 &&
                    storage_of(t)->nbytes() == static_cast<size_t>(t.numel() * t.element_size()),
                "internal: parameter ", params[i].name, " does not own a contiguous storage");
      unit_of_param_[i] = static_cast<int64_t>(units_.size());
      u.offsets.push_back(u.numel);
      u.numel += t.numel();
    }
    u.shard_numel = sharded ? (u.numel + world - 1) / world : u.numel;
    u.shard_begin = sharded ? rank * u.shard_numel : 0;
    u.master = at::zeros({u.shard_numel}, fp32);
    u.grad = at::zeros({u.shard_numel}, fp32);
    u.gathered = true;
    units_.push_back(std::move(u));
  }
  for (size_t u = 0; u < units_.size(); ++u) {
    for (const ShardSpan& s : spans(static_cast<int64_t>(u))) {
      const at::Tensor flat = params[s.param].tensor.detach().reshape(-1);
      units_[u].master.narrow(0, s.shard_offset, s.length).copy_(flat.narrow(0, s.param_offset, s.length));
    }
  }
  reduced_.assign(units_.size(), 0);
  if (mode_ == ShardingMode::kZero3) {
    for (UnitShard& u : units_) free(u);
  }
}

ShardedModel::~ShardedModel() = default;

std::vector<ShardSpan> ShardedModel::spans(int64_t unit) const {
  const UnitShard& u = units_.at(unit);
  const auto& params = model_.parameters();
  std::vector<ShardSpan> out;
  const int64_t lo = u.shard_begin, hi = u.shard_begin + u.shard_numel;
  for (size_t k = 0; k < u.params.size(); ++k) {
    const int64_t begin = u.offsets[k], end = begin + params[u.params[k]].tensor.numel();
    const int64_t a = std::max(begin, lo), b = std::min(end, hi);
    if (a >= b) continue;
    out.push_back({u.params[k], a - lo, a - begin, b - a});
  }
  return out;
}

void ShardedModel::gather(UnitShard& u) {
  const at::NoGradGuard no_grad;
  const auto& params = model_.parameters();
  const int64_t world = comm_.world_size();
  at::Tensor full;
  if (u.shard_numel == u.numel) {
    full = u.master.to(model_.dtype());
  } else {
    const at::Tensor in = u.master.to(model_.dtype()).contiguous();
    full = at::empty({world * u.shard_numel}, in.options());
    comm_.all_gather(full, in);
  }
  for (size_t k = 0; k < u.params.size(); ++k) {
    const at::Tensor& p = params[u.params[k]].tensor;
    write_parameter(p, full.narrow(0, u.offsets[k], p.numel()));
  }
  u.gathered = true;
}

void ShardedModel::free(UnitShard& u) {
  const auto& params = model_.parameters();
  for (int64_t i : u.params) free_storage(params[i].tensor);
  u.gathered = false;
}

void ShardedModel::before(int64_t unit) {
  UnitShard& u = units_.at(unit);
  if (!u.gathered) gather(u);
}

at::Tensor ShardedModel::after(int64_t unit, const at::Tensor& output) {
  if (unit == 0) return output;
  const bool reshard = mode_ == ShardingMode::kZero3 && reshard_after_forward_;
  if (reshard) free(units_.at(unit));
  if (!at::GradMode::is_enabled() || !output.requires_grad()) return output;
  // A fresh autograd node for the hook: the gradient of this view is complete exactly when the
  // backward of every later unit is over and before this unit's own backward starts.
  at::Tensor view = output.view_as(output);
  view.register_hook([this, unit](const at::Tensor&) {
    for (int64_t v = static_cast<int64_t>(units_.size()) - 1; v > unit; --v) {
      if (!reduced_[v]) reduce_unit(v);
    }
    UnitShard& u = units_[unit];
    if (!u.gathered) gather(u);
  });
  return view;
}

void ShardedModel::reduce_unit(int64_t index) {
  const at::NoGradGuard no_grad;
  UnitShard& u = units_[index];
  const auto& params = model_.parameters();
  const int64_t world = comm_.world_size();
  const bool scatter = u.shard_numel != u.numel;  // sharded over > 1 rank
  const int64_t size = scatter ? world * u.shard_numel : u.numel;
  at::Tensor flat = at::zeros({size}, u.grad.options());
  for (size_t k = 0; k < u.params.size(); ++k) {
    at::Tensor& g = params[u.params[k]].tensor.mutable_grad();
    if (!g.defined()) continue;
    flat.narrow(0, u.offsets[k], g.numel()).copy_(g.reshape(-1));
    g = at::Tensor();  // the full-size gradient is not needed any more
  }
  if (scatter) {
    at::Tensor out = at::empty({u.shard_numel}, u.grad.options());
    comm_.reduce_scatter_sum(out, flat);
    u.grad.add_(out);
  } else {
    if (world > 1) comm_.all_reduce_sum(flat);
    u.grad.add_(flat);
  }
  reduced_[index] = 1;
  if (index != 0 && mode_ == ShardingMode::kZero3 && reshard_after_forward_ && u.gathered) free(u);
}

void ShardedModel::reduce_gradients() {
  for (int64_t v = static_cast<int64_t>(units_.size()) - 1; v >= 0; --v) {
    if (!reduced_[v]) reduce_unit(v);
  }
  std::fill(reduced_.begin(), reduced_.end(), 0);
  model_.zero_grad();
  if (mode_ == ShardingMode::kZero3) release();
}

void ShardedModel::zero_grad_shards() {
  for (UnitShard& u : units_) u.grad.zero_();
}

void ShardedModel::master_updated() {
  if (mode_ == ShardingMode::kZero3) {
    release();  // stale gathered copies; the next forward gathers the new values
    return;
  }
  for (UnitShard& u : units_) gather(u);
}

void ShardedModel::gather_all() {
  for (UnitShard& u : units_) {
    if (!u.gathered) gather(u);
  }
}

void ShardedModel::release() {
  if (mode_ != ShardingMode::kZero3) return;
  for (UnitShard& u : units_) {
    if (u.gathered) free(u);
  }
}

at::Tensor ShardedModel::full_parameter(int64_t param) { return full_value(param, false); }
at::Tensor ShardedModel::full_gradient(int64_t param) { return full_value(param, true); }

at::Tensor ShardedModel::full_value(int64_t param, bool gradient) {
  const at::NoGradGuard no_grad;
  const UnitShard& u = units_.at(unit_of_param_.at(param));
  const auto& p = model_.parameters()[param].tensor;
  const at::Tensor& shard = gradient ? u.grad : u.master;
  at::Tensor full = shard;
  if (u.shard_numel != u.numel) {
    full = at::empty({comm_.world_size() * u.shard_numel}, shard.options());
    comm_.all_gather(full, shard);
  }
  int64_t offset = 0;
  for (size_t k = 0; k < u.params.size(); ++k) {
    if (u.params[k] == param) offset = u.offsets[k];
  }
  return full.narrow(0, offset, p.numel()).view(p.sizes()).clone();
}

}  // namespace mor::dist
