// AdamW over flat shards against an independent float64 loop and torch.optim.AdamW values.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "mor/core/error.h"
#include "mor/train/optimizer.h"

namespace mor::train {
namespace {

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor d = t.detach().to(at::kCPU, at::kDouble).contiguous().view({-1});
  return {d.data_ptr<double>(), d.data_ptr<double>() + d.numel()};
}

// Independent float64 AdamW, one element at a time, straight from the torch.optim.AdamW formulas.
struct RefAdamW {
  AdamWOptions o;
  std::vector<std::vector<double>> p, m, v;
  std::vector<std::vector<Segment>> segs;
  int64_t t = 0;

  void add(const at::Tensor& param, std::vector<Segment> s) {
    p.push_back(to_vec(param));
    m.emplace_back(p.back().size(), 0.0);
    v.emplace_back(p.back().size(), 0.0);
    segs.push_back(std::move(s));
  }
  void step(double lr, const std::vector<at::Tensor>& grads) {
    ++t;
    const double bc1 = 1.0 - std::pow(o.beta1, t), bc2 = 1.0 - std::pow(o.beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      if (!grads[i].defined()) continue;
      const std::vector<double> g = to_vec(grads[i]);
      for (const Segment& s : segs[i]) {
        for (int64_t j = s.offset; j < s.offset + s.length; ++j) {
          const double lr_el = lr * s.lr_scale;
          p[i][j] *= 1.0 - lr_el * s.weight_decay;
          m[i][j] = o.beta1 * m[i][j] + (1.0 - o.beta1) * g[j];
          v[i][j] = o.beta2 * v[i][j] + (1.0 - o.beta2) * g[j] * g[j];
          p[i][j] -= lr_el / bc1 * m[i][j] / (std::sqrt(v[i][j]) / std::sqrt(bc2) + o.eps);
        }
      }
    }
  }
};

void expect_close(const at::Tensor& actual, const std::vector<double>& expected, double rtol,
                  const std::string& what) {
  const std::vector<double> a = to_vec(actual);
  ASSERT_EQ(a.size(), expected.size()) << what;
  for (size_t j = 0; j < a.size(); ++j)
    ASSERT_NEAR(a[j], expected[j], rtol * std::max(1.0, std::abs(expected[j]))) << what << "[" << j << "]";
}

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, at::Device device = at::kCPU) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(device);
}

