#include "support/reference_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace mor::testing {

using config::RouterKind;

namespace {

std::string key(const std::string& prefix, int64_t index, const std::string& suffix) {
  return prefix + std::to_string(index) + "." + suffix;
}

// Elementwise BCEWithLogits(z, y) = softplus(z) - z*y, written stably.
at::Tensor bce_with_logits(const at::Tensor& z, const at::Tensor& y) {
  return z.clamp_min(0) - z * y + at::log1p(at::exp(-z.abs()));
}

at::Tensor causal_tri(int64_t length) {
  return at::ones({length, length}, at::kBool).tril();
}

}  // namespace

ReferenceModel::ReferenceModel(const model::MoRModel& model)
    : cfg_(model.config()), layout_(model::make_layout(model.config())) {
  for (const auto& p : model.parameters()) {
    if (!weights_.emplace(p.name, p.tensor.to(at::kDouble)).second)
      throw std::runtime_error("reference: duplicate parameter name " + p.name);
  }
  heads_ = cfg_.num_heads;
  kv_heads_ = cfg_.num_kv_heads;
  head_dim_ = cfg_.resolved_head_dim();
}

ReferenceModel::LayerWeights ReferenceModel::layer_weights(
    int64_t unrolled, int64_t param_set,
    std::vector<std::map<std::string, at::Tensor>>* untied) const {
  const std::string base = "model.layers." + std::to_string(param_set) + ".";
  const bool per_layer_norms =
      cfg_.recursion.sharing != config::Sharing::kNone && !cfg_.recursion.share_norms;
  const std::string norm_base =
      per_layer_norms ? "model.unrolled_norms." + std::to_string(unrolled) + "." : base;
  LayerWeights w{weight(base + "self_attn.q_proj.weight"),
                 weight(base + "self_attn.k_proj.weight"),
                 weight(base + "self_attn.v_proj.weight"),
                 weight(base + "self_attn.o_proj.weight"),
                 weight(base + "mlp.gate_proj.weight"),
                 weight(base + "mlp.up_proj.weight"),
                 weight(base + "mlp.down_proj.weight"),
                 weight(norm_base + "input_layernorm.weight"),
                 weight(norm_base + "post_attention_layernorm.weight")};
  if (untied != nullptr) {
    auto& own = (*untied)[static_cast<size_t>(unrolled)];
    auto copy = [&own](const std::string& name, at::Tensor& t) {
      auto it = own.find(name);
      if (it == own.end())
        it = own.emplace(name, t.detach().clone().requires_grad_(true)).first;
      t = it->second;
    };
    copy("self_attn.q_proj.weight", w.q);
    copy("self_attn.k_proj.weight", w.k);
    copy("self_attn.v_proj.weight", w.v);
    copy("self_attn.o_proj.weight", w.o);
    copy("mlp.gate_proj.weight", w.gate);
    copy("mlp.up_proj.weight", w.up);
    copy("mlp.down_proj.weight", w.down);
    copy("input_layernorm.weight", w.norm_in);
    copy("post_attention_layernorm.weight", w.norm_post);
  }
  return w;
}

at::Tensor ReferenceModel::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  const at::Tensor ms = x.pow(2).mean({-1}, /*keepdim=*/true);
  return w * (x / at::sqrt(ms + cfg_.rms_norm_eps));
}

