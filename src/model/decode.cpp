// MoRModel::forward_cached: incremental inference over an external K/V cache (see decode.h).
//
// The new tokens of all chunks are packed into one [N, d] tensor. Projections, routers and MLPs run
// on the packed rows of the tokens active at a layer; attention regroups them per chunk into a
// padded [C, H, Tq, D] batch whose keys are the chunk's cached K/V followed by the K/V of its new
// tokens in this slot, masked by original position (cached keys are all earlier: position -1).
// With a paged cache and a backend that has a paged kernel, short chunks (decode steps) skip the
// gather: every token is one query row over its slot's blocks in the pool (decode_layer).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>

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

struct MoRModel::DecodeGroup {
  FlightChunk* chunk = nullptr;
  std::vector<int64_t> rows;  // indices into chunk->tokens, ascending
  int64_t unrolled = 0;
};

at::Tensor MoRModel::decode_layer(const at::Tensor& x, const std::vector<DecodeGroup>& groups, KvCache& cache) const {
  const int64_t heads = config_.num_heads, kvh = config_.num_kv_heads, hd = config_.resolved_head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const CacheLayout& slots = cache_slots_;
  const int64_t set = layout_.unrolled[groups.front().unrolled];
  for (const auto& g : groups) {
    MOR_CHECK(layout_.unrolled[g.unrolled] == set, "internal: decode_layer over different parameter sets");
  }
  const LayerParams& p = *layers_[set];
  const int64_t m = x.size(0);
  const int64_t ng = static_cast<int64_t>(groups.size());
  std::vector<int64_t> pos_host, begin(static_cast<size_t>(ng)), len(static_cast<size_t>(ng));
  bool same_layer = true;
  for (int64_t gi = 0; gi < ng; ++gi) {
    const auto& g = groups[static_cast<size_t>(gi)];
    begin[static_cast<size_t>(gi)] = static_cast<int64_t>(pos_host.size());
    len[static_cast<size_t>(gi)] = static_cast<int64_t>(g.rows.size());
    for (int64_t r : g.rows) pos_host.push_back(g.chunk->start + r);
    same_layer = same_layer && g.unrolled == groups.front().unrolled;
  }
  // Norm weights: the parameter set's, or per unrolled layer (rows of different recursions differ).
  auto norm_weight = [&](bool input) -> at::Tensor {
    if (norms_.empty()) return input ? p.input_norm : p.post_norm;
    if (same_layer) {
      const auto& n = norms_[groups.front().unrolled];
      return input ? n.first : n.second;
    }
    std::vector<at::Tensor> w;
    for (int64_t gi = 0; gi < ng; ++gi) {
      const auto& n = norms_[groups[static_cast<size_t>(gi)].unrolled];
      w.push_back((input ? n.first : n.second).unsqueeze(0).expand({len[static_cast<size_t>(gi)], -1}));
    }
    return at::cat(w);
  };
  const at::Tensor pos = at::tensor(pos_host, at::kLong).to(device_).view({1, m});
  const Rope rope = make_rope(pos, hd, config_.rope_theta, dtype_);
  const at::Tensor h = rms_norm(x, norm_weight(true), config_.rms_norm_eps);
  const at::Tensor q = apply_rope(at::linear(h, p.q).view({1, m, heads, hd}).transpose(1, 2), rope)[0].transpose(0, 1);
  const at::Tensor k_new = apply_rope(at::linear(h, p.k).view({1, m, kvh, hd}).transpose(1, 2), rope)[0].transpose(0, 1);
  const at::Tensor v_new = at::linear(h, p.v).view({m, kvh, hd});

  // Bookkeeping of group gi's new K/V: appended to its write slot (none under KV sharing at
  // recursion > 0), the positions a chunk wrote to recursion-0 slots, tokens appended per slot.
  auto commit = [&](int64_t gi) {
    const auto& g = groups[static_cast<size_t>(gi)];
    const int64_t wslot = slots.write_slot[static_cast<size_t>(g.unrolled)];
    if (wslot < 0) return;
    const int64_t b = begin[static_cast<size_t>(gi)], n = len[static_cast<size_t>(gi)];
    cache.append(g.chunk->seq, wslot, k_new.narrow(0, b, n).contiguous(), v_new.narrow(0, b, n).contiguous());
    if (slots.slot_recursion[static_cast<size_t>(wslot)] == 0) {
      g.chunk->r0_pos.assign(pos_host.begin() + b, pos_host.begin() + b + n);
    }
    if (g.chunk->slot_appends.empty()) g.chunk->slot_appends.assign(static_cast<size_t>(slots.num_slots), 0);
    g.chunk->slot_appends[static_cast<size_t>(wslot)] += n;
  };

  // Paged attention (caches with paged storage, backends with a paged kernel) for groups of at most
  // kMaxPagedRows tokens -- decode steps and short prefill chunks: one query row per token, reading
  // the pool through its slot's block table. Longer chunks gather their K/V and call attend().
  constexpr int64_t kMaxPagedRows = 16;
  KvCache::Paged pool;
  const bool paged = cache.paged(&pool) && attention_->supports_paged(q);
  std::vector<int64_t> gathered, paged_groups;
  for (int64_t gi = 0; gi < ng; ++gi) {
    (paged && len[static_cast<size_t>(gi)] <= kMaxPagedRows ? paged_groups : gathered).push_back(gi);
  }
  std::vector<at::Tensor> parts(static_cast<size_t>(ng));  // attention output [n, H, D] per group

  // Gather path, step 1: read the cache of every gathered group before anything is appended.
  const int64_t ngg = static_cast<int64_t>(gathered.size());
  std::vector<at::Tensor> ks, vs;
  std::vector<std::vector<int64_t>> k_pos(static_cast<size_t>(ngg));
  for (int64_t j = 0; j < ngg; ++j) {
    const int64_t gi = gathered[static_cast<size_t>(j)];
    const auto& g = groups[static_cast<size_t>(gi)];
    const int64_t wslot = slots.write_slot[static_cast<size_t>(g.unrolled)];
    const int64_t rslot = slots.read_slot[static_cast<size_t>(g.unrolled)];
    auto [kc, vc] = cache.read(g.chunk->seq, rslot);
    const int64_t cached = kc.defined() ? kc.size(0) : 0;
    auto& kp = k_pos[static_cast<size_t>(j)];
    const int64_t b = begin[static_cast<size_t>(gi)], n = len[static_cast<size_t>(gi)];
    if (wslot >= 0) {
      // Keys: the cache (all earlier positions), then this layer's new tokens of the chunk.
      kp.assign(static_cast<size_t>(cached), -1);
      kp.insert(kp.end(), pos_host.begin() + b, pos_host.begin() + b + n);
      const at::Tensor kn = k_new.narrow(0, b, n), vn = v_new.narrow(0, b, n);
      ks.push_back(cached > 0 ? at::cat({kc, kn}) : kn);
      vs.push_back(cached > 0 ? at::cat({vc, vn}) : vn);
    } else {
      // KV sharing, recursion > 0: the recursion-0 slot; its tail is this chunk's own tokens.
      const auto& fresh = g.chunk->r0_pos;
      kp.assign(static_cast<size_t>(cached - static_cast<int64_t>(fresh.size())), -1);
      kp.insert(kp.end(), fresh.begin(), fresh.end());
      ks.push_back(kc);
      vs.push_back(vc);
    }
  }

  // Paged path. A group that writes appends its new K/V FIRST, so that its slot holds every key
  // its tokens see: token i of the chunk sees the slot's first cached_before + i + 1 keys (the
  // earlier positions, then the chunk's tokens up to itself). Appending before the other groups
  // attend is safe: a call holds at most one group per chunk and one chunk per sequence, so the
  // (sequence, slot) a group writes is read by no other group of the call (another chunk's group
  // reads its own sequence's slots; under KV sharing, the recursion-0 slot a group at recursion
  // r > 0 reads belongs to its own chunk, which wrote it in an earlier call), and the gathered
  // groups have already read their keys above.
  if (!paged_groups.empty()) {
    std::vector<int64_t> q_rows, kv_len;
    std::vector<std::vector<int32_t>> tables;  // per group
    std::vector<int64_t> row_group;            // per row: index into tables
    for (int64_t gi : paged_groups) {
      const auto& g = groups[static_cast<size_t>(gi)];
      const int64_t wslot = slots.write_slot[static_cast<size_t>(g.unrolled)];
      const int64_t rslot = slots.read_slot[static_cast<size_t>(g.unrolled)];
      const int64_t b = begin[static_cast<size_t>(gi)], n = len[static_cast<size_t>(gi)];
      if (wslot >= 0) {
        const int64_t before = cache.length(g.chunk->seq, wslot);
        commit(gi);
        for (int64_t i = 0; i < n; ++i) kv_len.push_back(before + i + 1);
      } else {
        // KV sharing, recursion > 0: the recursion-0 slot in position order, whose tail is this
        // chunk's own recursion-0 tokens; the token at position p sees the earlier tokens and the
        // chunk's recursion-0 tokens at positions <= p.
        const auto& fresh = g.chunk->r0_pos;
        const int64_t earlier = cache.length(g.chunk->seq, rslot) - static_cast<int64_t>(fresh.size());
        for (int64_t i = 0; i < n; ++i) {
          const int64_t p = pos_host[static_cast<size_t>(b + i)];
          kv_len.push_back(earlier + (std::upper_bound(fresh.begin(), fresh.end(), p) - fresh.begin()));
        }
      }
      tables.push_back(cache.blocks(g.chunk->seq, rslot));
      for (int64_t i = 0; i < n; ++i) {
        q_rows.push_back(b + i);
        row_group.push_back(static_cast<int64_t>(tables.size()) - 1);
      }
    }
    const int64_t rows = static_cast<int64_t>(q_rows.size());
    size_t width = 1;
    for (const auto& t : tables) width = std::max(width, t.size());
    std::vector<int32_t> table(static_cast<size_t>(rows) * width, 0);  // padding: block 0, never read
    std::vector<int32_t> lens(static_cast<size_t>(rows));
    int64_t max_len = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto& t = tables[static_cast<size_t>(row_group[static_cast<size_t>(r)])];
      const int64_t kl = kv_len[static_cast<size_t>(r)];
      MOR_CHECK(kl >= 1 && kl <= static_cast<int64_t>(t.size()) * pool.block_size,
                "internal: paged decode row sees ", kl, " keys of a slot with ", t.size(), " blocks");
      std::copy(t.begin(), t.end(), table.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(r) * width));
      lens[static_cast<size_t>(r)] = static_cast<int32_t>(kl);
      max_len = std::max(max_len, kl);
    }
    PagedAttentionInputs pin;
    pin.q = q.index_select(0, at::tensor(q_rows, at::kLong).to(device_));
    pin.k_pool = pool.k_pool;
    pin.v_pool = pool.v_pool;
    pin.block_table = at::tensor(table, at::kInt).view({rows, static_cast<int64_t>(width)}).to(device_);
    pin.kv_len = at::tensor(lens, at::kInt).to(device_);
    pin.max_kv_len = max_len;
    pin.scale = scale;
    const at::Tensor out = attention_->attend_paged(pin);  // [rows, H, D]
    int64_t offset = 0;
    for (int64_t gi : paged_groups) {
      const int64_t n = len[static_cast<size_t>(gi)];
      parts[static_cast<size_t>(gi)] = out.narrow(0, offset, n);
      offset += n;
    }
  }

  // Gather path, step 2: one padded batch over the gathered groups, then their appends.
  if (ngg > 0) {
    int64_t tq = 0, tk = 0;
    for (int64_t j = 0; j < ngg; ++j) {
      tq = std::max(tq, len[static_cast<size_t>(gathered[static_cast<size_t>(j)])]);
      tk = std::max<int64_t>(tk, static_cast<int64_t>(k_pos[static_cast<size_t>(j)].size()));
    }
    at::Tensor qb = at::zeros({ngg, tq, heads, hd}, q.options());
    at::Tensor kb = at::zeros({ngg, tk, kvh, hd}, q.options());
    at::Tensor vb = at::zeros({ngg, tk, kvh, hd}, q.options());
    std::vector<int64_t> qpos(static_cast<size_t>(ngg * tq), 0), kpos(static_cast<size_t>(ngg * tk), 0);
    std::vector<int64_t> qvalid(static_cast<size_t>(ngg * tq), 0), kvalid(static_cast<size_t>(ngg * tk), 0);
    for (int64_t j = 0; j < ngg; ++j) {
      const int64_t gi = gathered[static_cast<size_t>(j)];
      const int64_t b = begin[static_cast<size_t>(gi)], n = len[static_cast<size_t>(gi)];
      const auto& kp = k_pos[static_cast<size_t>(j)];
      const int64_t nk = static_cast<int64_t>(kp.size());
      qb[j].narrow(0, 0, n).copy_(q.narrow(0, b, n));
      kb[j].narrow(0, 0, nk).copy_(ks[static_cast<size_t>(j)]);
      vb[j].narrow(0, 0, nk).copy_(vs[static_cast<size_t>(j)]);
      for (int64_t i = 0; i < tq; ++i) {
        qpos[static_cast<size_t>(j * tq + i)] = pos_host[static_cast<size_t>(b + std::min(i, n - 1))];
        qvalid[static_cast<size_t>(j * tq + i)] = i < n;
      }
      for (int64_t t = 0; t < tk; ++t) {
        kpos[static_cast<size_t>(j * tk + t)] = kp[static_cast<size_t>(std::min(t, nk - 1))];
        kvalid[static_cast<size_t>(j * tk + t)] = t < nk;
      }
    }
    AttentionInputs in;
    in.q = qb.transpose(1, 2);
    in.k = kb.transpose(1, 2);
    in.v = vb.transpose(1, 2);
    in.q_pos = at::tensor(qpos, at::kLong).view({ngg, tq}).to(device_);
    in.k_pos = at::tensor(kpos, at::kLong).view({ngg, tk}).to(device_);
    in.q_valid = at::tensor(qvalid, at::kLong).view({ngg, tq}).to(device_, at::kBool);
    in.k_valid = at::tensor(kvalid, at::kLong).view({ngg, tk}).to(device_, at::kBool);
    in.scale = scale;
    const at::Tensor attn_b = attention_->attend(in).transpose(1, 2);  // [ngg, tq, H, D]
    for (int64_t j = 0; j < ngg; ++j) {
      const int64_t gi = gathered[static_cast<size_t>(j)];
      parts[static_cast<size_t>(gi)] = attn_b[j].narrow(0, 0, len[static_cast<size_t>(gi)]);
    }
    // Append the new K/V after every gathered group has read the cache.
    for (int64_t gi : gathered) commit(gi);
  }
  const at::Tensor attn = at::cat(parts).reshape({m, heads * hd});
  const at::Tensor a = x + at::linear(attn, p.o);
  const at::Tensor h2 = rms_norm(a, norm_weight(false), config_.rms_norm_eps);
  return a + at::linear(at::silu(at::linear(h2, p.gate)) * at::linear(h2, p.up), p.down);
}