// Params of 100 elements (three segments given out of order, gap [30, 40) and tail [95, 100)
// uncovered) and a [6, 7] matrix with one segment; 5 steps with changing LR; checks params and state.
void check_against_reference(at::Device device, int64_t chunk) {
  AdamWOptions o{0.9, 0.95, 1e-8, chunk};
  AdamW opt(o);
  RefAdamW ref{o};
  const std::vector<Segment> segs0 = {{70, 25, 0.5, 0.05}, {0, 30, 1.0, 0.1}, {40, 30, 10.0, 0.0}};
  const std::vector<Segment> segs1 = {{0, 42, 2.0, 0.2}};
  at::Tensor p0 = randn({100}, 1, device), p1 = randn({6, 7}, 2, device);
  const at::Tensor p0_initial = p0.clone();
  ref.add(p0, segs0);
  ref.add(p1, segs1);
  EXPECT_EQ(opt.add(p0, segs0), 0);
  EXPECT_EQ(opt.add(p1, segs1), 1);
  EXPECT_EQ(opt.size(), 2);
  const double lrs[] = {1e-3, 3e-3, 1e-2, 5e-3, 1e-3};
  for (int s = 0; s < 5; ++s) {
    const std::vector<at::Tensor> grads = {randn({100}, 10 + s, device), randn({42}, 20 + s, device)};
    opt.step(lrs[s], grads);
    ref.step(lrs[s], grads);
    EXPECT_EQ(opt.steps(), s + 1);
    for (int64_t i = 0; i < 2; ++i) {
      const std::string at_step = " param " + std::to_string(i) + " step " + std::to_string(s);
      expect_close(opt.param(i), ref.p[i], 1e-6, "param" + at_step);
      expect_close(opt.exp_avg(i), ref.m[i], 1e-6, "exp_avg" + at_step);
      expect_close(opt.exp_avg_sq(i), ref.v[i], 1e-6, "exp_avg_sq" + at_step);
    }
  }
  EXPECT_TRUE(p0.data_ptr() == opt.param(0).data_ptr());  // updated in place
  EXPECT_EQ(opt.param(1).sizes(), (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(opt.exp_avg(1).sizes(), (std::vector<int64_t>{6, 7}));
  // Uncovered elements: parameter bit-identical, state zero.
  for (auto [a, n] : {std::pair<int64_t, int64_t>{30, 10}, {95, 5}}) {
    EXPECT_TRUE(at::equal(p0.narrow(0, a, n), p0_initial.narrow(0, a, n)));
    EXPECT_EQ(opt.exp_avg(0).narrow(0, a, n).abs().sum().item<float>(), 0.0f);
    EXPECT_EQ(opt.exp_avg_sq(0).narrow(0, a, n).abs().sum().item<float>(), 0.0f);
  }
}

TEST(TrainOptimizer, MatchesFloat64Reference) { check_against_reference(at::kCPU, AdamWOptions{}.chunk_elements); }

// Chunks smaller than the segments and straddling adjacent ones: same results.
TEST(TrainOptimizer, MatchesFloat64ReferenceSmallChunks) {
  for (int64_t chunk : {1, 7, 30, 64}) check_against_reference(at::kCPU, chunk);
}

TEST(TrainOptimizer, MatchesFloat64ReferenceCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  check_against_reference(at::kCUDA, AdamWOptions{}.chunk_elements);
  check_against_reference(at::kCUDA, 7);
}

// One element, lr 0.05 * lr_scale 2, betas (0.9, 0.99), eps 1e-8, wd 0.1, grads 0.5, -0.25, 1.0.
// Step 1 by hand: p = 1 * (1 - 0.1 * 0.1) = 0.99; m = 0.05, v = 0.0025; m_hat = 0.5, v_hat = 0.25;
// p -= 0.1 * 0.5 / (0.5 + 1e-8). Steps 2 and 3: torch.optim.AdamW(lr=0.1, betas=(0.9, 0.99),
// eps=1e-8, weight_decay=0.1) in float64.
TEST(TrainOptimizer, TorchAdamWSemantics) {
  AdamW opt({0.9, 0.99, 1e-8});
  at::Tensor p = at::full({3}, 1.0f);
  opt.add(p, {{1, 1, 2.0, 0.1}});
  const double expected_p[] = {0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 0.8544300597479334, 0.7802444752781004};
  const double expected_m[] = {0.05, 0.02, 0.118};
  const double expected_v[] = {0.0025, 0.0031, 0.013069};
  const float grads[] = {0.5f, -0.25f, 1.0f};
  for (int s = 0; s < 3; ++s) {
    opt.step(0.05, {at::full({3}, grads[s])});
    EXPECT_NEAR(p[1].item<double>(), expected_p[s], 1e-6) << "step " << s;
    EXPECT_NEAR(opt.exp_avg(0)[1].item<double>(), expected_m[s], 1e-7) << "step " << s;
    EXPECT_NEAR(opt.exp_avg_sq(0)[1].item<double>(), expected_v[s], 1e-8) << "step " << s;
    EXPECT_EQ(p[0].item<float>(), 1.0f);
    EXPECT_EQ(p[2].item<float>(), 1.0f);
  }
}

TEST(TrainOptimizer, UndefinedGradLeavesParamAndStateUntouched) {
  AdamW opt({});
  at::Tensor a = randn({16}, 3), b = randn({8}, 4);
  opt.add(a, {{0, 16, 1.0, 0.1}});
  opt.add(b, {{0, 8, 1.0, 0.1}});
  opt.step(1e-2, {randn({16}, 5), randn({8}, 6)});
  const at::Tensor b_before = b.clone(), m_before = opt.exp_avg(1).clone(), v_before = opt.exp_avg_sq(1).clone();
  const at::Tensor a_before = a.clone();
  opt.step(1e-2, {randn({16}, 7), at::Tensor()});
  EXPECT_EQ(opt.steps(), 2);
  EXPECT_FALSE(at::equal(a, a_before));
  EXPECT_TRUE(at::equal(b, b_before));
  EXPECT_TRUE(at::equal(opt.exp_avg(1), m_before));
  EXPECT_TRUE(at::equal(opt.exp_avg_sq(1), v_before));
}

TEST(TrainOptimizer, StateRestoreIsBitIdentical) {
  const std::vector<Segment> segs = {{0, 20, 1.0, 0.1}, {25, 39, 0.5, 0.0}};
  AdamW first({0.9, 0.95, 1e-8});
  at::Tensor p = randn({64}, 8);
  first.add(p, segs);
  for (int s = 0; s < 3; ++s) first.step(1e-2, {randn({64}, 30 + s)});
  AdamW second({0.9, 0.95, 1e-8});
  at::Tensor q = p.clone();
  second.add(q, first.segments(0));
  second.exp_avg(0).copy_(first.exp_avg(0));
  second.exp_avg_sq(0).copy_(first.exp_avg_sq(0));
  second.set_steps(first.steps());
  for (int s = 3; s < 5; ++s) {
    const at::Tensor g = randn({64}, 30 + s);
    first.step(2e-2, {g});
    second.step(2e-2, {g});
  }
  EXPECT_EQ(second.steps(), 5);
  EXPECT_TRUE(at::equal(p, q));
  EXPECT_TRUE(at::equal(first.exp_avg(0), second.exp_avg(0)));
  EXPECT_TRUE(at::equal(first.exp_avg_sq(0), second.exp_avg_sq(0)));
}

TEST(TrainOptimizer, SegmentsAreSortedAndEmptyOnesDropped) {
  AdamW opt({});
  opt.add(at::zeros({10}), {{6, 4}, {0, 0}, {0, 3}, {3, 3, 2.0}});
  const auto& s = opt.segments(0);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].offset, 0);
  EXPECT_EQ(s[1].offset, 3);
  EXPECT_EQ(s[1].lr_scale, 2.0);
  EXPECT_EQ(s[2].offset, 6);
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const mor::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainOptimizer, Errors) {
  AdamW opt({});
  auto has = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos;
  };
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({4}, at::kDouble), {}); }), "fp32"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({4, 3}).t(), {}); }), "contiguous"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::Tensor(), {}); }), "undefined"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{0, 5}, {4, 3}}); }), "overlaps"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{8, 3}}); }), "outside"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{-1, 3}}); }), "outside"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{0, -3}}); }), "outside"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{0, 3, -1.0}}); }), "lr_scale"));
  EXPECT_TRUE(has(error_of([&] { opt.add(at::zeros({10}), {{0, 3, 1.0, -0.1}}); }), "weight_decay"));
  EXPECT_EQ(opt.size(), 0);
  opt.add(at::zeros({10}), {{0, 10}});
  EXPECT_TRUE(has(error_of([&] { opt.step(1e-3, {}); }), "got 0 gradients for 1 parameters"));
  EXPECT_TRUE(has(error_of([&] { opt.step(1e-3, {at::zeros({9})}); }), "has 9 elements"));
  EXPECT_TRUE(has(error_of([&] { opt.step(1e-3, {at::zeros({10}, at::kDouble)}); }), "fp32"));
  EXPECT_TRUE(has(error_of([&] { opt.step(-1.0, {at::zeros({10})}); }), "learning rate"));
  EXPECT_EQ(opt.steps(), 0);  // failed steps change nothing
  EXPECT_TRUE(has(error_of([&] { opt.set_steps(-1); }), "step count"));
  EXPECT_TRUE(has(error_of([&] { opt.exp_avg(1); }), "out of range"));
  EXPECT_TRUE(has(error_of([&] { opt.param(-1); }), "out of range"));
  EXPECT_TRUE(has(error_of([] { AdamW bad({1.0, 0.95, 1e-8}); }), "beta1"));
  EXPECT_TRUE(has(error_of([] { AdamW bad({0.9, -0.1, 1e-8}); }), "beta2"));
}

}  // namespace
}  // namespace mor::train
