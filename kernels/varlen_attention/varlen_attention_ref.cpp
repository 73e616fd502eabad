// ATen reference of varlen_attention (the oracle of the CUDA kernels): an explicit boolean mask
// [total_q, total_k] (same segment and causal within it), dense float64 scores per query head,
// masked softmax, and the backward in closed form. Memory O(Hq * total_q * total_k).
#include <ATen/ATen.h>

#include <limits>
#include <string>

#include "mor/core/error.h"
#include "varlen_attention/varlen_attention.h"

namespace mor::kernels {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

struct Problem {
  int64_t total_q = 0, total_k = 0, hq = 0, hkv = 0, d = 0, group = 1;
};

// Validates cu [S+1] (int32, ascending from 0 to total, on `device`, segment lengths within
// max_len) and returns it as int64 on the CPU.
at::Tensor check_cu(const at::Tensor& cu, int64_t total, int64_t max_len, const at::Device& device,
                    const char* fn, const char* name, const char* max_name) {
  MOR_CHECK(cu.defined(), fn, ": ", name, " is undefined");
  MOR_CHECK(cu.dim() == 1 && cu.numel() >= 1, fn, ": ", name, " must be 1-D [S+1], got ", cu.sizes());
  MOR_CHECK(cu.scalar_type() == at::kInt, fn, ": ", name, " must be int32, got ", cu.scalar_type());
  MOR_CHECK(cu.device() == device, fn, ": ", name, " is on ", cu.device(), " but the tensors are on ", device);
  const at::Tensor c = cu.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  const int64_t n = c.numel();
  MOR_CHECK(p[0] == 0, fn, ": ", name, "[0] must be 0, got ", p[0]);
  MOR_CHECK(p[n - 1] == total, fn, ": ", name, "[S] = ", p[n - 1], " but the tensor has ", total, " rows");
  for (int64_t s = 0; s + 1 < n; ++s) {
    const int64_t len = p[s + 1] - p[s];
    MOR_CHECK(len >= 0, fn, ": ", name, " must ascend, but ", name, "[", s + 1, "] = ", p[s + 1], " < ", name, "[",
              s, "] = ", p[s]);
    MOR_CHECK(len <= max_len, fn, ": segment ", s, " has ", len, " rows in ", name, ", more than ", max_name, " = ",
              max_len);
  }
  return c;
}

// Segment id of every row, from the CPU int64 cu [S+1].
at::Tensor segment_of_rows(const at::Tensor& cu, int64_t total) {
  const int64_t segments = cu.numel() - 1;
  const at::Tensor lens = cu.slice(0, 1) - cu.slice(0, 0, segments);
  return at::repeat_interleave(at::arange(segments, at::kLong), lens, /*dim=*/0, /*output_size=*/total);
}

// Validates positions [total] int32, ascending within each segment.
void check_pos(const at::Tensor& pos, const at::Tensor& seg, int64_t total, const at::Device& device,
               const char* fn, const char* name) {
  MOR_CHECK(pos.defined(), fn, ": kCausalPos needs ", name);
  MOR_CHECK(pos.dim() == 1 && pos.size(0) == total, fn, ": ", name, " must be [", total, "], got ", pos.sizes());
  MOR_CHECK(pos.scalar_type() == at::kInt, fn, ": ", name, " must be int32, got ", pos.scalar_type());
  MOR_CHECK(pos.device() == device, fn, ": ", name, " is on ", pos.device(), " but the tensors are on ", device);
  if (total < 2) return;
  const at::Tensor p = pos.to(at::kCPU, at::kLong);
  const at::Tensor descending = (p.slice(0, 1) < p.slice(0, 0, total - 1))
                                    .logical_and(seg.slice(0, 1) == seg.slice(0, 0, total - 1));
  MOR_CHECK(!descending.any().item<bool>(), fn, ": ", name, " must ascend within each segment");
}

Problem check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const char* fn) {
  MOR_CHECK(q.defined() && k.defined() && v.defined(), fn, ": q, k and v must be defined");
  MOR_CHECK(q.dim() == 3, fn, ": q must be [total_q, Hq, D], got ", q.sizes());
  MOR_CHECK(k.dim() == 3, fn, ": k must be [total_k, Hkv, D], got ", k.sizes());
  MOR_CHECK(v.sizes() == k.sizes(), fn, ": v ", v.sizes(), " must have k's shape ", k.sizes());
  MOR_CHECK(q.size(2) == k.size(2), fn, ": q head dim ", q.size(2), " differs from k head dim ", k.size(2));
  MOR_CHECK(q.is_floating_point(), fn, ": q must be floating point, got ", q.scalar_type());
  MOR_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), fn,
            ": q, k and v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  MOR_CHECK(k.device() == q.device() && v.device() == q.device(), fn, ": q, k and v must be on one device");
  Problem pr;
  pr.total_q = q.size(0);
  pr.total_k = k.size(0);
  pr.hq = q.size(1);
  pr.hkv = k.size(1);
  pr.d = q.size(2);
  MOR_CHECK(pr.hkv > 0 && pr.hq % pr.hkv == 0, fn, ": Hq = ", pr.hq, " must be a multiple of Hkv = ", pr.hkv);
  pr.group = pr.hq / pr.hkv;
  return pr;
}