namespace {

std::vector<int64_t> iota_rows(int64_t n) {
  std::vector<int64_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = i;
  return r;
}

}  // namespace

void MoRModel::decode_enter(const std::vector<FlightChunk*>& chunks, KvCache& cache) const {
  MOR_CHECK(!chunks.empty(), "decode_enter: no chunks");
  const auto& router = config_.router;
  const at::NoGradGuard no_grad;
  std::vector<int64_t> all_tokens;
  for (FlightChunk* c : chunks) {
    MOR_CHECK(!c->tokens.empty(), "forward_cached: sequence ", c->seq, " has an empty chunk");
    MOR_CHECK(c->start >= 0 && c->start + static_cast<int64_t>(c->tokens.size()) <= config_.max_seq_len,
              "forward_cached: sequence ", c->seq, " positions ", c->start, "..",
              c->start + static_cast<int64_t>(c->tokens.size()) - 1, " exceed model.max_seq_len ", config_.max_seq_len);
    for (int64_t t : c->tokens) {
      MOR_CHECK(t >= 0 && t < config_.vocab_size, "forward_cached: token id ", t, " is outside the vocabulary [0, ",
                config_.vocab_size, ")");
      all_tokens.push_back(t);
    }
  }
  at::Tensor h = at::embedding(embed_, at::tensor(all_tokens, at::kLong).to(device_));
  const int64_t first = static_cast<int64_t>(layout_.prelude.size());
  auto groups_at = [&](int64_t u) {
    std::vector<DecodeGroup> g;
    for (FlightChunk* c : chunks) g.push_back({c, iota_rows(static_cast<int64_t>(c->tokens.size())), u});
    return g;
  };
  for (int64_t u = 0; u < first; ++u) h = decode_layer(h, groups_at(u), cache);
  const int64_t n_r = layout_.num_recursions;
  int64_t offset = 0;
  for (FlightChunk* c : chunks) {
    const int64_t n = static_cast<int64_t>(c->tokens.size());
    c->h = h.narrow(0, offset, n);
    offset += n;
    c->depth.assign(static_cast<size_t>(n), 0);
    c->next_r = 0;
    c->in_block = n_r > 0;
    c->active = iota_rows(n);
    c->r0_pos.clear();
    if (router.kind == RouterKind::kToken) {
      const auto& tc = router.token;
      const at::Tensor z = router_logits(*routers_[0], c->h * (1.0 / router.temperature));  // [n, N_r]
      const at::Tensor p = (tc.func == GateFunc::kSigmoid ? at::sigmoid(z) : at::softmax(z, -1)) * tc.alpha;
      at::Tensor score = p;
      if (tc.balancing == config::Balancing::kLossFree) score = score + balance_bias_.to(score.scalar_type());
      const at::Tensor choice = score.argmax(-1);
      c->gate = p.gather(-1, choice.unsqueeze(-1));
      const at::Tensor ch = choice.to(at::kCPU);
      c->choice.assign(ch.data_ptr<int64_t>(), ch.data_ptr<int64_t>() + n);
      c->x0 = c->h;
    }
  }
}

