// Attention backends: the ATen reference path, and the kernel backend that packs the compacted
// [B, H, T, D] batch into varlen segments for kernels/varlen_attention (training and prefill) and
// decodes through kernels/paged_decode.
#include "mor/model/attention.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <string>

#include "compact_attention/compact_attention.h"
#include "mor/core/error.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

namespace mor::model {

at::Tensor AttentionBackend::attend_paged(const PagedAttentionInputs& in) const {
  fail(name(), ": paged attention not supported");
}

namespace {

at::Tensor aten_attend(const AttentionInputs& in) {
  return kernels::compact_attention_ref(in.q, in.k, in.v, in.q_pos, in.k_pos, in.q_valid, in.k_valid, in.q_doc,
                                        in.k_doc, in.plain_causal, in.scale);
}

class AtenAttention final : public AttentionBackend {
 public:
  std::string name() const override { return "aten"; }
  at::Tensor attend(const AttentionInputs& in) const override { return aten_attend(in); }
};

// What backward needs besides the saved tensors: the ops (shared with the backend, which may be
// gone by the time backward runs) and the segment metadata.
struct VarlenState : torch::CustomClassHolder {
  std::shared_ptr<const KernelOps> ops;
  kernels::VarlenArgs call;
};

// out = varlen attention of the packed (q, k, v); backward through ops.varlen_bwd.
struct VarlenAttentionFunction : public torch::autograd::Function<VarlenAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const c10::intrusive_ptr<VarlenState>& state) {
    auto [out, lse] = state->ops->varlen_fwd(q, k, v, state->call);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto state = c10::static_intrusive_pointer_cast<VarlenState>(ctx->saved_data["state"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    auto [dq, dk, dv] =
        state->ops->varlen_bwd(grads[0].contiguous(), saved[0], saved[1], saved[2], saved[3], saved[4], state->call);
    return {dq, dk, dv, at::Tensor()};
  }
};

class KernelAttention final : public AttentionBackend {
 public:
  explicit KernelAttention(KernelOps ops) : ops_(std::make_shared<const KernelOps>(std::move(ops))) {
    MOR_CHECK(ops_->takes_varlen && ops_->takes_paged && ops_->varlen_fwd && ops_->varlen_bwd && ops_->paged,
              "make_kernel_attention: kernel ops '", ops_->name, "' are incomplete");
  }

  std::string name() const override { return "kernels:" + ops_->name; }

