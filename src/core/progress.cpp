// Progress display (mor/core/progress.h): snprintf-based rendering, throttled with try_lock.
#include "mor/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string_view>

namespace mor::core {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kTtyRedrawS = 0.1;

std::string format_amount(double v, Progress::Unit unit) {
  char buf[32];
  if (unit == Progress::Unit::kBytes) {
    if (v >= 1e9) {
      std::snprintf(buf, sizeof(buf), "%.2f GB", v / 1e9);
    } else if (v >= 1e6) {
      std::snprintf(buf, sizeof(buf), "%.1f MB", v / 1e6);
    } else if (v >= 1e3) {
      std::snprintf(buf, sizeof(buf), "%.1f KB", v / 1e3);
    } else {
      std::snprintf(buf, sizeof(buf), "%.0f B", v);
    }
  } else if (v >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.2fG", v / 1e9);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", v / 1e6);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof(buf), "%.1fK", v / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  }
  return buf;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (total >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  }
  return buf;
}

}  // namespace

Progress::Progress(std::string label, int64_t total) : Progress(std::move(label), total, Options{}) {}

Progress::Progress(std::string label, int64_t total, Options options)
    : label_(std::move(label)), options_(std::move(options)), mode_(options_.mode), total_(total) {
  if (options_.stream == nullptr) mode_ = Mode::kSilent;
  if (mode_ == Mode::kAuto) mode_ = ::isatty(::fileno(options_.stream)) ? Mode::kTty : Mode::kLines;
  start_ = Clock::now();
  last_render_ = start_;
}

Progress::~Progress() { finish(); }

void Progress::set_total(int64_t total) { total_.store(total, std::memory_order_relaxed); }

void Progress::add(int64_t n, int64_t secondary) {
  count_.fetch_add(n, std::memory_order_relaxed);
  if (secondary != 0) secondary_.fetch_add(secondary, std::memory_order_relaxed);
  if (mode_ != Mode::kSilent) maybe_render(false);
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::string Progress::status_line(bool with_bar) const {
  const double count = static_cast<double>(count_.load(std::memory_order_relaxed));
  const double total = static_cast<double>(total_.load(std::memory_order_relaxed));
  const double elapsed = std::max(elapsed_s(), 1e-9);
  const double rate = count / elapsed;
  std::string line = label_;
  auto put = [&line](std::initializer_list<std::string_view> parts) {
    for (auto part : parts) line.append(part);
  };
  if (total > 0) {
    const double frac = std::clamp(count / total, 0.0, 1.0);
    if (with_bar) {
      constexpr int kWidth = 24;
      const int filled = static_cast<int>(frac * kWidth);
      put({" [", std::string(filled, '#'), std::string(kWidth - filled, ' '), "]"});
    }
    char pct[16];
    std::snprintf(pct, sizeof(pct), "%3.0f%%", frac * 100.0);
    put({" ", format_amount(count, options_.unit), "/", format_amount(total, options_.unit), " ", pct});
  } else {
    put({" ", format_amount(count, options_.unit)});
  }
  put({"  ", format_amount(rate, options_.unit), "/s"});
  if (!options_.secondary_label.empty()) {
    const double sec = static_cast<double>(secondary_.load(std::memory_order_relaxed));
    put({"  ", format_amount(sec, Unit::kCount), " ", options_.secondary_label, " (",
         format_amount(sec / elapsed, Unit::kCount), "/s)"});
  }
  if (finished_) {
    put({"  in ", format_duration(elapsed)});
  } else if (total > 0 && rate > 0 && count < total) {
    put({"  ETA ", format_duration((total - count) / rate)});
  }
  return line;
}

void Progress::maybe_render(bool force) {
  std::unique_lock lock(render_mutex_, std::defer_lock);
  if (force) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // another thread is rendering: never wait for it
  }
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_render_).count();
  if (!force && since < (mode_ == Mode::kTty ? kTtyRedrawS : options_.interval_s)) return;
  last_render_ = now;
  if (mode_ == Mode::kTty) {
    std::string line = status_line(true);
    const size_t width = line.size();
    if (width < last_width_) line += std::string(last_width_ - width, ' ');  // erase leftovers
    last_width_ = width;
    std::fprintf(options_.stream, "\r%s", line.c_str());
    if (finished_) std::fputc('\n', options_.stream);
  } else {
    std::fprintf(options_.stream, "%s\n", status_line(false).c_str());
  }
  std::fflush(options_.stream);
}

void Progress::finish() {
  {
    std::lock_guard lock(render_mutex_);
    if (finished_) return;
    finished_ = true;
  }
  if (mode_ != Mode::kSilent) maybe_render(true);
}

}  // namespace mor::core