void MoRModel::decode_recursion(const std::vector<FlightChunk*>& chunks, KvCache& cache) const {
  const at::NoGradGuard no_grad;
  const auto& router = config_.router;
  const int64_t first = static_cast<int64_t>(layout_.prelude.size());
  const int64_t width = static_cast<int64_t>(layout_.block.size());
  const int64_t n_r = layout_.num_recursions;
  const double inv_temp = 1.0 / router.temperature;
  const std::vector<double> caps =
      router.kind == RouterKind::kExpert ? config::resolved_capacities(config_) : std::vector<double>{};
  // 1. Which tokens of each chunk run this recursion (expert-choice: decided now, causally).
  struct Plan {
    FlightChunk* chunk;
    std::vector<int64_t> rows;
    at::Tensor weight;  // expert-choice gates of the rows [rows, 1]
  };
  std::vector<Plan> plans;
  for (FlightChunk* c : chunks) {
    if (!c->in_block) continue;
    const int64_t r = c->next_r;
    Plan pl{c, {}, {}};
    if (router.kind == RouterKind::kExpert) {
      const auto& ex = router.expert;
      const at::Tensor idx = at::tensor(c->active, at::kLong).to(device_);
      const at::Tensor x = c->h.index_select(0, idx);
      const at::Tensor z = router_logits(*routers_[r], x * inv_temp).squeeze(-1);
      const at::Tensor gate = (ex.func == GateFunc::kTanh ? at::tanh(z) : at::sigmoid(z)) * ex.alpha;
      std::vector<int64_t> keep_local;
      if (caps[r] >= 1.0) {
        pl.rows = c->active;
        keep_local = iota_rows(static_cast<int64_t>(c->active.size()));
      } else {
        const at::Tensor zd =
            ex.aux == ExpertAux::kRouter ? router_logits(*aux_routers_[r], x * inv_temp).squeeze(-1) : z;
        const at::Tensor keep = ((ex.func == GateFunc::kTanh ? at::tanh(zd) : at::sigmoid(zd)) >= ex.threshold).to(at::kCPU);
        const bool* kp = keep.data_ptr<bool>();
        for (size_t i = 0; i < c->active.size(); ++i) {
          if (kp[i]) {
            pl.rows.push_back(c->active[i]);
            keep_local.push_back(static_cast<int64_t>(i));
          }
        }
      }
      if (!pl.rows.empty()) pl.weight = gate.index_select(0, at::tensor(keep_local, at::kLong).to(device_)).unsqueeze(-1);
    } else if (router.kind == RouterKind::kToken) {
      for (size_t i = 0; i < c->choice.size(); ++i) {
        if (c->choice[i] >= r) pl.rows.push_back(static_cast<int64_t>(i));
      }
    } else {
      pl.rows = iota_rows(static_cast<int64_t>(c->tokens.size()));
    }
    if (pl.rows.empty()) {
      c->in_block = false;
      continue;
    }
    plans.push_back(std::move(pl));
  }
  if (plans.empty()) return;
  // 2. One batched pass through the block layers for every chunk's rows, each at its recursion.
  std::vector<at::Tensor> xs;
  for (const Plan& pl : plans) xs.push_back(pl.chunk->h.index_select(0, at::tensor(pl.rows, at::kLong).to(device_)));
  at::Tensor x = at::cat(xs);
  for (int64_t i = 0; i < width; ++i) {
    std::vector<DecodeGroup> groups;
    for (const Plan& pl : plans) groups.push_back({pl.chunk, pl.rows, first + pl.chunk->next_r * width + i});
    // Chunks whose layers map to different parameter sets (sequence-style sharing) run separately.
    std::map<int64_t, std::vector<size_t>> by_set;
    for (size_t g = 0; g < groups.size(); ++g) by_set[layout_.unrolled[groups[g].unrolled]].push_back(g);
    if (by_set.size() == 1) {
      x = decode_layer(x, groups, cache);
    } else {
      std::vector<int64_t> offsets = {0};
      for (const auto& g : groups) offsets.push_back(offsets.back() + static_cast<int64_t>(g.rows.size()));
      std::vector<at::Tensor> outs(groups.size());
      for (const auto& [set, members] : by_set) {
        std::vector<DecodeGroup> sub;
        std::vector<at::Tensor> in;
        for (size_t g : members) {
          sub.push_back(groups[g]);
          in.push_back(x.narrow(0, offsets[g], offsets[g + 1] - offsets[g]));
        }
        const at::Tensor y = decode_layer(at::cat(in), sub, cache);
        int64_t o = 0;
        for (size_t g : members) {
          const int64_t n = offsets[g + 1] - offsets[g];
          outs[g] = y.narrow(0, o, n);
          o += n;
        }
      }
      x = at::cat(outs);
    }
  }
  // 3. Write back: expert-choice h += gate * block(h); token-choice and plain recursion replace.
  int64_t offset = 0;
  for (Plan& pl : plans) {
    FlightChunk* c = pl.chunk;
    const int64_t n = static_cast<int64_t>(pl.rows.size());
    const at::Tensor y = x.narrow(0, offset, n);
    offset += n;
    const at::Tensor idx = at::tensor(pl.rows, at::kLong).to(device_);
    if (router.kind == RouterKind::kExpert) {
      c->h = c->h.index_add(0, idx, pl.weight * y);
      c->active = pl.rows;
    } else {
      c->h = c->h.index_copy(0, idx, y);
    }
    for (int64_t r : pl.rows) ++c->depth[static_cast<size_t>(r)];
    ++c->next_r;
    if (c->next_r >= n_r) c->in_block = false;
  }
}

