// MoRModel: construction, initialisation, the forward pass for every variant, and the loss.
#include "mor/model/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "gated_scatter/gated_scatter.h"
#include "mor/core/error.h"
#include "mor/model/active_set.h"
#include "model_internal.h"

namespace mor::model {

using config::ExpertAux;
using config::GateFunc;
using config::KvMode;
using config::RouterArch;
using config::RouterKind;

namespace {

// K/V of one block layer kept from the first recursion (KV sharing).
struct SharedKv {
  at::Tensor k, v;
  ActiveSet keys;
};

// Everything a decoder layer needs besides its weights.
struct LayerCall {
  const ActiveSet* set = nullptr;       // the tokens in x
  const Rope* rope = nullptr;           // for set->pos
  const SharedKv* read_kv = nullptr;    // KV sharing, recursion >= 1: use these keys/values
  SharedKv* write_kv = nullptr;         // KV sharing, recursion 0: keep this layer's keys/values
};

// A decoder layer's forward as a closure that owns everything it reads (for recomputation).
struct LayerThunk : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> run;
};

// Activation checkpointing of one layer: forward without recording, backward recomputes the layer
// with recording on and backpropagates through it (parameter gradients accumulate as usual).
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::intrusive_ptr<LayerThunk>& thunk) {
    ctx->save_for_backward({x});
    ctx->saved_data["thunk"] = c10::IValue::make_capsule(thunk);
    const at::NoGradGuard no_grad;
    return thunk->run(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto thunk = c10::static_intrusive_pointer_cast<LayerThunk>(ctx->saved_data["thunk"].toCapsule());
    const at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      const at::AutoGradMode enable(true);
      y = thunk->run(x);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

MoRModel::MoRModel(const config::ModelConfig& model, at::ScalarType dtype, at::Device device)
    : config_(model), layout_(make_layout(model)), cache_slots_(cache_layout(model)), dtype_(dtype), device_(device),
      attention_(make_default_attention()) {
  const int64_t d = model.hidden_size, heads = model.num_heads, kv = model.num_kv_heads;
  const int64_t head_dim = model.resolved_head_dim(), ff = model.intermediate_size;
  MOR_CHECK(heads > 0 && kv > 0 && heads % kv == 0,
            "model.num_heads: must be a positive multiple of model.num_kv_heads (", heads, " vs ", kv, ")");
  MOR_CHECK(head_dim > 0 && head_dim % 2 == 0, "model.head_dim: must be a positive even number, got ",
            head_dim);
  MOR_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf,
            "model dtype must be float32, float64, bfloat16 or float16");

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(model.seed));
  auto add = [&](const std::string& name, std::vector<int64_t> shape, ParamRole role) {
    if (device_.is_meta()) {  // shapes only (bundle writers, inspection): no memory, no initialisation
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype_).device(device_));
      params_.push_back({name, t, role});
      return t;
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
    if (role == ParamRole::kNorm) {
      t.fill_(1.0);
    } else {
      t.normal_(0.0, model.init_std, gen);
    }
    t = t.to(device_, dtype_).detach();
    t.set_requires_grad(true);
    params_.push_back({name, t, role});
    return t;
  };

  embed_ = add("model.embed_tokens.weight", {model.vocab_size, d}, ParamRole::kEmbedding);
  const bool per_unrolled_norms =
      model.recursion.sharing != config::Sharing::kNone && !model.recursion.share_norms;
  for (int64_t p = 0; p < layout_.num_param_sets; ++p) {
    auto layer = std::make_shared<LayerParams>();
    const std::string prefix = "model.layers." + std::to_string(p) + ".";
    layer->q = add(prefix + "self_attn.q_proj.weight", {heads * head_dim, d}, ParamRole::kMatmul);
    layer->k = add(prefix + "self_attn.k_proj.weight", {kv * head_dim, d}, ParamRole::kMatmul);
    layer->v = add(prefix + "self_attn.v_proj.weight", {kv * head_dim, d}, ParamRole::kMatmul);
    layer->o = add(prefix + "self_attn.o_proj.weight", {d, heads * head_dim}, ParamRole::kMatmul);
    layer->gate = add(prefix + "mlp.gate_proj.weight", {ff, d}, ParamRole::kMatmul);
    layer->up = add(prefix + "mlp.up_proj.weight", {ff, d}, ParamRole::kMatmul);
    layer->down = add(prefix + "mlp.down_proj.weight", {d, ff}, ParamRole::kMatmul);
    if (!per_unrolled_norms) {
      layer->input_norm = add(prefix + "input_layernorm.weight", {d}, ParamRole::kNorm);
      layer->post_norm = add(prefix + "post_attention_layernorm.weight", {d}, ParamRole::kNorm);
    }
    layers_.push_back(layer);
  }
  if (per_unrolled_norms) {
    for (int64_t j = 0; j < layout_.unrolled_depth(); ++j) {
      const std::string prefix = "model.unrolled_norms." + std::to_string(j) + ".";
      at::Tensor in = add(prefix + "input_layernorm.weight", {d}, ParamRole::kNorm);
      at::Tensor post = add(prefix + "post_attention_layernorm.weight", {d}, ParamRole::kNorm);
      norms_.emplace_back(in, post);
    }
  }

  const int64_t n_r = layout_.num_recursions;
  auto add_router = [&](const std::string& prefix, int64_t out, ParamRole role) {
    auto r = std::make_shared<RouterParams>();
    if (model.router.arch == RouterArch::kLinear) {
      r->fc1 = add(prefix + ".weight", {out, d}, role);
    } else {
      r->fc1 = add(prefix + ".fc1.weight", {2 * d, d}, role);
      r->fc2 = add(prefix + ".fc2.weight", {out, 2 * d}, role);
    }
    return r;
  };
  if (model.router.kind != RouterKind::kNone) {
    MOR_CHECK(!layout_.block.empty(), "model.router.kind: ", config::to_string(model.router.kind),
              " routing needs recursion.sharing cycle or middle_cycle");
  }
  if (model.router.kind == RouterKind::kExpert) {
    for (int64_t r = 0; r < n_r; ++r)
      routers_.push_back(add_router("model.routers." + std::to_string(r), 1, ParamRole::kRouter));
    if (model.router.expert.aux == ExpertAux::kRouter) {
      for (int64_t r = 0; r < n_r; ++r)
        aux_routers_.push_back(
            add_router("model.aux_routers." + std::to_string(r), 1, ParamRole::kAuxRouter));
    }
  } else if (model.router.kind == RouterKind::kToken) {
    routers_.push_back(add_router("model.router", n_r, ParamRole::kRouter));
    balance_bias_ = at::zeros({n_r}, at::TensorOptions().dtype(at::kFloat).device(device_));
  }
  final_norm_ = add("model.norm.weight", {d}, ParamRole::kNorm);
  lm_head_ = model.tie_embeddings ? embed_
                                  : add("lm_head.weight", {model.vocab_size, d}, ParamRole::kLmHead);
  build_units();
}