// The visibility mask [total_q, total_k] on q's device, after validating the segment arguments.
at::Tensor build_mask(const Problem& pr, const at::Device& device, const VarlenArgs& args, const char* fn) {
  MOR_CHECK(args.mask == Mask::kCausalIndex || args.mask == Mask::kCausalPos, fn, ": unknown mask mode ",
            static_cast<int>(args.mask));
  MOR_CHECK(args.cu_q.defined() && args.cu_k.defined(), fn, ": cu_q and cu_k must be defined");
  MOR_CHECK(args.cu_q.numel() == args.cu_k.numel(), fn, ": cu_q has ", args.cu_q.numel() - 1,
            " segments but cu_k has ", args.cu_k.numel() - 1);
  const at::Tensor cu_q = check_cu(args.cu_q, pr.total_q, args.max_q, device, fn, "cu_q", "max_q");
  const at::Tensor cu_k = check_cu(args.cu_k, pr.total_k, args.max_k, device, fn, "cu_k", "max_k");
  const at::Tensor seg_q = segment_of_rows(cu_q, pr.total_q), seg_k = segment_of_rows(cu_k, pr.total_k);
  const at::Tensor same = seg_q.to(device).unsqueeze(1) == seg_k.to(device).unsqueeze(0);
  if (args.mask == Mask::kCausalIndex) {
    // As in the CUDA entry points: positions with kCausalIndex are a caller mix-up, not ignored.
    MOR_CHECK(!args.q_pos.defined() && !args.k_pos.defined(), fn,
              ": q_pos/k_pos are only taken with Mask::kCausalPos");
    const at::Tensor local_q = at::arange(pr.total_q, at::kLong) - cu_q.index_select(0, seg_q);
    const at::Tensor local_k = at::arange(pr.total_k, at::kLong) - cu_k.index_select(0, seg_k);
    return same.logical_and(local_k.to(device).unsqueeze(0) <= local_q.to(device).unsqueeze(1));
  }
  check_pos(args.q_pos, seg_q, pr.total_q, device, fn, "q_pos");
  check_pos(args.k_pos, seg_k, pr.total_k, device, fn, "k_pos");
  return same.logical_and(args.k_pos.to(at::kLong).unsqueeze(0) <= args.q_pos.to(at::kLong).unsqueeze(1));
}

// [T, H, D] (any dtype, any strides) -> [H, T, D] float64.
at::Tensor heads_first(const at::Tensor& x) { return x.to(at::kDouble).permute({1, 0, 2}); }

// k/v [total_k, Hkv, D] -> [Hq, total_k, D] float64, kv head h/group serving query head h.
at::Tensor expand_kv(const at::Tensor& x, int64_t group) {
  const at::Tensor h = heads_first(x);
  if (group == 1) return h;
  return h.unsqueeze(1).expand({h.size(0), group, h.size(1), h.size(2)}).reshape({-1, h.size(1), h.size(2)});
}

// Softmax probabilities [Hq, Tq, Tk] (0 where masked) and lse [Hq, Tq] (-inf for rows without a
// visible key) of the scaled scores, all float64.
std::pair<at::Tensor, at::Tensor> probabilities(const at::Tensor& q64, const at::Tensor& k64, const at::Tensor& mask,
                                                double scale) {
  at::Tensor s = at::matmul(q64, k64.transpose(1, 2)).mul_(scale);
  s.masked_fill_(mask.logical_not(), kNegInf);
  at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
  m.masked_fill_(m.isneginf(), 0.0);
  at::Tensor e = s.sub_(m).exp_();  // exactly 0 where masked
  const at::Tensor z = e.sum(-1, /*keepdim=*/true);
  const at::Tensor lse = (m + z.log()).squeeze(-1);  // log(0) = -inf for rows without keys
  // z >= 1 wherever a key is visible (the maximum contributes exp(0)), so the clamp only turns
  // 0/0 into 0 for the rows without keys.
  e.div_(z.clamp_min(1.0));
  return {e, lse};
}

}  // namespace

