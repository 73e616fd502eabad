#include "mor/train/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "mor/core/error.h"

namespace mor::train {

AdamW::AdamW(AdamWOptions options) : options_(options) {
  const auto& o = options_;
  MOR_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0, "AdamW: beta1 must be in [0, 1), got ", o.beta1);
  MOR_CHECK(o.beta2 >= 0.0 && o.beta2 < 1.0, "AdamW: beta2 must be in [0, 1), got ", o.beta2);
  MOR_CHECK(o.eps >= 0.0, "AdamW: eps must be >= 0, got ", o.eps);
  MOR_CHECK(o.chunk_elements > 0, "AdamW: chunk_elements must be positive, got ", o.chunk_elements);
}

int64_t AdamW::add(at::Tensor param, std::vector<Segment> segments) {
  const int64_t index = size();
  MOR_CHECK(param.defined(), "AdamW: parameter ", index, " is undefined");
  MOR_CHECK(param.scalar_type() == at::kFloat, "AdamW: parameter ", index, " must be fp32, got ",
            param.scalar_type());
  MOR_CHECK(param.is_contiguous(), "AdamW: parameter ", index, " must be contiguous");
  const int64_t n = param.numel();
  std::erase_if(segments, [](const Segment& s) { return s.length == 0; });
  std::sort(segments.begin(), segments.end(),
            [](const Segment& a, const Segment& b) { return a.offset < b.offset; });
  int64_t end = 0;
  for (const Segment& s : segments) {
    MOR_CHECK(s.offset >= 0 && s.length > 0 && s.offset <= n - s.length, "AdamW: parameter ", index,
              ": segment [", s.offset, ", ", s.offset + s.length, ") is outside [0, ", n, ")");
    MOR_CHECK(s.offset >= end, "AdamW: parameter ", index, ": segment [", s.offset, ", ",
              s.offset + s.length, ") overlaps another segment ending at ", end);
    MOR_CHECK(std::isfinite(s.lr_scale) && s.lr_scale >= 0.0, "AdamW: parameter ", index,
              ": segment lr_scale must be finite and >= 0, got ", s.lr_scale);
    MOR_CHECK(std::isfinite(s.weight_decay) && s.weight_decay >= 0.0, "AdamW: parameter ", index,
              ": segment weight_decay must be finite and >= 0, got ", s.weight_decay);
    end = s.offset + s.length;
  }
  Entry e{param, at::zeros_like(param), at::zeros_like(param), std::move(segments)};
  params_.push_back(std::move(e));
  return index;
}

void AdamW::step(double lr, const std::vector<at::Tensor>& grads) {
  MOR_CHECK(std::isfinite(lr) && lr >= 0.0, "AdamW: learning rate must be finite and >= 0, got ", lr);
  MOR_CHECK(static_cast<int64_t>(grads.size()) == size(), "AdamW: got ", grads.size(),
            " gradients for ", size(), " parameters");
  for (int64_t i = 0; i < size(); ++i) {
    const at::Tensor& g = grads[i];
    if (!g.defined()) continue;
    const at::Tensor& p = params_[i].param;
    MOR_CHECK(g.numel() == p.numel(), "AdamW: gradient ", i, " has ", g.numel(),
              " elements, parameter has ", p.numel());
    MOR_CHECK(g.scalar_type() == at::kFloat, "AdamW: gradient ", i, " must be fp32, got ", g.scalar_type());
    MOR_CHECK(g.device() == p.device(), "AdamW: gradient ", i, " is on ", g.device(), ", parameter on ",
              p.device());
  }
  at::NoGradGuard no_grad;   // params may be leaves that require grad
  const int64_t t = ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(t)));
  for (int64_t i = 0; i < size(); ++i) {
    if (!grads[i].defined()) continue;
    Entry& e = params_[i];
    const at::Tensor p = e.param.view({-1}), m = e.exp_avg.view({-1}), v = e.exp_avg_sq.view({-1});
    const at::Tensor g = grads[i].contiguous().view({-1});
    // Walk the (sorted) segments in chunks of at most chunk_elements; adjacent segments share the
    // moment/denominator kernels of one chunk. segs[k] is the first segment not yet done, pos the
    // element where it resumes.
    const auto& segs = e.segments;
    const int64_t chunk = options_.chunk_elements;
    size_t k = 0;
    int64_t pos = segs.empty() ? 0 : segs[0].offset;
    while (k < segs.size()) {
      int64_t stop = pos;
      size_t last = k;
      while (last < segs.size() && (last == k || segs[last].offset == stop) && stop - pos < chunk) {
        const int64_t seg_end = segs[last].offset + segs[last].length;
        stop = std::min(seg_end, pos + chunk);
        if (stop < seg_end) break;
        ++last;
      }
      const int64_t len = stop - pos;
      at::Tensor mc = m.narrow(0, pos, len), vc = v.narrow(0, pos, len), gc = g.narrow(0, pos, len);
      mc.mul_(b1).add_(gc, 1.0 - b1);
      vc.mul_(b2).addcmul_(gc, gc, 1.0 - b2);
      at::Tensor denom = vc.sqrt();
      denom.div_(bc2_sqrt).add_(options_.eps);
      for (size_t j = k; j < segs.size() && segs[j].offset < stop; ++j) {
        const int64_t a = std::max(pos, segs[j].offset), b = std::min(stop, segs[j].offset + segs[j].length);
        const double lr_el = lr * segs[j].lr_scale;
        if (lr_el == 0.0) continue;
        at::Tensor pc = p.narrow(0, a, b - a);
        if (segs[j].weight_decay != 0.0) pc.mul_(1.0 - lr_el * segs[j].weight_decay);
        pc.addcdiv_(m.narrow(0, a, b - a), denom.narrow(0, a - pos, b - a), -lr_el / bc1);
      }
      k = last;  // a segment cut by the chunk limit stays current and resumes at stop
      pos = (k < segs.size() && segs[k].offset > stop) ? segs[k].offset : stop;
    }
  }
}

void AdamW::set_steps(int64_t steps) {
  MOR_CHECK(steps >= 0, "AdamW: step count must be >= 0, got ", steps);
  steps_ = steps;
}

AdamW::Entry& AdamW::entry(int64_t i) {
  MOR_CHECK(i >= 0 && i < size(), "AdamW: parameter index ", i, " out of range [0, ", size(), ")");
  return params_[i];
}
const AdamW::Entry& AdamW::entry(int64_t i) const {
  MOR_CHECK(i >= 0 && i < size(), "AdamW: parameter index ", i, " out of range [0, ", size(), ")");
  return params_[i];
}
at::Tensor& AdamW::exp_avg(int64_t i) { return entry(i).exp_avg; }
at::Tensor& AdamW::exp_avg_sq(int64_t i) { return entry(i).exp_avg_sq; }
const at::Tensor& AdamW::param(int64_t i) const { return entry(i).param; }
const std::vector<Segment>& AdamW::segments(int64_t i) const { return entry(i).segments; }

}  // namespace mor::train