void MoRModel::build_units() {
  units_.push_back({"root", {}});
  unit_of_set_.assign(layout_.num_param_sets, -1);
  auto unit_for_set = [&](int64_t set) {
    if (unit_of_set_[set] < 0) {
      unit_of_set_[set] = static_cast<int64_t>(units_.size());
      units_.push_back({"layers." + std::to_string(set), {}});
    }
  };
  for (int64_t set : layout_.prelude) unit_for_set(set);
  if (!layout_.block.empty()) {
    block_unit_ = static_cast<int64_t>(units_.size());
    units_.push_back({"block", {}});
    for (int64_t set : layout_.block) unit_of_set_[set] = block_unit_;
  }
  for (int64_t set : layout_.coda) unit_for_set(set);

  // "model.layers.P." / "model.unrolled_norms.J." -> that set's unit; routers -> block; rest -> root.
  auto number_after = [](const std::string& name, const std::string& prefix) {
    return std::stoll(name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size()));
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    int64_t unit = 0;
    if (name.starts_with("model.layers.")) {
      unit = unit_of_set_[number_after(name, "model.layers.")];
    } else if (name.starts_with("model.unrolled_norms.")) {
      unit = unit_of_set_[layout_.unrolled[number_after(name, "model.unrolled_norms.")]];
    } else if (params_[i].role == ParamRole::kRouter || params_[i].role == ParamRole::kAuxRouter) {
      unit = block_unit_;
    }
    MOR_CHECK(unit >= 0, "internal: parameter ", name, " has no unit");
    units_[unit].params.push_back(static_cast<int64_t>(i));
  }
}