  at::Tensor attend(const AttentionInputs& in) const override {
    // takes_varlen sees the packed layout [rows, H, D]: ask with empty tensors of that layout (no
    // memory), so the ATen path costs nothing extra.
    auto packed_like = [](const at::Tensor& x) { return at::empty({0, x.size(1), x.size(3)}, x.options()); };
    if (!ops_->takes_varlen(packed_like(in.q), packed_like(in.k))) return aten_attend(in);
    const int64_t b = in.q.size(0), hq = in.q.size(1), tq = in.q.size(2), d = in.q.size(3);
    const int64_t hkv = in.k.size(1), tk = in.k.size(2);
    const auto long_opts = in.q.options().dtype(at::kLong);
    // The key set is the query set (plain causal, recursion-wise caching): causal by index.
    const bool same_set = in.plain_causal ||
                          (in.k_pos.is_same(in.q_pos) && tk == tq &&
                           (in.q_valid.defined() ? in.k_valid.is_same(in.q_valid) : !in.k_valid.defined()) &&
                           (in.q_doc.defined() ? in.k_doc.is_same(in.q_doc) : !in.k_doc.defined()));
    // Rows b * T + t of the valid entries, ascending: the packed order is (batch row, position).
    // Device syncs: nonzero, once per distinct valid mask (the packed sizes are data-dependent),
    // and with documents one two-element copy of the id range; none when nothing is padded.
    auto valid_rows = [&](const at::Tensor& valid, int64_t t) {
      return valid.defined() ? valid.reshape(-1).nonzero().squeeze(1) : at::arange(b * t, long_opts);
    };
    const at::Tensor q_rows = valid_rows(in.q_valid, tq);
    const at::Tensor k_rows = same_set ? q_rows : valid_rows(in.k_valid, tk);
    const int64_t total_q = q_rows.size(0);
    if (total_q == 0) return in.q * 0.0;  // nothing to attend (keeps the graph)
    MOR_CHECK(k_rows.size(0) > 0, name(), ": valid queries but no valid key");

    // Packing: index_select is differentiable (its backward scatters into the padded layout).
    const at::Tensor q_flat = in.q.transpose(1, 2).reshape({b * tq, hq, d});
    const at::Tensor k_flat = in.k.transpose(1, 2).reshape({b * tk, hkv, d});
    const at::Tensor v_flat = in.v.transpose(1, 2).reshape({b * tk, hkv, d});
    const bool q_all = !in.q_valid.defined(), k_all = same_set ? q_all : !in.k_valid.defined();
    auto pack = [](const at::Tensor& flat, const at::Tensor& rows, bool all) {
      const at::Tensor t = all ? flat : flat.index_select(0, rows);
      return t.stride(-1) == 1 ? t : t.contiguous();
    };
    const at::Tensor qp = pack(q_flat, q_rows, q_all);
    const at::Tensor kp = pack(k_flat, k_rows, k_all);
    const at::Tensor vp = pack(v_flat, k_rows, k_all);

    kernels::VarlenArgs call;
    call.max_q = tq;
    call.max_k = tk;
    call.scale = in.scale;
    call.mask = same_set ? kernels::Mask::kCausalIndex : kernels::Mask::kCausalPos;
    at::Tensor counts_q, counts_k;  // rows per segment (int64)
    if (in.q_doc.defined()) {
      MOR_CHECK(in.k_doc.defined(), name(), ": q_doc and k_doc must be defined together");
      // One segment per (batch row, document): id = b * span + (doc - lowest). Document ids ascend
      // along each row's valid entries (contiguous runs in position order), so segments are
      // contiguous runs of the packed order. Queries and keys count over the same id range, so
      // segment s is the same (row, document) on both sides (empty segments are fine).
      const at::Tensor doc_q = in.q_doc.reshape(-1).index_select(0, q_rows);
      const at::Tensor doc_k = in.k_doc.reshape(-1).index_select(0, k_rows);
      // The id range sizes the segment table (a device sync).
      const at::Tensor range =
          at::stack({at::minimum(doc_q.min(), doc_k.min()), at::maximum(doc_q.max(), doc_k.max())}).to(at::kCPU);
      const int64_t lo = range[0].item<int64_t>(), span = range[1].item<int64_t>() - lo + 1;
      auto count = [&](const at::Tensor& seg) {  // bincount without its device sync
        return at::zeros({b * span}, long_opts).index_add_(0, seg, at::ones_like(seg));
      };
      counts_q = count(at::floor_divide(q_rows, tq) * span + (doc_q - lo));
      counts_k = count(at::floor_divide(k_rows, tk) * span + (doc_k - lo));
    } else {  // one segment per batch row
      counts_q = q_all ? at::full({b}, tq, long_opts) : in.q_valid.sum(1);
      counts_k = same_set ? counts_q : (k_all ? at::full({b}, tk, long_opts) : in.k_valid.sum(1));
    }
    auto cu = [&](const at::Tensor& counts) {
      return at::cat({at::zeros({1}, long_opts), counts.to(at::kLong).cumsum(0)}).to(at::kInt);
    };
    call.cu_q = cu(counts_q);
    call.cu_k = same_set ? call.cu_q : cu(counts_k);
    if (call.mask == kernels::Mask::kCausalPos) {
      auto packed_pos = [](const at::Tensor& pos, const at::Tensor& rows, bool all) {
        const at::Tensor flat = pos.reshape(-1);
        return (all ? flat : flat.index_select(0, rows)).to(at::kInt).contiguous();
      };
      call.q_pos = packed_pos(in.q_pos, q_rows, q_all);
      call.k_pos = packed_pos(in.k_pos, k_rows, k_all);
    }

    at::Tensor out;  // [total_q, Hq, D]
    if (at::GradMode::is_enabled() && (qp.requires_grad() || kp.requires_grad() || vp.requires_grad())) {
      auto state = c10::make_intrusive<VarlenState>();
      state->ops = ops_;
      state->call = call;
      out = VarlenAttentionFunction::apply(qp, kp, vp, state);
    } else {
      out = ops_->varlen_fwd(qp, kp, vp, call).first;
    }
    // Unpacking: invalid query rows are zero; index_copy's backward gathers the valid rows' grads.
    if (!q_all) out = at::zeros({b * tq, hq, d}, out.options()).index_copy(0, q_rows, out);
    return out.reshape({b, tq, hq, d}).transpose(1, 2);
  }

