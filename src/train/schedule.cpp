#include "mor/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "mor/core/error.h"

namespace mor::train {

int64_t wsd_decay_steps(const config::TrainConfig& t, int64_t total_steps) {
  MOR_CHECK(total_steps > 0, "lr schedule: total_steps must be positive, got ", total_steps);
  MOR_CHECK(t.warmup_steps >= 0, "lr schedule: train.warmup_steps must be >= 0, got ", t.warmup_steps);
  const int64_t d = std::llround(t.decay_fraction * static_cast<double>(total_steps));
  return std::clamp<int64_t>(d, 0, std::max<int64_t>(0, total_steps - t.warmup_steps));
}

double lr_factor(const config::TrainConfig& t, int64_t step, int64_t total_steps) {
  MOR_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step);
  MOR_CHECK(total_steps > 0, "lr schedule: total_steps must be positive, got ", total_steps);
  MOR_CHECK(t.warmup_steps >= 0, "lr schedule: train.warmup_steps must be >= 0, got ", t.warmup_steps);
  const double m = t.min_lr_ratio;
  MOR_CHECK(m >= 0.0 && m <= 1.0, "lr schedule: train.min_lr_ratio must be in [0, 1], got ", m);
  step = std::min(step, total_steps - 1);
  const int64_t w = t.warmup_steps;
  if (step < w) return static_cast<double>(step + 1) / static_cast<double>(w);
  const double p = static_cast<double>(step - w) / static_cast<double>(std::max<int64_t>(1, total_steps - w));
  switch (t.schedule) {
    case config::LrSchedule::kConstant:
      return 1.0;
    case config::LrSchedule::kCosine:
      return m + (1.0 - m) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    case config::LrSchedule::kLinear:
      return 1.0 - (1.0 - m) * p;
    case config::LrSchedule::kWsd: {
      const int64_t d = wsd_decay_steps(t, total_steps), start = total_steps - d;
      if (step < start) return 1.0;
      return 1.0 - (1.0 - m) * static_cast<double>(step - start) / static_cast<double>(d);
    }
  }
  fail("lr schedule: unknown schedule");
}

}  // namespace mor::train