int64_t MoRModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.tensor.numel();
  return n;
}

void MoRModel::zero_grad() {
  for (auto& p : params_) p.tensor.mutable_grad() = at::Tensor();
}

void MoRModel::set_attention_backend(std::shared_ptr<AttentionBackend> backend) {
  MOR_CHECK(backend != nullptr, "set_attention_backend: backend must not be null");
  attention_ = std::move(backend);
}

void MoRModel::apply_balance_update(const at::Tensor& depth_counts) {
  MOR_CHECK(config_.router.kind == RouterKind::kToken,
            "apply_balance_update: only token-choice models have a balancing bias");
  MOR_CHECK(depth_counts.numel() == balance_bias_.numel(), "apply_balance_update: expected ",
            balance_bias_.numel(), " depth counts, got ", depth_counts.numel());
  const at::NoGradGuard no_grad;
  const at::Tensor counts = depth_counts.detach().to(at::kDouble).to(balance_bias_.device());
  const double total = counts.sum().item<double>();
  if (total <= 0) return;
  const at::Tensor c = counts / total;
  const at::Tensor step = (c.mean() - c).sign() * config_.router.token.bias_update_rate;
  balance_bias_.add_(step.to(at::kFloat));
}

namespace {

// The forward pass of one model instance; a struct so helpers share the per-call context.
class ForwardPass {
 public:
  ForwardPass(const config::ModelConfig& cfg, const Layout& layout, const AttentionBackend& attention,
              const std::vector<std::shared_ptr<MoRModel::LayerParams>>& layers,
              const std::vector<std::pair<at::Tensor, at::Tensor>>& norms, at::ScalarType dtype)
      : cfg_(cfg), layout_(layout), attention_(attention), layers_(layers), norms_(norms), dtype_(dtype),
        scale_(1.0 / std::sqrt(static_cast<double>(cfg.resolved_head_dim()))) {}

  // Document masking: segments [B, T] (ids of contiguous runs of `documents`) and the position of
  // every token within its run.
  void set_documents(const at::Tensor& documents) {
    const int64_t seq = documents.size(1);
    const at::Tensor starts = at::ones_like(documents, documents.options().dtype(at::kBool));
    if (seq > 1) starts.narrow(1, 1, seq - 1).copy_(documents.narrow(1, 1, seq - 1) != documents.narrow(1, 0, seq - 1));
    segments_ = starts.to(at::kLong).cumsum(1);
    const at::Tensor t = at::arange(seq, documents.options()).unsqueeze(0).expand_as(documents);
    rope_positions_ = t - std::get<0>(at::cummax(at::where(starts, t, at::zeros_like(t)), 1));
  }

  Rope rope(const ActiveSet& set) const {
    const at::Tensor pos = segments_.defined() ? rope_positions_.gather(1, set.pos) : set.pos;
    return make_rope(pos, cfg_.resolved_head_dim(), cfg_.rope_theta, dtype_);
  }
  at::Tensor documents(const ActiveSet& set) const {
    return segments_.defined() ? segments_.gather(1, set.pos) : at::Tensor();
  }

  void set_checkpointing(bool on) { checkpoint_ = on; }

  // layer(), recomputed in backward under activation checkpointing.
  at::Tensor run_layer(const at::Tensor& x, int64_t unrolled, const LayerCall& call) const {
    if (!checkpoint_ || call.read_kv != nullptr || call.write_kv != nullptr || !at::GradMode::is_enabled() ||
        !x.requires_grad()) {
      return layer(x, unrolled, call);
    }
    auto thunk = c10::make_intrusive<LayerThunk>();
    ForwardPass pass = *this;
    pass.checkpoint_ = false;
    thunk->run = [pass, set = *call.set, rope = *call.rope, unrolled](const at::Tensor& in) {
      LayerCall c;
      c.set = &set;
      c.rope = &rope;
      return pass.layer(in, unrolled, c);
    };
    return CheckpointedLayer::apply(x, thunk);
  }

