// The PALEO-style step model (models/eval/paleo.h): op costs of a traced forward pass
// worked by hand, the step estimate's arithmetic, profiling replays the ops it knows.
#include "test_util.h"

#include <kiln/models/eval/paleo.h>

using namespace kiln;

namespace {

std::shared_ptr<nn::Sequential> small_cnn() {
  manual_seed(3);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1, 1, 1, false),
                                          std::make_shared<nn::BatchNorm2d>(8), std::make_shared<nn::ReLU>(),
                                          std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8 * 6 * 6, 5));
}

const eval::OpCost* find_op(const eval::ModelCost& c, const std::string& name) {
  for (const auto& op : c.ops)
    if (op.op == name) return &op;
  return nullptr;
}

}  // namespace

TEST_CASE("paleo: a traced forward's op costs by hand", "[models][paleo]") {
  auto m = small_cnn();
  const eval::ModelCost c = eval::trace_cost(*m, randn({4, 3, 6, 6}));
  CHECK(c.batch == 4);
  CHECK(c.params == 8 * 3 * 9 + 8 + 8 + 8 * 36 * 5 + 5);
  const eval::OpCost* conv = find_op(c, "conv2d");
  REQUIRE(conv);
  CHECK(conv->product);
  CHECK(conv->flops == 2.0 * 4 * 8 * 6 * 6 * (3 * 9));              // 2 x outputs x MACs per output
  CHECK(conv->bytes == 4.0 * (4 * 3 * 36 + 8 * 3 * 9 + 4 * 8 * 36));  // x, w read; y written
  CHECK(!conv->input_grad);  // the image needs no gradient
  CHECK(conv->output == Shape{4, 8, 6, 6});
  const eval::OpCost* mm = find_op(c, "linear");  // the Linear's product, bias included
  REQUIRE(mm);
  CHECK(mm->flops == 2.0 * 4 * 5 * 288);
  const eval::OpCost* r = find_op(c, "relu");
  REQUIRE(r);
  CHECK(!r->product);
  CHECK(r->bytes == 2 * 4.0 * 4 * 8 * 36);  // read and write once
  CHECK(r->flops == 4.0 * 8 * 36);
  CHECK(c.product_flops == conv->flops + mm->flops);
  // The trace leaves BatchNorm's running statistics as they were.
  auto bn = std::dynamic_pointer_cast<nn::BatchNorm2d>(m->named_children()[1].second);
  CHECK(sum(abs(bn->get_buffer("running_mean"))).item<double>() == 0.0);
  REQUIRE_KILN_ERROR(eval::trace_cost(*m, Tensor()), "needs an example batch");
}

TEST_CASE("paleo: the step estimate's arithmetic", "[models][paleo]") {
  eval::ModelCost c;
  c.batch = 10;
  c.params = 1000;
  c.ops.push_back({"conv2d", 2e9, 1e6, true, {}, {}, true, 0, 0});
  c.ops.push_back({"relu", 1e6, 8e6, false, {}, {}, true, 0, 0});
  eval::DeviceSpeed d;
  d.flops_per_s = 1e12;
  d.conv_flops_per_s = 2e12;
  d.bytes_per_s = 1e10;
  d.dispatch_s = 1e-6;
  // batch 20 = twice the traced batch: conv 2 x 2e9 / 2e12 = 2 ms, relu 2 x 8e6 / 1e10 = 1.6 ms
  const eval::StepEstimate e = eval::estimate_step(c, d, 20, 28);
  CHECK(e.forward_s == Approx(2e-3 + 1.6e-3 + 2e-6));
  CHECK(e.backward_s == Approx(2 * (2e-3 + 1.6e-3) + 4e-6));
  CHECK(e.update_s == Approx(1000 * 28 / 1e10 + 4e-6));
  CHECK(e.compute_s == Approx(e.forward_s + e.backward_s + e.update_s));
  // A profiled op uses its measured times instead.
  c.ops[0].measured_s = 5e-3;
  c.ops[0].measured_backward_s = 7e-3;
  const eval::StepEstimate p = eval::estimate_step(c, d, 20, 28);
  CHECK(p.forward_s == Approx(2 * 5e-3 + 1.6e-3 + 1e-6));
  CHECK(p.backward_s == Approx(2 * 7e-3 + 1e-6 + 2 * 1.6e-3 + 2e-6));
  eval::DeviceSpeed none;
  REQUIRE_KILN_ERROR(eval::estimate_step(c, none, 20), "device speeds must be positive");
  REQUIRE_KILN_ERROR(eval::estimate_step(c, d, 0), "batch must be positive");
}

TEST_CASE("paleo: profiling replays the ops it can rebuild", "[models][paleo]") {
  auto m = small_cnn();
  eval::ModelCost c = eval::trace_cost(*m, randn({4, 3, 6, 6}));
  int syncs = 0;
  eval::profile_ops(c, 0.002, [&] { ++syncs; });
  for (const auto& op : c.ops) {
    INFO(op.op);
    const bool known = op.op == "conv2d" || op.op == "batch_norm" || op.op == "relu" || op.op == "matmul" ||
                       op.op == "linear" || op.op == "add";
    if (known) CHECK(op.measured_s > 0);
    if (known) CHECK(op.measured_backward_s > 0);
    if (!known) CHECK(op.measured_s == 0);
  }
  CHECK(syncs == 2);  // on the CPU: before and after the rounds of the whole sequence
  const eval::DeviceSpeed d = eval::measure_cpu(0.01);
  CHECK(d.flops_per_s > 1e8);
  CHECK(d.bytes_per_s > 1e8);
  CHECK(d.dispatch_s > 0);
  const eval::StepEstimate e = eval::estimate_step(c, d, 4);
  CHECK(e.compute_s > 0);
}