  // Callers ask before they have a pool: takes_paged gets q [R, Hq, D] and an empty pool of q's
  // device, dtype and head dim, [0, 1, 1, D] (so it must decide from those alone).
  bool supports_paged(const at::Tensor& q) const override {
    return ops_->takes_paged(q, at::empty({0, 1, 1, q.size(-1)}, q.options()));
  }

  at::Tensor attend_paged(const PagedAttentionInputs& in) const override {
    MOR_CHECK(ops_->takes_paged(in.q, in.k_pool), name(), ": paged attention does not take these inputs");
    return ops_->paged(in);
  }

 private:
  std::shared_ptr<const KernelOps> ops_;
};

}  // namespace

std::shared_ptr<AttentionBackend> make_aten_attention() { return std::make_shared<AtenAttention>(); }

KernelOps cuda_kernel_ops() {
  KernelOps ops;
  ops.name = "cuda";
  ops.takes_varlen = [](const at::Tensor& q, const at::Tensor& k) {
    return kernels::varlen_attention_cuda_supports(q, k);
  };
  ops.takes_paged = [](const at::Tensor& q, const at::Tensor& k_pool) {
    return kernels::paged_decode_cuda_supports(q, k_pool);
  };
  ops.varlen_fwd = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const kernels::VarlenArgs& c) {
    kernels::VarlenOut o = kernels::varlen_attention_fwd_cuda(q, k, v, c);
    return std::make_pair(o.out, o.lse);
  };
  ops.varlen_bwd = [](const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& out, const at::Tensor& lse, const kernels::VarlenArgs& c) {
    kernels::VarlenGrads g = kernels::varlen_attention_bwd_cuda(dout, q, k, v, out, lse, c);
    return std::make_tuple(g.dq, g.dk, g.dv);
  };
  ops.paged = [](const PagedAttentionInputs& in) {
    return kernels::paged_decode_cuda(in.q, in.k_pool, in.v_pool, in.block_table, in.kv_len, in.max_kv_len, in.scale)
        .out;
  };
  return ops;
}

KernelOps reference_kernel_ops() {
  KernelOps ops;
  ops.name = "reference";
  ops.takes_varlen = [](const at::Tensor&, const at::Tensor&) { return true; };
  ops.takes_paged = [](const at::Tensor&, const at::Tensor&) { return true; };
  ops.varlen_fwd = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const kernels::VarlenArgs& c) {
    kernels::VarlenOut o = kernels::varlen_attention_fwd_ref(q, k, v, c);
    return std::make_pair(o.out, o.lse);
  };
  ops.varlen_bwd = [](const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& out, const at::Tensor& lse, const kernels::VarlenArgs& c) {
    kernels::VarlenGrads g = kernels::varlen_attention_bwd_ref(dout, q, k, v, out, lse, c);
    return std::make_tuple(g.dq, g.dk, g.dv);
  };
  ops.paged = [](const PagedAttentionInputs& in) {  // the oracle needs no bound on kv_len
    return kernels::paged_decode_ref(in.q, in.k_pool, in.v_pool, in.block_table, in.kv_len, in.scale).out;
  };
  return ops;
}

std::shared_ptr<AttentionBackend> make_kernel_attention(KernelOps ops) {
  return std::make_shared<KernelAttention>(std::move(ops));
}

std::shared_ptr<AttentionBackend> make_default_attention() {
  const char* env = std::getenv("MOR_ATTENTION");
  const std::string mode = env == nullptr ? "" : env;
  if (mode.empty() || mode == "auto") return make_kernel_attention(cuda_kernel_ops());
  if (mode == "aten") return make_aten_attention();
  fail("MOR_ATTENTION: expected 'auto' or 'aten' (or unset), got '", mode, "'");
}

}  // namespace mor::model