  at::Tensor layer(const at::Tensor& x, int64_t unrolled, const LayerCall& call) const {
    const MoRModel::LayerParams& p = *layers_[layout_.unrolled[unrolled]];
    const at::Tensor& w_in = norms_.empty() ? p.input_norm : norms_[unrolled].first;
    const at::Tensor& w_post = norms_.empty() ? p.post_norm : norms_[unrolled].second;
    const int64_t b = x.size(0), t = x.size(1), heads = cfg_.num_heads, kv = cfg_.num_kv_heads;
    const int64_t hd = cfg_.resolved_head_dim();
    const at::Tensor h = rms_norm(x, w_in, cfg_.rms_norm_eps);
    const at::Tensor q = apply_rope(at::linear(h, p.q).view({b, t, heads, hd}).transpose(1, 2), *call.rope);
    AttentionInputs in;
    in.q = q;
    in.q_pos = call.set->pos;
    in.q_valid = call.set->valid;
    in.q_doc = documents(*call.set);
    in.scale = scale_;
    const bool masked_docs = in.q_doc.defined();
    if (call.read_kv != nullptr) {
      in.k = call.read_kv->k;
      in.v = call.read_kv->v;
      in.k_pos = call.read_kv->keys.pos;
      in.k_valid = call.read_kv->keys.valid;
      in.k_doc = documents(call.read_kv->keys);
      in.plain_causal = call.set->full && call.read_kv->keys.full && !masked_docs;
    } else {
      in.k = apply_rope(at::linear(h, p.k).view({b, t, kv, hd}).transpose(1, 2), *call.rope);
      in.v = at::linear(h, p.v).view({b, t, kv, hd}).transpose(1, 2);
      in.k_pos = in.q_pos;
      in.k_valid = in.q_valid;
      in.k_doc = in.q_doc;
      in.plain_causal = call.set->full && !masked_docs;
      if (call.write_kv != nullptr) *call.write_kv = SharedKv{in.k, in.v, *call.set};
    }
    const at::Tensor attn = attention_.attend(in).transpose(1, 2).reshape({b, t, heads * hd});
    const at::Tensor a = x + at::linear(attn, p.o);
    const at::Tensor h2 = rms_norm(a, w_post, cfg_.rms_norm_eps);
    return a + at::linear(at::silu(at::linear(h2, p.gate)) * at::linear(h2, p.up), p.down);
  }

  // One pass of the shared block (recursion r) over the tokens of `set`.
  at::Tensor block(at::Tensor x, int64_t r, const ActiveSet& set, std::vector<SharedKv>& shared) const {
    const Rope rope = this->rope(set);
    const bool sharing = cfg_.kv_mode == KvMode::kShare;
    const int64_t first = static_cast<int64_t>(layout_.prelude.size());
    const int64_t width = static_cast<int64_t>(layout_.block.size());
    if (sharing && r == 0) shared.assign(width, SharedKv{});
    for (int64_t i = 0; i < width; ++i) {
      LayerCall call;
      call.set = &set;
      call.rope = &rope;
      if (sharing && r == 0) call.write_kv = &shared[i];
      if (sharing && r > 0) call.read_kv = &shared[i];
      x = run_layer(x, first + r * width + i, call);
    }
    return x;
  }

 private:
  const config::ModelConfig& cfg_;
  const Layout& layout_;
  const AttentionBackend& attention_;
  const std::vector<std::shared_ptr<MoRModel::LayerParams>>& layers_;
  const std::vector<std::pair<at::Tensor, at::Tensor>>& norms_;
  at::ScalarType dtype_;
  double scale_;
  at::Tensor segments_, rope_positions_;  // document masking, else undefined
  bool checkpoint_ = false;
};

// Mean of `values` over valid entries (all when valid is undefined).
at::Tensor masked_mean(const at::Tensor& values, const at::Tensor& valid) {
  if (!valid.defined()) return values.mean();
  const at::Tensor m = valid.to(values.scalar_type());
  return (values * m).sum() / m.sum().clamp_min(1.0);
}

double effective_capacity(double c, const config::ExpertRouterConfig& expert, const ForwardOptions& opt) {
  if (!opt.training || expert.capacity_warmup_steps <= 0) return c;
  const double s = std::min(1.0, static_cast<double>(opt.step) / expert.capacity_warmup_steps);
  return c + (1.0 - c) * 0.5 * (1.0 + std::cos(kPi * s));
}

}  // namespace

