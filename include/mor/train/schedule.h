// Learning-rate schedules: the multiplier of the peak LR (train.lr) for each optimizer step.
// Pure arithmetic, no tensors.
//
// Notation: s = 0-based optimizer step, T = total_steps, W = warmup_steps, m = min_lr_ratio.
//   warm-up (every schedule): s < W  ->  (s + 1) / W
//   constant: 1
//   wsd (warmup-stable-decay, the trapezoid of the MoR paper): D = wsd_decay_steps(t, T);
//            1 while s < T - D, then p = (s - (T - D)) / D and 1 - (1 - m) * p
//            (the first decay step is still 1; the last is 1 - (1 - m) * (D - 1) / D, approaching m)
//   cosine:  p = (s - W) / max(1, T - W);  m + (1 - m) * 0.5 * (1 + cos(pi * p))
//   linear:  p as for cosine;              1 - (1 - m) * p
// Steps s >= T are clamped to T - 1. s < 0, T <= 0, W < 0 or m outside [0, 1] are mor::Error.
#pragma once

#include <cstdint>

#include "mor/config/config.h"

namespace mor::train {

// Multiplier of the peak LR for the update of 0-based optimizer step `step` out of `total_steps`.
double lr_factor(const config::TrainConfig& t, int64_t step, int64_t total_steps);

// The learning rate itself: t.lr * lr_factor(t, step, total).
inline double learning_rate(const config::TrainConfig& t, int64_t step, int64_t total) {
  return t.lr * lr_factor(t, step, total);
}

// WSD decay length: round(decay_fraction * total_steps), clamped to [0, max(0, total_steps - warmup)].
int64_t wsd_decay_steps(const config::TrainConfig& t, int64_t total_steps);

}  // namespace mor::train
