// Progress reporting for long data jobs: a self-updating line with rate and ETA when stderr
// is a terminal, and a plain line every few seconds otherwise (logs, CI, nohup).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hymba::data {

class Progress {
 public:
  // total_bytes: the work to do (0 if unknown: no percentage or ETA). enabled = false prints
  // nothing (library use, tests).
  Progress(std::string label, uint64_t total_bytes, bool enabled = true);
  // Prints at most every 0.2 s (terminal) or every interval_s (plain).
  void update(uint64_t bytes_done, uint64_t tokens_done, uint64_t docs_done);
  // Prints the final summary line.
  void finish(uint64_t bytes_done, uint64_t tokens_done, uint64_t docs_done);
  double elapsed() const;

  // Seconds between plain lines; tests set it to 0.
  double interval_s = 10.0;

 private:
  void print(uint64_t bytes, uint64_t tokens, uint64_t docs, bool final);

  std::string label_;
  uint64_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

// "12.3 M" style numbers and "1h02m" style durations for progress lines.
std::string human_count(double v);
std::string human_duration(double seconds);

}  // namespace hymba::data