at::Tensor MoRModel::decode_exit(const std::vector<FlightChunk*>& chunks, KvCache& cache, bool last_only) const {
  const at::NoGradGuard no_grad;
  std::vector<at::Tensor> hs;
  for (FlightChunk* c : chunks) {
    MOR_CHECK(!c->in_block, "internal: decode_exit for a chunk still in the block");
    hs.push_back(config_.router.kind == RouterKind::kToken ? c->x0 + c->gate * c->h : c->h);
  }
  at::Tensor h = at::cat(hs);
  const int64_t coda_first = static_cast<int64_t>(layout_.prelude.size()) +
                             layout_.num_recursions * static_cast<int64_t>(layout_.block.size());
  for (int64_t u = coda_first; u < coda_first + static_cast<int64_t>(layout_.coda.size()); ++u) {
    std::vector<DecodeGroup> groups;
    for (FlightChunk* c : chunks) groups.push_back({c, iota_rows(static_cast<int64_t>(c->tokens.size())), u});
    h = decode_layer(h, groups, cache);
  }
  if (last_only) {
    std::vector<int64_t> last;
    int64_t offset = 0;
    for (FlightChunk* c : chunks) {
      offset += static_cast<int64_t>(c->tokens.size());
      last.push_back(offset - 1);
    }
    h = h.index_select(0, at::tensor(last, at::kLong).to(device_));
  }
  return at::linear(rms_norm(h, final_norm_, config_.rms_norm_eps), lm_head_);
}

