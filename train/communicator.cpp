#include "train/communicator.h"

#include "core/error.h"

namespace hymba::train {
namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

// One rank: a sum or average over one value is that value; scatter and gather are copies.
class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "single"; }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp) override {
    check_collective_tensor(t, "all_reduce", "tensor");
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp) override {
    check_collective_tensor(in, "reduce_scatter", "input");
    check_collective_tensor(out, "reduce_scatter", "output");
    HYMBA_CHECK(in.numel() == out.numel() && in.dtype() == out.dtype(), "reduce_scatter: input ", in.meta_str(),
                " and output ", out.meta_str(), " differ (world 1)");
    NoGradGuard ng;
    if (in.data_ptr() != out.data_ptr()) out.view({-1}).copy_(in.view({-1}));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    return reduce_scatter_async(in, out, ReduceOp::Sum);
  }
  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    HYMBA_CHECK(root == 0, "broadcast: root ", root, " out of range for world 1");
    check_collective_tensor(t, "broadcast", "tensor");
    return std::make_unique<DoneWork>();
  }
  void barrier() override {}
};

}  // namespace

const char* to_string(ReduceOp op) { return op == ReduceOp::Sum ? "sum" : "avg"; }

void check_collective_tensor(const Tensor& t, const char* op, const char* what) {
  HYMBA_CHECK(t.defined(), op, ": ", what, " is undefined");
  HYMBA_CHECK(t.is_contiguous(), op, ": ", what, " ", t.meta_str(), " must be contiguous");
}

double Communicator::all_reduce_sum(double local) {
  Tensor t = from_vector<double>({local}, {1}).to(device());
  all_reduce(t, ReduceOp::Sum);
  return t.to_vector<double>()[0];
}

int64_t Communicator::all_reduce_sum(int64_t local) {
  Tensor t = from_vector<int64_t>({local}, {1}).to(device());
  all_reduce(t, ReduceOp::Sum);
  return t.to_vector<int64_t>()[0];
}

std::shared_ptr<Communicator> make_single_process_communicator() {
  return std::make_shared<SingleProcessCommunicator>();
}

}  // namespace hymba::train
