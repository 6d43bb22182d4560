#include "train/metrics.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.h"

namespace hymba::train {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) HYMBA_USER_ERROR(path, ": cannot open the metrics file for writing");
}

MetricsWriter::MetricsWriter(MetricsWriter&& o) noexcept
    : path_(std::move(o.path_)), f_(std::exchange(o.f_, nullptr)) {}

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& o) noexcept {
  if (this != &o) {
    if (f_) std::fclose(f_);
    path_ = std::move(o.path_);
    f_ = std::exchange(o.f_, nullptr);
  }
  return *this;
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!f_) return;
  // NaN is not JSON: dump() would write null, which readers treat as missing. That is what a
  // skipped step's loss should be, so no special case is needed.
  std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fflush(f_);
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) HYMBA_USER_ERROR(path, ": cannot open the metrics file");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::vector<nlohmann::json> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    try {
      out.push_back(nlohmann::json::parse(lines[i]));
    } catch (const nlohmann::json::exception& e) {
      if (i + 1 == lines.size()) break;  // torn by a crash mid-write
      HYMBA_USER_ERROR(path, ":", i + 1, ": not a JSON object (", e.what(), ")");
    }
  }
  return out;
}

void truncate_metrics_after(const std::string& path, int64_t step) {
  if (!std::filesystem::exists(path)) return;
  auto records = read_metrics(path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) HYMBA_USER_ERROR(tmp, ": cannot write");
    for (const auto& r : records) {
      if (r.contains("step") && r["step"].is_number_integer() && r["step"].get<int64_t>() > step) continue;
      out << r.dump() << "\n";
    }
  }
  std::filesystem::rename(tmp, path);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = int64_t(seconds + 0.5);
  char buf[64];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llds", (long long)s);
  return buf;
}

}  // namespace hymba::train
