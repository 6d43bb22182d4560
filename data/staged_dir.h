// An output directory that appears under its final name only when complete: everything is
// written into a sibling staging directory, renamed at commit(); if commit() never happens
// (an error, an exception) the staging directory is deleted.
#pragma once

#include <filesystem>
#include <string>

namespace hymba::data {

class StagedDir {
 public:
  // Throws UserError when `final_path` exists and overwrite is false, or when the staging
  // directory cannot be created.
  StagedDir(std::filesystem::path final_path, bool overwrite);
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;
  ~StagedDir();

  // Where to write now.
  const std::filesystem::path& path() const { return staging_; }
  const std::filesystem::path& final_path() const { return final_; }
  // Moves the staging directory to the final name (replacing an old one when overwriting).
  void commit();

 private:
  std::filesystem::path final_, staging_;
  bool overwrite_, committed_ = false;
};

}  // namespace hymba::data
