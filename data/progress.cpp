#include "data/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace hymba::data {

std::string human_count(double v) {
  const char* units[] = {"", " k", " M", " G", " T"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f%s" : "%.1f%s", v, units[u]);
  return buf;
}

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

Progress::Progress(std::string label, uint64_t total_bytes, bool enabled)
    : label_(std::move(label)), total_(total_bytes), enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1) {
  start_ = last_ = std::chrono::steady_clock::now();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(uint64_t bytes, uint64_t tokens, uint64_t docs) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.2 : interval_s)) return;
  last_ = now;
  print(bytes, tokens, docs, false);
}

void Progress::finish(uint64_t bytes, uint64_t tokens, uint64_t docs) {
  if (!enabled_) return;
  print(bytes, tokens, docs, true);
}

void Progress::print(uint64_t bytes, uint64_t tokens, uint64_t docs, bool final) {
  double t = std::max(elapsed(), 1e-9);
  std::string line = label_ + ": " + human_count(double(docs)) + " docs, " + human_count(double(tokens)) +
                     " tokens, " + human_count(double(bytes)) + "B";
  if (total_ > 0 && !final) {
    char pct[16];
    std::snprintf(pct, sizeof pct, " (%.1f%%)", 100.0 * double(bytes) / double(total_));
    line += pct;
  }
  line += ", " + human_count(double(tokens) / t) + " tok/s, " + human_count(double(bytes) / t) + "B/s";
  if (final) line += ", " + human_duration(t);
  else if (total_ > 0 && bytes > 0) line += ", ETA " + human_duration(t * double(total_ - std::min(bytes, total_)) / double(bytes));
  if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  else std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace hymba::data
