// Reusable scratch memory for the hot path. Per-call std::vector buffers cost
// a zeroing pass and, above glibc's mmap threshold, page faults on every call
// (measured: about a quarter of prompt processing time on the bench model).
// A Scratch takes a buffer from a process-wide free list and gives it back
// when destroyed. The contents are not initialised.
//
// Why not thread_local buffers: a oneTBB worker waiting inside a parallel
// loop may run another task on the same thread, which would reuse a buffer
// still in use; buffers from the free list are owned by one Scratch at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace micromoe {

template <typename T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t n) { Resize(n); }
  ~Scratch() { Release(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // At least n elements; the contents are lost when the buffer grows.
  void Resize(size_t n) {
    size_ = n;
    if (n <= capacity_) return;
    Release();
    Pool& pool = GetPool();
    std::lock_guard<std::mutex> lock(pool.mu);
    // The smallest free buffer that is large enough; failing that, the largest
    // is replaced by a new one, so the pool holds at most as many buffers as
    // were ever in use at once.
    size_t best = pool.free.size(), largest = pool.free.size();
    for (size_t i = 0; i < pool.free.size(); ++i) {
      const size_t cap = pool.free[i].second;
      if (cap >= n && (best == pool.free.size() || cap < pool.free[best].second)) best = i;
      if (largest == pool.free.size() || cap > pool.free[largest].second) largest = i;
    }
    if (best < pool.free.size()) {
      std::swap(pool.free[best], pool.free.back());
      data_ = std::move(pool.free.back().first);
      capacity_ = pool.free.back().second;
      pool.free.pop_back();
      return;
    }
    if (largest < pool.free.size()) {
      std::swap(pool.free[largest], pool.free.back());
      pool.free.pop_back();
    }
    data_.reset(new T[n]);  // not value-initialised: no zeroing pass
    capacity_ = n;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  struct Pool {
    std::mutex mu;
    std::vector<std::pair<std::unique_ptr<T[]>, size_t>> free;
  };
  static Pool& GetPool() {
    static Pool* pool = new Pool();  // never destroyed: Scratch may outlive static destruction order
    return *pool;
  }
  void Release() {
    if (!data_) return;
    constexpr size_t kMaxFree = 256;  // more than the concurrent users of any run
    Pool& pool = GetPool();
    std::lock_guard<std::mutex> lock(pool.mu);
    if (pool.free.size() < kMaxFree) pool.free.emplace_back(std::move(data_), capacity_);
    data_.reset();
    capacity_ = 0;
  }

  std::unique_ptr<T[]> data_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace micromoe
