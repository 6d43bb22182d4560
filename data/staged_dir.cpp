#include "data/staged_dir.h"

#include <unistd.h>

#include "core/error.h"

namespace fs = std::filesystem;

namespace hymba::data {

StagedDir::StagedDir(fs::path final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.empty()) HYMBA_USER_ERROR("no output directory given");
  // "out/" and "out" must name the same directory, and the staging name must be a sibling.
  if (!final_.has_filename()) final_ = final_.parent_path();
  std::error_code ec;
  if (fs::exists(final_, ec)) {
    if (!overwrite_) HYMBA_USER_ERROR(final_.string(), ": already exists (use --force to replace it)");
    if (!fs::is_directory(final_, ec)) HYMBA_USER_ERROR(final_.string(), ": exists and is not a directory");
  }
  staging_ = final_;
  staging_ += ".tmp-" + std::to_string(::getpid());
  fs::remove_all(staging_, ec);
  fs::create_directories(staging_, ec);
  if (ec) HYMBA_USER_ERROR(staging_.string(), ": cannot create directory (", ec.message(), ")");
}

StagedDir::~StagedDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void StagedDir::commit() {
  HYMBA_CHECK(!committed_, "commit twice");
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_, ec)) {
    if (!overwrite_) HYMBA_USER_ERROR(final_.string(), ": appeared while writing; not replacing it");
    old = final_;
    old += ".old-" + std::to_string(::getpid());
    fs::rename(final_, old, ec);
    if (ec) HYMBA_USER_ERROR(final_.string(), ": cannot move the old directory aside (", ec.message(), ")");
  }
  fs::rename(staging_, final_, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, final_, ec2);  // put the old output back
    HYMBA_USER_ERROR(final_.string(), ": cannot rename ", staging_.string(), " (", ec.message(), ")");
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace hymba::data