ForwardOutput MoRModel::forward(const at::Tensor& tokens_in, const ForwardOptions& opt) const {
  MOR_CHECK(tokens_in.defined() && tokens_in.dim() == 2, "forward: tokens must be a [batch, seq] tensor, got ",
            tokens_in.defined() ? tokens_in.dim() : 0, " dimensions");
  MOR_CHECK(!at::isFloatingType(tokens_in.scalar_type()) && tokens_in.scalar_type() != at::kBool,
            "forward: tokens must be an integer tensor");
  const int64_t batch = tokens_in.size(0), seq = tokens_in.size(1);
  MOR_CHECK(batch > 0 && seq > 0, "forward: empty token batch [", batch, ", ", seq, "]");
  MOR_CHECK(seq <= config_.max_seq_len, "forward: sequence length ", seq, " exceeds model.max_seq_len ",
            config_.max_seq_len);
  const at::Tensor tokens = tokens_in.to(device_, at::kLong);
  const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
  MOR_CHECK(lo >= 0 && hi < config_.vocab_size, "forward: token id ", lo < 0 ? lo : hi,
            " is outside the vocabulary [0, ", config_.vocab_size, ")");

  ForwardPass pass(config_, layout_, *attention_, layers_, norms_, dtype_);
  pass.set_checkpointing(opt.checkpoint_layers && opt.training);
  if (opt.documents.defined()) {
    MOR_CHECK(opt.documents.dim() == 2 && opt.documents.size(0) == batch && opt.documents.size(1) == seq,
              "forward: documents must be [batch, seq] like the tokens");
    MOR_CHECK(!at::isFloatingType(opt.documents.scalar_type()), "forward: documents must be integer ids");
    pass.set_documents(opt.documents.to(device_, at::kLong));
  }
  const ActiveSet all = ActiveSet::all_tokens(batch, seq, device_);
  const Rope full_rope = pass.rope(all);
  LayerCall plain;
  plain.set = &all;
  plain.rope = &full_rope;

  UnitHooks* hooks = opt.hooks;
  // Runs one layer outside the block, entering and leaving its unit.
  auto outer_layer = [&](const at::Tensor& x, int64_t unrolled) {
    const int64_t unit = unit_of_set_[layout_.unrolled[unrolled]];
    if (hooks == nullptr) return pass.run_layer(x, unrolled, plain);
    hooks->before(unit);
    return hooks->after(unit, pass.run_layer(x, unrolled, plain));
  };

  ForwardOutput out;
  if (hooks != nullptr) hooks->before(0);
  at::Tensor h = at::embedding(embed_, tokens);
  int64_t unrolled = 0;
  for (size_t i = 0; i < layout_.prelude.size(); ++i) h = outer_layer(h, unrolled++);
  if (hooks != nullptr && block_unit_ >= 0) hooks->before(block_unit_);

  at::Tensor depth = at::zeros({batch, seq}, tokens.options());
  const int64_t n_r = layout_.num_recursions;
  std::vector<SharedKv> shared;
  const auto& router = config_.router;
  const double inv_temp = 1.0 / router.temperature;

  if (n_r > 0 && router.kind == RouterKind::kNone) {
    for (int64_t r = 0; r < n_r; ++r) {
      h = pass.block(h, r, all, shared);
      out.recursions.push_back({all.count, all.count, all.count});
    }
    depth.fill_(n_r);
  } else if (router.kind == RouterKind::kExpert) {
    const auto& ex = router.expert;
    const std::vector<double> caps = config::resolved_capacities(config_);
    const bool topk =
        opt.training || opt.routing.value_or(config_.inference_routing) == config::RoutingMode::kTopk;
    std::vector<at::Tensor> bce, aux_bce, zsq, accuracy;
    ActiveSet cand = all;
    for (int64_t r = 0; r < n_r; ++r) {
      const at::Tensor x = cand.gather(h);
      const at::Tensor z = router_logits(*routers_[r], x * inv_temp).squeeze(-1);  // [B, Tc]
      const at::Tensor prob = ex.func == GateFunc::kTanh ? at::tanh(z) : at::sigmoid(z);
      const at::Tensor gate = prob * ex.alpha;
      at::Tensor z_aux;
      if (ex.aux == ExpertAux::kRouter)
        z_aux = router_logits(*aux_routers_[r], x.detach() * inv_temp).squeeze(-1);
      const at::Tensor& z_decide = ex.aux == ExpertAux::kRouter ? z_aux : z;
      const auto decide = [&] {
        return (ex.func == GateFunc::kTanh ? at::tanh(z_decide) : at::sigmoid(z_decide)) >= ex.threshold;
      };

      ActiveSet next;
      at::Tensor keep;  // [B, Tc] bool over the candidates
      if (topk) {
        MOR_CHECK(!cand.valid.defined(), "internal: top-k routing over padded candidates");
        const double c = effective_capacity(caps[r], ex, opt);
        int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::floor(c * seq + 1e-9)));
        k = std::min(k, cand.padded);
        if (k == cand.padded) {
          next = cand;
          next.local = at::Tensor();
          keep = at::ones_like(z, z.options().dtype(at::kBool));
        } else {
          const at::Tensor chosen = std::get<0>(std::get<1>(at::topk(gate.detach(), k, 1)).sort(1));
          next = cand.select_sorted(chosen);
          keep = at::zeros_like(z, z.options().dtype(at::kBool)).scatter_(1, chosen, true);
        }
      } else if (caps[r] >= 1.0) {
        next = cand;
        next.local = at::Tensor();
        keep = cand.valid_mask();
      } else {
        const at::NoGradGuard no_grad;
        keep = decide().logical_and(cand.valid_mask());
        next = cand.compact(keep);
      }
      out.recursions.push_back({cand.count, next.count, batch * next.padded});

      if (opt.training) {
        const at::Tensor target = keep.to(z.scalar_type());
        if (ex.aux == ExpertAux::kLoss) {
          bce.push_back(masked_mean(at::binary_cross_entropy_with_logits(z, target, {}, {}, 0), cand.valid));
        } else {
          aux_bce.push_back(
              masked_mean(at::binary_cross_entropy_with_logits(z_aux, target, {}, {}, 0), cand.valid));
        }
        if (router.z_loss_coeff > 0) zsq.push_back(masked_mean(z.pow(2), cand.valid));
        at::NoGradGuard no_grad;
        accuracy.push_back(masked_mean(decide().eq(keep).to(at::kDouble), cand.valid));
      }
      if (next.count == 0) break;

      const at::Tensor w = next.local.defined() ? gate.gather(1, next.local) : gate;
      const at::Tensor y = pass.block(next.gather(h), r, next, shared);
      h = next.gated_add(h, y, w);
      depth = next.increment(depth);
      cand = std::move(next);
    }
    auto sum = [](const std::vector<at::Tensor>& v) { return v.empty() ? at::Tensor() : at::stack(v).sum(); };
    out.router_bce = sum(bce);
    out.aux_router_bce = sum(aux_bce);
    out.z_loss = sum(zsq);
    if (!accuracy.empty()) out.router_accuracy = at::stack(accuracy).mean();
  } else if (router.kind == RouterKind::kToken) {
    const auto& tc = router.token;
    const at::Tensor x0 = h;
    const at::Tensor z = router_logits(*routers_[0], x0 * inv_temp);  // [B, T, N_r]
    const at::Tensor p = (tc.func == GateFunc::kSigmoid ? at::sigmoid(z) : at::softmax(z, -1)) * tc.alpha;
    at::Tensor choice;
    if (opt.training && opt.step < tc.balance_warmup_steps) {
      choice = at::full({batch, seq}, n_r - 1, tokens.options());
    } else {
      at::Tensor score = p.detach();
      if (tc.balancing == config::Balancing::kLossFree) score = score + balance_bias_.to(score.scalar_type());
      choice = score.argmax(-1);
    }
    const at::Tensor g = p.gather(-1, choice.unsqueeze(-1));  // [B, T, 1]
    at::Tensor cur = x0;
    for (int64_t r = 0; r < n_r; ++r) {
      const ActiveSet set = r == 0 ? all : all.compact(choice >= r);
      out.recursions.push_back({set.count, set.count, batch * set.padded});
      if (set.count == 0) break;
      cur = set.overwrite(cur, pass.block(set.gather(cur), r, set, shared));
    }
    h = x0 + g * cur;
    depth = choice + 1;
    out.depth_counts = at::bincount(choice.reshape(-1), {}, n_r).to(at::kDouble);
    if (opt.training) {
      if (tc.balancing == config::Balancing::kLoss) {
        const at::Tensor frac = out.depth_counts.to(p.scalar_type()) * (static_cast<double>(n_r) / (batch * seq));
        out.balance_loss = (p.mean(at::IntArrayRef{0, 1}) * frac).sum();
      }
      if (router.z_loss_coeff > 0) out.z_loss = at::logsumexp(z, -1).pow(2).mean();
    }
  }
  if (hooks != nullptr && block_unit_ >= 0) h = hooks->after(block_unit_, h);
  unrolled = static_cast<int64_t>(layout_.prelude.size()) + n_r * static_cast<int64_t>(layout_.block.size());
  for (size_t i = 0; i < layout_.coda.size(); ++i) h = outer_layer(h, unrolled++);

  out.logits = at::linear(rms_norm(h, final_norm_, config_.rms_norm_eps), lm_head_);
  if (hooks != nullptr) out.logits = hooks->after(0, out.logits);
  out.depth = depth;
  return out;
}

