// MoRModel::forward_cached: incremental inference over an external K/V cache (see decode.h).
//
// The new tokens of all chunks are packed into one [N, d] tensor. Projections, routers and MLPs run
// on the packed rows of the tokens active at a layer; attention regroups them per chunk into a
// padded [C, H, Tq, D] batch whose keys are the chunk's cached K/V followed by the K/V of its new
// tokens in this slot, masked by original position (cached keys are all earlier: position -1).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "mor/core/error.h"
#include "mor/model/decode.h"
#include "mor/model/layout.h"
#include "mor/model/model.h"
#include "model_internal.h"

namespace mor::model {

using config::ExpertAux;
using config::GateFunc;
using config::KvMode;
using config::RouterKind;

CacheLayout cache_layout(const config::ModelConfig& config) {
  const Layout layout = make_layout(config);
  CacheLayout out;
  out.kv_heads = config.num_kv_heads;
  out.head_dim = config.resolved_head_dim();
  const int64_t depth = layout.unrolled_depth();
  const int64_t first = static_cast<int64_t>(layout.prelude.size());
  const int64_t width = static_cast<int64_t>(layout.block.size());
  const int64_t block_end = first + layout.num_recursions * width;
  out.write_slot.assign(static_cast<size_t>(depth), -1);
  out.read_slot.assign(static_cast<size_t>(depth), -1);
  for (int64_t u = 0; u < depth; ++u) {
    const bool in_block = u >= first && u < block_end;
    const int64_t r = in_block ? (u - first) / width : -1;
    if (in_block && config.kv_mode == KvMode::kShare && r > 0) {
      out.read_slot[static_cast<size_t>(u)] = out.write_slot[static_cast<size_t>(u - r * width)];
      continue;
    }
    out.write_slot[static_cast<size_t>(u)] = out.num_slots;
    out.read_slot[static_cast<size_t>(u)] = out.num_slots;
    out.slot_recursion.push_back(r);
    out.slot_layer.push_back(u);
    ++out.num_slots;
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> ContiguousKvCache::read(int64_t seq, int64_t slot) {
  const auto it = kv_.find({seq, slot});
  if (it == kv_.end()) return {};
  return it->second;
}

void ContiguousKvCache::append(int64_t seq, int64_t slot, const at::Tensor& k, const at::Tensor& v) {
  auto& entry = kv_[{seq, slot}];
  if (!entry.first.defined()) {
    entry = {k.clone(), v.clone()};
  } else {
    entry = {at::cat({entry.first, k}), at::cat({entry.second, v})};
  }
}

int64_t ContiguousKvCache::length(int64_t seq, int64_t slot) const {
  const auto it = kv_.find({seq, slot});
  return it == kv_.end() ? 0 : it->second.first.size(0);
}

void ContiguousKvCache::drop(int64_t seq) {
  for (auto it = kv_.begin(); it != kv_.end();) {
    it = it->first.first == seq ? kv_.erase(it) : std::next(it);
  }
}

namespace {

// The packed new tokens of one call and, per slot, the positions each chunk appended in this call.
struct Packed {
  at::Tensor pos;       // [N] int64 position
  std::vector<int64_t> chunk_host, pos_host;
  int64_t chunks = 0;
};

}  // namespace

DecodeOutput MoRModel::forward_cached(const std::vector<DecodeChunk>& chunks, KvCache& cache,
                                      const DecodeOptions& options) const {
  MOR_CHECK(!chunks.empty(), "forward_cached: no chunks");
  const auto& router = config_.router;
  MOR_CHECK(router.kind != RouterKind::kExpert || config_.inference_routing == config::RoutingMode::kCausal,
            "forward_cached: top-k routing looks at future tokens and cannot decode incrementally (use causal)");
  const at::NoGradGuard no_grad;
  const CacheLayout slots = cache_layout(config_);
  const int64_t heads = config_.num_heads, kvh = config_.num_kv_heads, hd = config_.resolved_head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  // Pack the chunks.
  Packed pk;
  pk.chunks = static_cast<int64_t>(chunks.size());
  std::vector<int64_t> tokens_host;
  DecodeOutput out;
  out.offsets.push_back(0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const auto& ch = chunks[c];
    MOR_CHECK(!ch.tokens.empty(), "forward_cached: chunk ", c, " (sequence ", ch.seq, ") has no tokens");
    MOR_CHECK(ch.start >= 0 && ch.start + static_cast<int64_t>(ch.tokens.size()) <= config_.max_seq_len,
              "forward_cached: sequence ", ch.seq, " positions ", ch.start, "..",
              ch.start + static_cast<int64_t>(ch.tokens.size()) - 1, " exceed model.max_seq_len ",
              config_.max_seq_len);
    for (size_t j = 0; j < ch.tokens.size(); ++j) {
      MOR_CHECK(ch.tokens[j] >= 0 && ch.tokens[j] < config_.vocab_size, "forward_cached: token id ", ch.tokens[j],
                " is outside the vocabulary [0, ", config_.vocab_size, ")");
      tokens_host.push_back(ch.tokens[j]);
      pk.chunk_host.push_back(static_cast<int64_t>(c));
      pk.pos_host.push_back(ch.start + static_cast<int64_t>(j));
    }
    out.offsets.push_back(static_cast<int64_t>(tokens_host.size()));
  }
  const int64_t n = static_cast<int64_t>(tokens_host.size());
  pk.pos = at::tensor(pk.pos_host, at::kLong).to(device_);
  out.slot_appends.assign(static_cast<size_t>(slots.num_slots), 0);
  // Positions appended to each (slot, chunk) in this call, in order (KV sharing reads need them).
  std::vector<std::vector<std::vector<int64_t>>> appended(
      static_cast<size_t>(slots.num_slots), std::vector<std::vector<int64_t>>(chunks.size()));

  // One decoder layer over the packed tokens `rows` (indices into the N new tokens, ascending).
  auto layer = [&](const at::Tensor& x, int64_t unrolled, const std::vector<int64_t>& rows) {
    const LayerParams& p = *layers_[layout_.unrolled[unrolled]];
    const at::Tensor& w_in = norms_.empty() ? p.input_norm : norms_[unrolled].first;
    const at::Tensor& w_post = norms_.empty() ? p.post_norm : norms_[unrolled].second;
    const int64_t m = static_cast<int64_t>(rows.size());
    const at::Tensor row_idx = at::tensor(rows, at::kLong).to(device_);
    const at::Tensor pos = pk.pos.index_select(0, row_idx).view({1, m});
    const Rope rope = make_rope(pos, hd, config_.rope_theta, dtype_);
    const at::Tensor h = rms_norm(x, w_in, config_.rms_norm_eps);  // [m, d]
    // [m, H, D] after RoPE (rope tables are [1, 1, m, D]: apply on [1, H, m, D]).
    const at::Tensor q = apply_rope(at::linear(h, p.q).view({1, m, heads, hd}).transpose(1, 2), rope)[0].transpose(0, 1);
    const int64_t wslot = slots.write_slot[static_cast<size_t>(unrolled)];
    const int64_t rslot = slots.read_slot[static_cast<size_t>(unrolled)];
    at::Tensor k_new, v_new;
    if (wslot >= 0) {
      k_new = apply_rope(at::linear(h, p.k).view({1, m, kvh, hd}).transpose(1, 2), rope)[0].transpose(0, 1);
      v_new = at::linear(h, p.v).view({m, kvh, hd});
    }
    // Group the rows by chunk (rows are ascending, chunks contiguous).
    std::vector<std::pair<int64_t, int64_t>> groups;  // chunk, first index into rows
    for (int64_t i = 0; i < m; ++i) {
      const int64_t c = pk.chunk_host[static_cast<size_t>(rows[static_cast<size_t>(i)])];
      if (groups.empty() || groups.back().first != c) groups.push_back({c, i});
    }
    const int64_t g = static_cast<int64_t>(groups.size());
    std::vector<at::Tensor> ks, vs;
    std::vector<int64_t> q_len(static_cast<size_t>(g)), k_len(static_cast<size_t>(g));
    std::vector<std::vector<int64_t>> k_pos(static_cast<size_t>(g));
    for (int64_t gi = 0; gi < g; ++gi) {
      const int64_t c = groups[static_cast<size_t>(gi)].first;
      const int64_t begin = groups[static_cast<size_t>(gi)].second;
      const int64_t end = gi + 1 < g ? groups[static_cast<size_t>(gi + 1)].second : m;
      q_len[static_cast<size_t>(gi)] = end - begin;
      const int64_t seq = chunks[static_cast<size_t>(c)].seq;
      auto [kc, vc] = cache.read(seq, rslot);
      const int64_t cached = kc.defined() ? kc.size(0) : 0;
      auto& kp = k_pos[static_cast<size_t>(gi)];
      if (wslot >= 0) {
        // Keys: the cache (all earlier positions), then this layer's new tokens of the chunk.
        kp.assign(static_cast<size_t>(cached), -1);
        for (int64_t i = begin; i < end; ++i) kp.push_back(pk.pos_host[static_cast<size_t>(rows[static_cast<size_t>(i)])]);
        const at::Tensor kn = k_new.narrow(0, begin, end - begin), vn = v_new.narrow(0, begin, end - begin);
        ks.push_back(cached > 0 ? at::cat({kc, kn}) : kn);
        vs.push_back(cached > 0 ? at::cat({vc, vn}) : vn);
      } else {
        // KV sharing, recursion > 0: the recursion-0 slot, whose tail was appended in this call.
        const auto& fresh = appended[static_cast<size_t>(rslot)][static_cast<size_t>(c)];
        kp.assign(static_cast<size_t>(cached - static_cast<int64_t>(fresh.size())), -1);
        kp.insert(kp.end(), fresh.begin(), fresh.end());
        ks.push_back(kc);
        vs.push_back(vc);
      }
      k_len[static_cast<size_t>(gi)] = static_cast<int64_t>(kp.size());
    }
    const int64_t tq = *std::max_element(q_len.begin(), q_len.end());
    const int64_t tk = *std::max_element(k_len.begin(), k_len.end());
    // Padded per-chunk batches for the attention backend.
    at::Tensor qb = at::zeros({g, tq, heads, hd}, q.options());
    at::Tensor kb = at::zeros({g, tk, kvh, hd}, q.options());
    at::Tensor vb = at::zeros({g, tk, kvh, hd}, q.options());
    std::vector<int64_t> qpos_host(static_cast<size_t>(g * tq), 0), kpos_host(static_cast<size_t>(g * tk), 0);
    std::vector<uint8_t> qvalid(static_cast<size_t>(g * tq), 0), kvalid(static_cast<size_t>(g * tk), 0);
    for (int64_t gi = 0; gi < g; ++gi) {
      const int64_t begin = groups[static_cast<size_t>(gi)].second, len = q_len[static_cast<size_t>(gi)];
      qb[gi].narrow(0, 0, len).copy_(q.narrow(0, begin, len));
      kb[gi].narrow(0, 0, k_len[static_cast<size_t>(gi)]).copy_(ks[static_cast<size_t>(gi)]);
      vb[gi].narrow(0, 0, k_len[static_cast<size_t>(gi)]).copy_(vs[static_cast<size_t>(gi)]);
      for (int64_t i = 0; i < tq; ++i) {
        const int64_t src = begin + std::min(i, len - 1);  // padding repeats the last valid query
        qpos_host[static_cast<size_t>(gi * tq + i)] = pk.pos_host[static_cast<size_t>(rows[static_cast<size_t>(src)])];
        qvalid[static_cast<size_t>(gi * tq + i)] = i < len;
      }
      const auto& kp = k_pos[static_cast<size_t>(gi)];
      for (int64_t j = 0; j < tk; ++j) {
        const int64_t src = std::min<int64_t>(j, static_cast<int64_t>(kp.size()) - 1);
        kpos_host[static_cast<size_t>(gi * tk + j)] = kp[static_cast<size_t>(src)];
        kvalid[static_cast<size_t>(gi * tk + j)] = j < static_cast<int64_t>(kp.size());
      }
    }
    AttentionInputs in;
    in.q = qb.transpose(1, 2);
    in.k = kb.transpose(1, 2);
    in.v = vb.transpose(1, 2);
    in.q_pos = at::tensor(qpos_host, at::kLong).view({g, tq}).to(device_);
    in.k_pos = at::tensor(kpos_host, at::kLong).view({g, tk}).to(device_);
    in.q_valid = at::tensor(std::vector<int64_t>(qvalid.begin(), qvalid.end()), at::kLong).view({g, tq}).to(device_, at::kBool);
    in.k_valid = at::tensor(std::vector<int64_t>(kvalid.begin(), kvalid.end()), at::kLong).view({g, tk}).to(device_, at::kBool);
    in.scale = scale;
    const at::Tensor attn_b = attention_->attend(in).transpose(1, 2);  // [g, tq, H, D]
    std::vector<at::Tensor> parts;
    for (int64_t gi = 0; gi < g; ++gi) parts.push_back(attn_b[gi].narrow(0, 0, q_len[static_cast<size_t>(gi)]));
    const at::Tensor attn = at::cat(parts).reshape({m, heads * hd});
    // Append this layer's K/V to the cache after every group has read it.
    if (wslot >= 0) {
      for (int64_t gi = 0; gi < g; ++gi) {
        const int64_t c = groups[static_cast<size_t>(gi)].first;
        const int64_t begin = groups[static_cast<size_t>(gi)].second, len = q_len[static_cast<size_t>(gi)];
        cache.append(chunks[static_cast<size_t>(c)].seq, wslot, k_new.narrow(0, begin, len).contiguous(),
                     v_new.narrow(0, begin, len).contiguous());
        auto& fresh = appended[static_cast<size_t>(wslot)][static_cast<size_t>(c)];
        for (int64_t i = begin; i < begin + len; ++i) fresh.push_back(pk.pos_host[static_cast<size_t>(rows[static_cast<size_t>(i)])]);
      }
      out.slot_appends[static_cast<size_t>(wslot)] += m;
    }
    const at::Tensor a = x + at::linear(attn, p.o);
    const at::Tensor h2 = rms_norm(a, w_post, config_.rms_norm_eps);
    return a + at::linear(at::silu(at::linear(h2, p.gate)) * at::linear(h2, p.up), p.down);
  };

  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  const int64_t first = static_cast<int64_t>(layout_.prelude.size());
  const int64_t width = static_cast<int64_t>(layout_.block.size());
  const int64_t n_r = layout_.num_recursions;
  auto block = [&](at::Tensor x, int64_t r, const std::vector<int64_t>& rows) {
    for (int64_t i = 0; i < width; ++i) x = layer(x, first + r * width + i, rows);
    return x;
  };
  auto select = [&](const at::Tensor& h, const std::vector<int64_t>& rows) {
    return h.index_select(0, at::tensor(rows, at::kLong).to(device_));
  };

  at::Tensor h = at::embedding(embed_, at::tensor(tokens_host, at::kLong).to(device_));  // [N, d]
  for (int64_t u = 0; u < first; ++u) h = layer(h, u, all);
  std::vector<int64_t> depth(static_cast<size_t>(n), 0);
  const double inv_temp = 1.0 / router.temperature;

  if (n_r > 0 && router.kind == RouterKind::kNone) {
    for (int64_t r = 0; r < n_r; ++r) h = block(h, r, all);
    std::fill(depth.begin(), depth.end(), n_r);
  } else if (router.kind == RouterKind::kExpert) {
    const auto& ex = router.expert;
    const std::vector<double> caps = config::resolved_capacities(config_);
    std::vector<int64_t> cand = all;
    for (int64_t r = 0; r < n_r && !cand.empty(); ++r) {
      const at::Tensor idx = at::tensor(cand, at::kLong).to(device_);
      const at::Tensor x = h.index_select(0, idx);
      const at::Tensor z = router_logits(*routers_[r], x * inv_temp).squeeze(-1);  // [Nc]
      const at::Tensor gate = (ex.func == GateFunc::kTanh ? at::tanh(z) : at::sigmoid(z)) * ex.alpha;
      std::vector<int64_t> next, keep_local;
      if (caps[r] >= 1.0) {
        next = cand;
        for (size_t i = 0; i < cand.size(); ++i) keep_local.push_back(static_cast<int64_t>(i));
      } else {
        const at::Tensor z_decide =
            ex.aux == ExpertAux::kRouter ? router_logits(*aux_routers_[r], x * inv_temp).squeeze(-1) : z;
        const at::Tensor keep =
            ((ex.func == GateFunc::kTanh ? at::tanh(z_decide) : at::sigmoid(z_decide)) >= ex.threshold).to(at::kCPU);
        const bool* kp = keep.data_ptr<bool>();
        for (size_t i = 0; i < cand.size(); ++i) {
          if (kp[i]) {
            next.push_back(cand[i]);
            keep_local.push_back(static_cast<int64_t>(i));
          }
        }
      }
      if (next.empty()) break;
      const at::Tensor w = gate.index_select(0, at::tensor(keep_local, at::kLong).to(device_)).unsqueeze(-1);
      const at::Tensor y = block(select(h, next), r, next);
      h = h.index_add(0, at::tensor(next, at::kLong).to(device_), w * y);
      for (int64_t i : next) ++depth[static_cast<size_t>(i)];
      cand = std::move(next);
    }
  } else if (router.kind == RouterKind::kToken) {
    const auto& tc = router.token;
    const at::Tensor x0 = h;
    const at::Tensor z = router_logits(*routers_[0], x0 * inv_temp);  // [N, N_r]
    const at::Tensor p = (tc.func == GateFunc::kSigmoid ? at::sigmoid(z) : at::softmax(z, -1)) * tc.alpha;
    at::Tensor score = p;
    if (tc.balancing == config::Balancing::kLossFree) score = score + balance_bias_.to(score.scalar_type());
    const at::Tensor choice = score.argmax(-1);
    const at::Tensor g = p.gather(-1, choice.unsqueeze(-1));  // [N, 1]
    const at::Tensor choice_host = choice.to(at::kCPU);
    const int64_t* ch = choice_host.data_ptr<int64_t>();
    at::Tensor cur = x0;
    for (int64_t r = 0; r < n_r; ++r) {
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < n; ++i) {
        if (ch[i] >= r) rows.push_back(i);
      }
      if (rows.empty()) break;
      const at::Tensor idx = at::tensor(rows, at::kLong).to(device_);
      cur = cur.index_copy(0, idx, block(cur.index_select(0, idx), r, rows));
    }
    h = x0 + g * cur;
    for (int64_t i = 0; i < n; ++i) depth[static_cast<size_t>(i)] = ch[i] + 1;
  }
  const int64_t coda_first = first + n_r * width;
  for (int64_t u = coda_first; u < coda_first + static_cast<int64_t>(layout_.coda.size()); ++u) h = layer(h, u, all);

  at::Tensor final_h = h;
  if (options.last_only) {
    std::vector<int64_t> last;
    for (size_t c = 0; c < chunks.size(); ++c) last.push_back(out.offsets[c + 1] - 1);
    final_h = select(h, last);
  }
  out.logits = at::linear(rms_norm(final_h, final_norm_, config_.rms_norm_eps), lm_head_);
  out.depth = at::tensor(depth, at::kLong);
  return out;
}

}  // namespace mor::model