DecodeOutput MoRModel::forward_cached(const std::vector<DecodeChunk>& chunks, KvCache& cache,
                                      const DecodeOptions& options) const {
  MOR_CHECK(!chunks.empty(), "forward_cached: no chunks");
  std::vector<FlightChunk> flights(chunks.size());
  std::vector<FlightChunk*> ptrs;
  for (size_t i = 0; i < chunks.size(); ++i) {
    flights[i].seq = chunks[i].seq;
    flights[i].start = chunks[i].start;
    flights[i].tokens = chunks[i].tokens;
    ptrs.push_back(&flights[i]);
  }
  decode_enter(ptrs, cache);
  for (;;) {
    std::vector<FlightChunk*> in_block;
    for (FlightChunk* f : ptrs) {
      if (f->in_block) in_block.push_back(f);
    }
    if (in_block.empty()) break;
    decode_recursion(in_block, cache);
  }
  DecodeOutput out;
  out.logits = decode_exit(ptrs, cache, options.last_only);
  out.slot_appends.assign(static_cast<size_t>(cache_slots_.num_slots), 0);
  std::vector<int64_t> depth;
  out.offsets.push_back(0);
  for (const FlightChunk& f : flights) {
    depth.insert(depth.end(), f.depth.begin(), f.depth.end());
    out.offsets.push_back(static_cast<int64_t>(depth.size()));
    for (size_t s = 0; s < f.slot_appends.size(); ++s) out.slot_appends[s] += f.slot_appends[s];
  }
  out.depth = at::tensor(depth, at::kLong);
  return out;
}

}  // namespace mor::model
