// Run metrics: one JSON object per line in RUN_DIR/metrics.jsonl, flushed as written so a
// crash loses at most the line being written and `hymba plot` can run while training does.
//
// Records written by the trainer (all have "type" and "step"):
//   {"type":"train","step":12,"loss":3.1,"lr":0.003,"grad_norm":0.8,"tokens":98304,
//    "tokens_per_s":5200.0,"skipped":false,"time":12.5}
//   {"type":"eval","step":100,"val_loss":2.9,"val_ppl":18.2,"tokens":65536,"tokens_per_s":..,
//    "mqar_accuracy":0.93 (MQAR data only)}
// "step" counts completed training steps (the optimizer update that produced the record).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hymba::train {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Opens `path` for appending (creating it).
  explicit MetricsWriter(const std::string& path);
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  MetricsWriter(MetricsWriter&& o) noexcept;
  MetricsWriter& operator=(MetricsWriter&& o) noexcept;
  ~MetricsWriter();

  bool is_open() const { return f_ != nullptr; }
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// Every record of a metrics file, in order. A torn last line (crash mid-write) is skipped;
// any other bad line is a UserError naming the file and line.
std::vector<nlohmann::json> read_metrics(const std::string& path);

// Rewrites `path` without the records whose "step" is greater than `step`: on resume from a
// checkpoint at `step`, the steps after it are trained again and would otherwise appear twice.
void truncate_metrics_after(const std::string& path, int64_t step);

// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);

}  // namespace hymba::train
