// A ref-counted block of memory on one device. Tensors are views onto a Storage.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"

namespace hymba {

class Storage {
 public:
  // Allocates nbytes on `device` through its allocator.
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere; `deleter` (may be empty) is called on destruction.
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;  // null when wrapping external memory
  std::function<void(void*)> deleter_;
};

using StoragePtr = std::shared_ptr<Storage>;

}  // namespace hymba