at::Tensor document_ids(const at::Tensor& tokens, int64_t eos_id) {
  MOR_CHECK(tokens.dim() == 2, "document_ids: tokens must be [batch, seq]");
  const at::Tensor is_eos = tokens.to(at::kLong).eq(eos_id).to(at::kLong);
  return is_eos.cumsum(1) - is_eos;  // the EOS belongs to the document it ends
}

LossTerms MoRModel::loss(const ForwardOutput& out, const at::Tensor& targets_in,
                         const LossOptions& options) const {
  MOR_CHECK(out.logits.defined(), "loss: forward output has no logits");
  const int64_t vocab = out.logits.size(-1);
  MOR_CHECK(targets_in.dim() == 2 && targets_in.size(0) == out.logits.size(0) &&
                targets_in.size(1) == out.logits.size(1),
            "loss: targets must be [batch, seq] matching the logits [", out.logits.size(0), ", ",
            out.logits.size(1), "]");
  const at::Tensor targets = targets_in.to(out.logits.device(), at::kLong).reshape(-1);
  const at::Tensor counted = targets.ne(-100);
  const int64_t n = counted.sum().item<int64_t>();
  if (n > 0) {
    const at::Tensor kept = targets.masked_select(counted);
    MOR_CHECK(kept.min().item<int64_t>() >= 0 && kept.max().item<int64_t>() < vocab,
              "loss: target token id outside the vocabulary [0, ", vocab, ") (use -100 to ignore a position)");
  }
  MOR_CHECK(options.normalizer >= 0, "loss: normalizer must be >= 0");
  const double norm = options.normalizer > 0 ? options.normalizer : std::max<double>(1.0, n);
  const at::Tensor logits = out.logits.scalar_type() == at::kDouble ? out.logits : out.logits.to(at::kFloat);
  const at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, vocab}), targets, {},
                                               at::Reduction::Sum, -100, 0.0);
  LossTerms terms;
  terms.targets = n;
  terms.lm = ce / norm;
  at::Tensor aux = at::zeros({}, logits.options());
  const auto& router = config_.router;
  auto add = [&](const at::Tensor& term, double coeff) {
    if (term.defined() && coeff != 0.0) aux = aux + term.to(aux.scalar_type()) * coeff;
  };
  add(out.router_bce, router.expert.aux_coeff);
  add(out.aux_router_bce, 1.0);
  add(out.balance_loss, router.token.balance_coeff);
  add(out.z_loss, router.z_loss_coeff);
  terms.aux = aux * (static_cast<double>(n) / norm);
  terms.total = terms.lm + terms.aux;
  return terms;
}

}  // namespace mor::model