at::Tensor ReferenceModel::rope(const at::Tensor& x) const {
  const int64_t length = x.size(2);
  const int64_t half = head_dim_ / 2;
  const auto dopt = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor i = at::arange(half, dopt);
  const at::Tensor inv_freq = at::pow(cfg_.rope_theta, i * (-2.0 / static_cast<double>(head_dim_)));
  const at::Tensor pos = at::arange(length, dopt);
  const at::Tensor angle = pos.unsqueeze(1) * inv_freq.unsqueeze(0);  // [T, D/2]
  const at::Tensor emb = at::cat({angle, angle}, -1);                  // [T, D]
  const at::Tensor cos = emb.cos(), sin = emb.sin();
  const at::Tensor rotated =
      at::cat({-x.narrow(-1, half, head_dim_ - half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor ReferenceModel::decoder_layer(const at::Tensor& x, const LayerWeights& w,
                                         const at::Tensor& allowed, const Kv* shared,
                                         Kv* produced) const {
  const int64_t batch = x.size(0), length = x.size(1);
  const at::Tensor h = rms_norm(x, w.norm_in);
  const at::Tensor q =
      rope(at::matmul(h, w.q.t()).view({batch, length, heads_, head_dim_}).transpose(1, 2));
  at::Tensor k, v;
  if (shared != nullptr) {
    k = shared->k;
    v = shared->v;
  } else {
    k = rope(at::matmul(h, w.k.t()).view({batch, length, kv_heads_, head_dim_}).transpose(1, 2));
    v = at::matmul(h, w.v.t()).view({batch, length, kv_heads_, head_dim_}).transpose(1, 2);
    if (produced != nullptr) *produced = Kv{k, v};
  }
  // Query head hq reads KV head hq / (H / Hkv).
  const int64_t group = heads_ / kv_heads_;
  const at::Tensor k_full = k.repeat_interleave(group, 1);
  const at::Tensor v_full = v.repeat_interleave(group, 1);
  at::Tensor scores = at::matmul(q, k_full.transpose(-2, -1)) / std::sqrt(double(head_dim_));
  scores = scores.masked_fill(allowed.logical_not().unsqueeze(1),
                              -std::numeric_limits<double>::infinity());
  const at::Tensor probs = at::softmax(scores, -1);
  const at::Tensor attn =
      at::matmul(probs, v_full).transpose(1, 2).reshape({batch, length, heads_ * head_dim_});
  const at::Tensor a = x + at::matmul(attn, w.o.t());
  const at::Tensor h2 = rms_norm(a, w.norm_post);
  return a + at::matmul(at::silu(at::matmul(h2, w.gate.t())) * at::matmul(h2, w.up.t()),
                        w.down.t());
}

at::Tensor ReferenceModel::router_logits(const std::string& prefix, const at::Tensor& x) const {
  auto it = weights_.find(prefix + ".weight");
  if (it != weights_.end()) return at::matmul(x, it->second.t());
  const at::Tensor hidden = at::gelu(at::matmul(x, weight(prefix + ".fc1.weight").t()), "none");
  return at::matmul(hidden, weight(prefix + ".fc2.weight").t());
}

at::Tensor ReferenceModel::run_block(const at::Tensor& x, int64_t recursion,
                                     const at::Tensor& active, const at::Tensor& first_active,
                                     std::vector<Kv>& cache,
                                     std::vector<std::map<std::string, at::Tensor>>* untied) const {
  const int64_t length = x.size(1);
  const at::Tensor tri = causal_tri(length).unsqueeze(0);
  const at::Tensor eye = at::eye(length, at::kBool).unsqueeze(0);
  const bool share = cfg_.kv_mode == config::KvMode::kShare && recursion >= 1;
  // Keys of this recursion (or of recursion 0 when sharing) at positions <= the query's; the
  // diagonal keeps inactive rows finite (their outputs are discarded).
  const at::Tensor keys = share ? first_active : active;
  const at::Tensor allowed = keys.unsqueeze(1).logical_and(tri).logical_or(eye);
  const int64_t prelude = static_cast<int64_t>(layout_.prelude.size());
  const int64_t b = static_cast<int64_t>(layout_.block.size());
  if (recursion == 0) cache.assign(static_cast<size_t>(b), Kv{});
  at::Tensor h = x;
  for (int64_t i = 0; i < b; ++i) {
    const LayerWeights w =
        layer_weights(prelude + recursion * b + i, layout_.block[static_cast<size_t>(i)], untied);
    Kv* produced = recursion == 0 ? &cache[static_cast<size_t>(i)] : nullptr;
    const Kv* shared = share ? &cache[static_cast<size_t>(i)] : nullptr;
    h = decoder_layer(h, w, allowed, shared, produced);
  }
  return h;
}

ReferenceOutput ReferenceModel::forward(const at::Tensor& tokens,
                                        const ReferenceOptions& options) const {
  if (tokens.dim() != 2) throw std::runtime_error("reference: tokens must be [B, T]");
  const int64_t batch = tokens.size(0), length = tokens.size(1);
  const int64_t d = cfg_.hidden_size;
  ReferenceOutput out;
  std::vector<std::map<std::string, at::Tensor>>* untied = nullptr;
  if (options.untie_layers) {
    out.untied.resize(static_cast<size_t>(layout_.unrolled_depth()));
    untied = &out.untied;
  }
  const at::Tensor embed = weight("model.embed_tokens.weight");
  at::Tensor hidden = embed.index_select(0, tokens.reshape({-1}).to(at::kLong)).view({batch, length, d});
  const at::Tensor plain = causal_tri(length).unsqueeze(0).expand({batch, length, length});

  const int64_t prelude = static_cast<int64_t>(layout_.prelude.size());
  for (int64_t j = 0; j < prelude; ++j)
    hidden = decoder_layer(hidden, layer_weights(j, layout_.prelude[static_cast<size_t>(j)], untied),
                           plain, nullptr, nullptr);

  const int64_t n_rec = layout_.num_recursions;
  const int64_t b = static_cast<int64_t>(layout_.block.size());
  at::Tensor depth = at::zeros({batch, length}, at::kLong);
  const at::Tensor all = at::ones({batch, length}, at::kBool);
  const double temperature = cfg_.router.temperature;
  const double z_coeff = cfg_.router.z_loss_coeff;
  std::vector<Kv> cache;

  if (b > 0 && cfg_.router.kind == RouterKind::kNone) {
    for (int64_t r = 0; r < n_rec; ++r) {
      hidden = run_block(hidden, r, all, all, cache, untied);
      out.active.push_back(all);
    }
    depth.fill_(n_rec);
  } else if (b > 0 && cfg_.router.kind == RouterKind::kExpert) {
    const auto& ex = cfg_.router.expert;
    const std::vector<double> caps = config::resolved_capacities(cfg_);
    auto func = [&ex](const at::Tensor& v) {
      return ex.func == config::GateFunc::kTanh ? at::tanh(v) : at::sigmoid(v);
    };
    const bool topk = options.training || options.routing == config::RoutingMode::kTopk;
    at::Tensor prev = all, first_active;
    std::vector<at::Tensor> bce, aux_bce, zl, accuracy;
    for (int64_t r = 0; r < n_rec; ++r) {
      const at::Tensor z =
          router_logits("model.routers." + std::to_string(r), hidden / temperature).squeeze(-1);
      const at::Tensor g = ex.alpha * func(z);
      at::Tensor z_aux;
      if (ex.aux == config::ExpertAux::kRouter)
        z_aux = router_logits("model.aux_routers." + std::to_string(r),
                              hidden.detach() / temperature)
                    .squeeze(-1);
      const at::Tensor z_dec = (ex.aux == config::ExpertAux::kRouter ? z_aux : z).detach();
      const at::Tensor cand = prev;
      at::Tensor act;
      if (topk) {
        double c = caps[static_cast<size_t>(r)];
        if (options.training && ex.capacity_warmup_steps > 0) {
          const double s =
              std::min(1.0, double(options.step) / double(ex.capacity_warmup_steps));
          c = c + (1.0 - c) * 0.5 * (1.0 + std::cos(M_PI * s));
        }
        const int64_t k = std::max<int64_t>(1, int64_t(std::floor(c * double(length) + 1e-9)));
        act = at::zeros({batch, length}, at::kBool);
        for (int64_t row = 0; row < batch; ++row) {
          const int64_t n_cand = cand[row].sum().item<int64_t>();
          const int64_t kb = std::min(k, n_cand);
          if (kb == 0) continue;
          const at::Tensor scores = g[row].detach().masked_fill(
              cand[row].logical_not(), -std::numeric_limits<double>::infinity());
          const at::Tensor idx = std::get<1>(at::topk(scores, kb));
          act[row].index_fill_(0, idx, true);
        }
      } else {
        const at::Tensor decision = caps[static_cast<size_t>(r)] >= 1.0
                                        ? all
                                        : func(z_dec).ge(ex.threshold);
        act = cand.logical_and(decision);
      }
      if (r == 0) first_active = act;
      const at::Tensor y = run_block(hidden, r, act, first_active, cache, untied);
      hidden = hidden + (act.to(at::kDouble) * g).unsqueeze(-1) * y;
      depth = depth + act.to(at::kLong);
      out.active.push_back(act);
      out.candidates.push_back(cand);
      if (options.training) {
        const at::Tensor cf = cand.to(at::kDouble);
        const at::Tensor n = cf.sum();
        const at::Tensor target = act.to(at::kDouble);
        if (ex.aux == config::ExpertAux::kLoss)
          bce.push_back((bce_with_logits(z, target) * cf).sum() / n);
        else
          aux_bce.push_back((bce_with_logits(z_aux, target) * cf).sum() / n);
        if (z_coeff > 0) zl.push_back((z * z * cf).sum() / n);
        const at::Tensor agree =
            func(z_dec).ge(ex.threshold).eq(act).logical_and(cand).to(at::kDouble);
        accuracy.push_back(agree.sum() / n);
      }
      prev = act;
    }
    if (options.training) {
      if (!bce.empty()) out.router_bce = at::stack(bce).sum();
      if (!aux_bce.empty()) out.aux_router_bce = at::stack(aux_bce).sum();
      if (!zl.empty()) out.z_loss = at::stack(zl).sum();
      out.router_accuracy = at::stack(accuracy).mean();
    }
  } else if (b > 0 && cfg_.router.kind == RouterKind::kToken) {
    const auto& tk = cfg_.router.token;
    const at::Tensor x0 = hidden;
    const at::Tensor z = router_logits("model.router", x0 / temperature);  // [B, T, N]
    const at::Tensor p = tk.func == config::GateFunc::kSigmoid ? tk.alpha * at::sigmoid(z)
                                                               : tk.alpha * at::softmax(z, -1);
    at::Tensor s = p.detach();
    if (tk.balancing == config::Balancing::kLossFree && options.balance_bias.defined())
      s = s + options.balance_bias.to(at::kDouble);
    at::Tensor choice;
    if (options.training && options.step < tk.balance_warmup_steps)
      choice = at::full({batch, length}, n_rec - 1, at::kLong);
    else
      choice = s.argmax(-1);
    const at::Tensor g = p.gather(-1, choice.unsqueeze(-1)).squeeze(-1);
    at::Tensor cur = x0, first_active;
    for (int64_t r = 0; r < n_rec; ++r) {
      const at::Tensor act = choice.ge(r);
      if (r == 0) first_active = act;
      const at::Tensor y = run_block(cur, r, act, first_active, cache, untied);
      cur = at::where(act.unsqueeze(-1), y, cur);
      out.active.push_back(act);
    }
    hidden = x0 + g.unsqueeze(-1) * cur;
    depth = choice + 1;
    std::vector<at::Tensor> counts;
    for (int64_t i = 0; i < n_rec; ++i) counts.push_back(choice.eq(i).sum().to(at::kDouble));
    out.depth_counts = at::stack(counts);
    if (options.training) {
      if (tk.balancing == config::Balancing::kLoss) {
        const at::Tensor big_p = p.mean(at::IntArrayRef{0, 1});                                  // [N]
        const at::Tensor f = out.depth_counts * (double(n_rec) / double(batch * length));
        out.balance_loss = (big_p * f).sum();
      }
      if (z_coeff > 0) out.z_loss = at::logsumexp(z, {-1}).pow(2).mean();
    }
  }

  for (size_t c = 0; c < layout_.coda.size(); ++c) {
    const int64_t j = prelude + n_rec * b + static_cast<int64_t>(c);
    hidden = decoder_layer(hidden, layer_weights(j, layout_.coda[c], untied), plain, nullptr,
                           nullptr);
  }
  const at::Tensor head = cfg_.tie_embeddings ? embed : weight("lm_head.weight");
  out.logits = at::matmul(rms_norm(hidden, weight("model.norm.weight")), head.t());
  out.depth = depth;
  return out;
}

ReferenceLoss ReferenceModel::loss(const ReferenceOutput& out, const at::Tensor& targets,
                                   double normalizer) const {
  const at::Tensor valid = targets.ne(-100);
  const int64_t n = valid.sum().item<int64_t>();
  const double norm = normalizer > 0 ? normalizer : double(n);
  const at::Tensor logp = at::log_softmax(out.logits, -1);
  const at::Tensor safe = targets.masked_fill(valid.logical_not(), 0).to(at::kLong);
  const at::Tensor nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * valid.to(at::kDouble);
  ReferenceLoss result;
  result.targets = n;
  result.lm = nll.sum() / norm;
  at::Tensor aux = at::zeros({}, at::kDouble);
  if (out.router_bce.defined()) aux = aux + cfg_.router.expert.aux_coeff * out.router_bce;
  if (out.aux_router_bce.defined()) aux = aux + out.aux_router_bce;
  if (out.balance_loss.defined()) aux = aux + cfg_.router.token.balance_coeff * out.balance_loss;
  if (out.z_loss.defined()) aux = aux + cfg_.router.z_loss_coeff * out.z_loss;
  result.aux = aux * (double(n) / norm);
  result.total = result.lm + result.aux;
  return result;
}

}  // namespace mor::testing