VarlenOut varlen_attention_fwd_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const VarlenArgs& args) {
  constexpr const char* fn = "varlen_attention_fwd_ref";
  const Problem pr = check_qkv(q, k, v, fn);
  const at::Tensor mask = build_mask(pr, q.device(), args, fn);
  VarlenOut res;
  if (pr.total_q == 0 || pr.total_k == 0 || pr.hq == 0) {
    res.out = at::zeros({pr.total_q, pr.hq, pr.d}, q.options());
    res.lse = at::full({pr.hq, pr.total_q}, kNegInf, q.options().dtype(at::kFloat));
    return res;
  }
  const at::Tensor v64 = expand_kv(v, pr.group);
  auto [p, lse] = probabilities(heads_first(q), expand_kv(k, pr.group), mask, args.scale);
  res.out = at::matmul(p, v64).permute({1, 0, 2}).to(q.scalar_type()).contiguous();
  res.lse = lse.to(at::kFloat).contiguous();
  return res;
}

// The saved out and lse are validated but recomputed in float64: the fp32 lse and an out in q's
// dtype would only cost precision, and the result is then the exact gradient of the forward.
VarlenGrads varlen_attention_bwd_ref(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                     const VarlenArgs& args) {
  constexpr const char* fn = "varlen_attention_bwd_ref";
  const Problem pr = check_qkv(q, k, v, fn);
  MOR_CHECK(dout.defined() && dout.sizes() == q.sizes(), fn, ": dout must have q's shape ", q.sizes());
  MOR_CHECK(out.defined() && out.sizes() == q.sizes(), fn, ": out must have q's shape ", q.sizes());
  MOR_CHECK(lse.defined() && lse.dim() == 2 && lse.size(0) == pr.hq && lse.size(1) == pr.total_q, fn,
            ": lse must be [Hq, total_q] = [", pr.hq, ", ", pr.total_q, "], got ",
            lse.defined() ? lse.sizes() : at::IntArrayRef{});
  MOR_CHECK(dout.device() == q.device() && out.device() == q.device() && lse.device() == q.device(), fn,
            ": dout, out and lse must be on q's device");
  MOR_CHECK(dout.is_floating_point(), fn, ": dout must be floating point");
  const at::Tensor mask = build_mask(pr, q.device(), args, fn);
  VarlenGrads g;
  if (pr.total_q == 0 || pr.total_k == 0 || pr.hq == 0) {
    g.dq = at::zeros({pr.total_q, pr.hq, pr.d}, q.options());
    g.dk = at::zeros({pr.total_k, pr.hkv, pr.d}, q.options());
    g.dv = at::zeros({pr.total_k, pr.hkv, pr.d}, q.options());
    return g;
  }
  const at::Tensor q64 = heads_first(q), k64 = expand_kv(k, pr.group), v64 = expand_kv(v, pr.group);
  const at::Tensor do64 = heads_first(dout);
  const at::Tensor p = probabilities(q64, k64, mask, args.scale).first;  // [Hq, Tq, Tk]
  const at::Tensor o64 = at::matmul(p, v64);
  const at::Tensor dv_h = at::matmul(p.transpose(1, 2), do64);                   // [Hq, Tk, D]
  const at::Tensor dp = at::matmul(do64, v64.transpose(1, 2));                   // [Hq, Tq, Tk]
  const at::Tensor delta = (do64 * o64).sum(-1, /*keepdim=*/true);               // [Hq, Tq, 1]
  const at::Tensor ds = p * (dp - delta);
  const at::Tensor dq_h = at::matmul(ds, k64).mul_(args.scale);                  // [Hq, Tq, D]
  const at::Tensor dk_h = at::matmul(ds.transpose(1, 2), q64).mul_(args.scale);  // [Hq, Tk, D]
  auto group_sum = [&](const at::Tensor& x) {  // [Hq, Tk, D] -> [Tk, Hkv, D]
    return x.view({pr.hkv, pr.group, pr.total_k, pr.d}).sum(1).permute({1, 0, 2});
  };
  g.dq = dq_h.permute({1, 0, 2}).to(q.scalar_type()).contiguous();
  g.dk = group_sum(dk_h).to(q.scalar_type()).contiguous();
  g.dv = group_sum(dv_h).to(q.scalar_type()).contiguous();
  return g;
}

}  // namespace mor::kernels
