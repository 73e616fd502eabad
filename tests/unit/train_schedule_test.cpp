// LR schedules against closed forms written out independently here.
#include <gtest/gtest.h>

#include <cmath>

#include "mor/core/error.h"
#include "mor/train/schedule.h"

namespace mor::train {
namespace {

using config::LrSchedule;

config::TrainConfig make(LrSchedule s, int64_t warmup, double min_ratio = 0.0, double decay = 0.2) {
  config::TrainConfig t;
  t.schedule = s;
  t.warmup_steps = warmup;
  t.min_lr_ratio = min_ratio;
  t.decay_fraction = decay;
  t.lr = 2e-3;
  return t;
}

constexpr double kTol = 1e-12;
const double kPi = std::acos(-1.0);

TEST(TrainSchedule, WarmupIsLinearForEverySchedule) {
  for (LrSchedule s : {LrSchedule::kWsd, LrSchedule::kCosine, LrSchedule::kLinear, LrSchedule::kConstant}) {
    const auto t = make(s, 10, 0.1);
    EXPECT_NEAR(lr_factor(t, 0, 100), 0.1, kTol);
    EXPECT_NEAR(lr_factor(t, 4, 100), 0.5, kTol);
    EXPECT_NEAR(lr_factor(t, 9, 100), 1.0, kTol);
    for (int64_t i = 1; i < 10; ++i) EXPECT_GT(lr_factor(t, i, 100), lr_factor(t, i - 1, 100));
    EXPECT_NEAR(learning_rate(t, 4, 100), 2e-3 * 0.5, kTol);
  }
}

TEST(TrainSchedule, Constant) {
  const auto t = make(LrSchedule::kConstant, 3, 0.5);
  for (int64_t s : {3, 50, 99, 150}) EXPECT_EQ(lr_factor(t, s, 100), 1.0);
  EXPECT_EQ(lr_factor(make(LrSchedule::kConstant, 0), 0, 1), 1.0);
}

TEST(TrainSchedule, WsdTrapezoid) {
  // T = 100, W = 10, decay 0.2 -> D = 20, decay starts at step 80.
  const auto t = make(LrSchedule::kWsd, 10, 0.0, 0.2);
  EXPECT_EQ(wsd_decay_steps(t, 100), 20);
  EXPECT_NEAR(lr_factor(t, 10, 100), 1.0, kTol);   // first stable step
  EXPECT_NEAR(lr_factor(t, 79, 100), 1.0, kTol);   // last stable step
  EXPECT_NEAR(lr_factor(t, 80, 100), 1.0, kTol);   // first decay step: p = 0
  EXPECT_NEAR(lr_factor(t, 81, 100), 1.0 - 1.0 / 20, kTol);
  EXPECT_NEAR(lr_factor(t, 90, 100), 0.5, kTol);
  EXPECT_NEAR(lr_factor(t, 99, 100), 1.0 / 20, kTol);  // last step: 1 - 19/20
  EXPECT_NEAR(lr_factor(t, 120, 100), 1.0 / 20, kTol);  // past the end: clamped to T - 1
  for (int64_t s = 81; s < 100; ++s) EXPECT_LT(lr_factor(t, s, 100), lr_factor(t, s - 1, 100));
  for (int64_t s = 10; s < 100; ++s) EXPECT_LE(lr_factor(t, s, 100), lr_factor(t, s - 1, 100) + kTol);
}

TEST(TrainSchedule, WsdMinRatioAndRounding) {
  // T = 50, decay 0.25 -> round(12.5) = 13 steps, decay starts at 37; m = 0.1.
  const auto t = make(LrSchedule::kWsd, 0, 0.1, 0.25);
  EXPECT_EQ(wsd_decay_steps(t, 50), 13);
  EXPECT_NEAR(lr_factor(t, 0, 50), 1.0, kTol);  // W = 0: full LR from step 0
  EXPECT_NEAR(lr_factor(t, 36, 50), 1.0, kTol);
  EXPECT_NEAR(lr_factor(t, 37, 50), 1.0, kTol);
  EXPECT_NEAR(lr_factor(t, 43, 50), 1.0 - 0.9 * 6.0 / 13.0, kTol);
  EXPECT_NEAR(lr_factor(t, 49, 50), 1.0 - 0.9 * 12.0 / 13.0, kTol);
  for (int64_t s = 0; s < 50; ++s) EXPECT_GT(lr_factor(t, s, 50), 0.1);
}

TEST(TrainSchedule, WsdDecayLengthClamps) {
  EXPECT_EQ(wsd_decay_steps(make(LrSchedule::kWsd, 0, 0.0, 0.0), 100), 0);
  EXPECT_EQ(wsd_decay_steps(make(LrSchedule::kWsd, 90, 0.0, 0.2), 100), 10);   // at most T - W
  EXPECT_EQ(wsd_decay_steps(make(LrSchedule::kWsd, 150, 0.0, 0.2), 100), 0);   // warm-up longer than T
  EXPECT_EQ(wsd_decay_steps(make(LrSchedule::kWsd, 0, 0.0, 1.0), 7), 7);
  // D = 0: stable to the end.
  const auto t = make(LrSchedule::kWsd, 5, 0.0, 0.0);
  for (int64_t s = 5; s < 40; ++s) EXPECT_EQ(lr_factor(t, s, 40), 1.0);
  // decay_fraction 1, W = 0: decays from step 0, same as linear.
  const auto all = make(LrSchedule::kWsd, 0, 0.2, 1.0), lin = make(LrSchedule::kLinear, 0, 0.2);
  for (int64_t s = 0; s < 30; ++s) EXPECT_NEAR(lr_factor(all, s, 30), lr_factor(lin, s, 30), kTol);
}

TEST(TrainSchedule, Cosine) {
  // T = 110, W = 10: p = (s - 10) / 100.
  const auto t = make(LrSchedule::kCosine, 10, 0.1);
  auto expected = [](double p) { return 0.1 + 0.9 * 0.5 * (1.0 + std::cos(kPi * p)); };
  EXPECT_NEAR(lr_factor(t, 10, 110), 1.0, kTol);
  EXPECT_NEAR(lr_factor(t, 60, 110), 0.55, kTol);  // midpoint: (1 + m) / 2
  EXPECT_NEAR(lr_factor(t, 35, 110), expected(0.25), kTol);
  EXPECT_NEAR(lr_factor(t, 109, 110), expected(0.99), kTol);
  for (int64_t s = 11; s < 110; ++s) EXPECT_LT(lr_factor(t, s, 110), lr_factor(t, s - 1, 110));
  // W = 0, m = 0.
  const auto z = make(LrSchedule::kCosine, 0);
  EXPECT_NEAR(lr_factor(z, 0, 4), 1.0, kTol);
  EXPECT_NEAR(lr_factor(z, 2, 4), 0.5, kTol);
  EXPECT_NEAR(lr_factor(z, 3, 4), 0.5 * (1.0 + std::cos(kPi * 0.75)), kTol);
}

TEST(TrainSchedule, Linear) {
  const auto t = make(LrSchedule::kLinear, 4, 0.2);  // T = 24: p = (s - 4) / 20
  EXPECT_NEAR(lr_factor(t, 4, 24), 1.0, kTol);
  EXPECT_NEAR(lr_factor(t, 14, 24), 1.0 - 0.8 * 0.5, kTol);
  EXPECT_NEAR(lr_factor(t, 23, 24), 1.0 - 0.8 * 19.0 / 20.0, kTol);
  for (int64_t s = 5; s < 24; ++s) EXPECT_LT(lr_factor(t, s, 24), lr_factor(t, s - 1, 24));
}

TEST(TrainSchedule, WarmupCoveringAllSteps) {
  const auto t = make(LrSchedule::kCosine, 8);
  EXPECT_NEAR(lr_factor(t, 3, 5), 0.5, kTol);
  EXPECT_NEAR(lr_factor(t, 4, 5), 5.0 / 8.0, kTol);
  EXPECT_NEAR(lr_factor(t, 9, 5), 5.0 / 8.0, kTol);  // clamped to T - 1
}

TEST(TrainSchedule, Errors) {
  const auto t = make(LrSchedule::kWsd, 2);
  EXPECT_THROW(lr_factor(t, -1, 10), mor::Error);
  EXPECT_THROW(lr_factor(t, 0, 0), mor::Error);
  EXPECT_THROW(lr_factor(t, 0, -5), mor::Error);
  EXPECT_THROW(wsd_decay_steps(t, 0), mor::Error);
  EXPECT_THROW(lr_factor(make(LrSchedule::kWsd, -1), 0, 10), mor::Error);
  EXPECT_THROW(lr_factor(make(LrSchedule::kCosine, 0, 1.5), 0, 10), mor::Error);
}

}  // namespace
}  // namespace mor::train
