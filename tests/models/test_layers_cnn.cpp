// Layers over the convolution, normalisation, pooling, dropout and embedding ops:
// parameter shapes and PyTorch's default init, forward against the op (and hand values),
// buffers and modes, printouts, and a small CNN end to end.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using namespace kiln::nn;

namespace {

std::vector<std::string> param_names(Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}

std::vector<std::string> buffer_names(Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_buffers()) out.push_back(n);
  return out;
}

double max_abs(const Tensor& t) { return max(abs(t)).item<double>(); }

}  // namespace

TEST_CASE("nn::Conv2d: shapes, default init, forward, printout", "[nn]") {
  manual_seed(3);
  Conv2d conv(3, 16, 3);
  CHECK(conv.weight.sizes() == Shape{16, 3, 3, 3});
  CHECK(conv.bias.sizes() == Shape{16});
  CHECK(param_names(conv) == std::vector<std::string>{"weight", "bias"});
  double bound = 1.0 / std::sqrt(27.0);  // fan_in = 3 * 3 * 3
  CHECK(max_abs(conv.weight) <= bound);
  CHECK(max_abs(conv.weight) > 0.9 * bound);
  CHECK(max_abs(conv.bias) <= bound);
  CHECK(conv.to_string() == "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1))");

  Tensor x = test::random_tensor({2, 3, 8, 7}, DType::F32, 5);
  Tensor y = conv.forward(x);
  CHECK(y.sizes() == Shape{2, 16, 6, 5});
  CHECK_EQUAL_T(y, conv2d(x, conv.weight, conv.bias));

  Conv2d strided(4, 8, Int2(3, 5), 2, Int2(1, 2), 1, 2, false);
  CHECK(strided.weight.sizes() == Shape{8, 2, 3, 5});
  CHECK_FALSE(strided.bias.defined());
  CHECK(max_abs(strided.weight) <= 1.0 / std::sqrt(30.0));
  CHECK(strided.to_string() ==
        "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 2), groups=2, bias=false)");
  Tensor x4 = test::random_tensor({1, 4, 9, 9}, DType::F32, 6);
  CHECK_EQUAL_T(strided.forward(x4), conv2d(x4, strided.weight, Tensor(), 2, Int2(1, 2), 1, 2));
  CHECK(Conv2d(1, 1, 3, 1, 1, 2, 1, true, PaddingMode::Reflect).to_string() ==
        "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(2, 2), padding_mode=reflect)");

  // Hand values: a 2x2 box filter of ones over ones, plus a bias.
  Conv2d box(1, 1, 2);
  init::ones_(box.weight);
  init::constant_(box.bias, 0.5);
  CHECK(test::values(box.forward(ones({1, 1, 3, 3}))) == std::vector<double>(4, 4.5));

  REQUIRE_KILN_ERROR(Conv2d(3, 8, 3, 1, 0, 1, 2), "divisible by groups");
  REQUIRE_KILN_ERROR(Conv2d(0, 8, 3), "Conv2d");
}

TEST_CASE("nn::ConvTranspose2d: shapes, default init, forward, printout", "[nn]") {
  manual_seed(4);
  ConvTranspose2d up(4, 6, 3, 2, 1, 1);
  CHECK(up.weight.sizes() == Shape{4, 6, 3, 3});
  // PyTorch's fan_in for this weight shape: size(1) * kH * kW.
  CHECK(max_abs(up.weight) <= 1.0 / std::sqrt(54.0));
  CHECK(max_abs(up.bias) <= 1.0 / std::sqrt(54.0));
  Tensor x = test::random_tensor({1, 4, 5, 5}, DType::F32, 7);
  Tensor y = up.forward(x);
  CHECK(y.sizes() == Shape{1, 6, 10, 10});  // (5 - 1) * 2 - 2 + 3 + 1
  CHECK_EQUAL_T(y, conv_transpose2d(x, up.weight, up.bias, 2, 1, 1));
  CHECK(up.to_string() ==
        "ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))");
  ConvTranspose2d grouped(4, 6, 2, 1, 0, 0, 2, false);
  CHECK(grouped.weight.sizes() == Shape{4, 3, 2, 2});
  CHECK(grouped.to_string() == "ConvTranspose2d(4, 6, kernel_size=(2, 2), stride=(1, 1), groups=2, bias=false)");
  REQUIRE_KILN_ERROR(ConvTranspose2d(4, 6, 3, 1, 0, 1), "output_padding");
}

TEST_CASE("nn::BatchNorm2d: parameters, buffers, training and eval", "[nn]") {
  BatchNorm2d bn(3);
  CHECK(param_names(bn) == std::vector<std::string>{"weight", "bias"});
  CHECK(buffer_names(bn) == std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
  CHECK(test::values(bn.weight) == std::vector<double>{1, 1, 1});
  CHECK(test::values(bn.bias) == std::vector<double>{0, 0, 0});
  CHECK(bn.state_dict().size() == 5);
  CHECK(bn.to_string() == "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");

  Tensor x = add(mul(test::random_tensor({4, 3, 5, 5}, DType::F32, 8), 2.0), 1.0);
  Tensor y = bn.forward(x);
  CHECK_CLOSE(y, batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true));
  CHECK(bn.num_batches_tracked.item<int64_t>() == 1);
  Tensor batch_mean = mean(x, {0, 2, 3});
  Tensor batch_var = var(x, {0, 2, 3});  // unbiased, as the running estimate uses
  CHECK_CLOSE_TOL(bn.running_mean, mul(batch_mean, 0.1), 1e-5, 1e-6);
  CHECK_CLOSE_TOL(bn.running_var, add(mul(batch_var, 0.1), 0.9), 1e-5, 1e-6);

  // Eval: the running statistics, no update.
  bn.eval();
  Tensor rm = bn.running_mean.clone(), rv = bn.running_var.clone();
  Tensor ye = bn.forward(x);
  Shape c{1, 3, 1, 1};
  CHECK_CLOSE_TOL(ye, div(sub(x, rm.reshape(c)), sqrt(add(rv.reshape(c), 1e-5))), 1e-5, 1e-5);
  CHECK(test::bit_equal(bn.running_mean, rm));
  CHECK(bn.num_batches_tracked.item<int64_t>() == 1);

  // momentum = nullopt: a cumulative average of the batch statistics.
  BatchNorm2d avg(3, 1e-5, std::nullopt);
  Tensor x2 = test::random_tensor({4, 3, 5, 5}, DType::F32, 9);
  avg.forward(x);
  avg.forward(x2);
  CHECK_CLOSE_TOL(avg.running_mean, mul(add(mean(x, {0, 2, 3}), mean(x2, {0, 2, 3})), 0.5), 1e-5, 1e-6);
  CHECK(avg.to_string() == "BatchNorm2d(3, eps=1e-05, momentum=none, affine=true, track_running_stats=true)");

  // Without running statistics, eval normalises with the batch's.
  BatchNorm2d plain(3, 1e-3, 0.1, false, false);
  CHECK(plain.parameters().empty());
  CHECK(plain.buffers().empty());
  plain.eval();
  CHECK_CLOSE(plain.forward(x), batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-3));

  REQUIRE_KILN_ERROR(bn.forward(ones({3, 5, 5})), "4-D");
  // Gradients reach weight and bias.
  bn.train();
  sum(mul(bn.forward(x), x)).backward();
  CHECK(bn.weight.grad().defined());
  CHECK(bn.bias.grad().defined());
}

TEST_CASE("nn::LayerNorm and nn::GroupNorm", "[nn]") {
  LayerNorm ln({8});
  CHECK(param_names(ln) == std::vector<std::string>{"weight", "bias"});
  CHECK(ln.weight.sizes() == Shape{8});
  CHECK(ln.to_string() == "LayerNorm((8,), eps=1e-05, elementwise_affine=true)");
  Tensor x = test::random_tensor({2, 5, 8}, DType::F32, 10);
  init::normal_(ln.weight);
  init::normal_(ln.bias);
  CHECK_EQUAL_T(ln.forward(x), layer_norm(x, {8}, ln.weight, ln.bias));
  LayerNorm ln2({5, 8}, 1e-6, true, false);
  CHECK(param_names(ln2) == std::vector<std::string>{"weight"});
  CHECK(ln2.to_string() == "LayerNorm((5, 8), eps=1e-06, elementwise_affine=true)");
  CHECK_EQUAL_T(ln2.forward(x), layer_norm(x, {5, 8}, ln2.weight, Tensor(), 1e-6));
  CHECK(LayerNorm({4}, 1e-5, false).parameters().empty());
  REQUIRE_KILN_ERROR(ln.forward(ones({2, 7})), "layer_norm");

  GroupNorm gn(2, 6);
  CHECK(gn.weight.sizes() == Shape{6});
  CHECK(gn.to_string() == "GroupNorm(2, 6, eps=1e-05, affine=true)");
  Tensor xg = test::random_tensor({3, 6, 4, 4}, DType::F32, 11);
  CHECK_EQUAL_T(gn.forward(xg), group_norm(xg, 2, gn.weight, gn.bias));
  REQUIRE_KILN_ERROR(GroupNorm(4, 6), "divisible");
}

TEST_CASE("nn pooling layers", "[nn]") {
  Tensor x = arange(16.0, TensorOptions(DType::F32)).reshape({1, 1, 4, 4});
  MaxPool2d mp(2);
  CHECK(test::values(mp.forward(x)) == std::vector<double>{5, 7, 13, 15});
  CHECK(mp.to_string() == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=false)");
  MaxPool2d mp3(3, 1, 1);
  CHECK_EQUAL_T(mp3.forward(x), max_pool2d(x, 3, Int2(1), 1));
  CHECK(mp3.to_string() == "MaxPool2d(kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=false)");

  AvgPool2d ap(2);
  CHECK(test::values(ap.forward(x)) == std::vector<double>{2.5, 4.5, 10.5, 12.5});
  CHECK(ap.to_string() == "AvgPool2d(kernel_size=2, stride=2, padding=0)");
  AvgPool2d ap2(Int2(2, 3), Int2(1, 1), 1, false, false);
  CHECK_EQUAL_T(ap2.forward(x), avg_pool2d(x, Int2(2, 3), Int2(1, 1), 1, false, false));
  CHECK(ap2.to_string() == "AvgPool2d(kernel_size=(2, 3), stride=1, padding=1)");

  AdaptiveAvgPool2d gap(1);
  CHECK(test::values(gap.forward(x)) == std::vector<double>{7.5});
  CHECK(gap.to_string() == "AdaptiveAvgPool2d(output_size=1)");
  AdaptiveAvgPool2d ap23(Int2(2, 3));
  CHECK(ap23.forward(x).sizes() == Shape{1, 1, 2, 3});
  CHECK(ap23.to_string() == "AdaptiveAvgPool2d(output_size=(2, 3))");
  REQUIRE_KILN_ERROR(AdaptiveAvgPool2d(0), "output_size");
}

TEST_CASE("nn::Dropout: training drops and rescales, eval passes through", "[nn]") {
  Generator g(12);
  Dropout drop(0.25, &g);
  CHECK(drop.to_string() == "Dropout(p=0.25)");
  Tensor x = ones({100, 100});
  Tensor y = drop.forward(x);
  std::vector<double> v = test::values(y);
  int64_t zeros_count = 0, bad = 0;
  for (double e : v) {
    if (e == 0) ++zeros_count;
    else if (std::fabs(e - 1.0 / 0.75) > 1e-6) ++bad;  // kept values are scaled by 1 / (1 - p)
  }
  CHECK(bad == 0);
  CHECK(std::fabs(static_cast<double>(zeros_count) / 10000.0 - 0.25) < 0.02);
  // The same generator state drops the same elements.
  Generator g2(12);
  CHECK(test::bit_equal(dropout(x, 0.25, true, &g2), y));

  auto seq = std::make_shared<Sequential>(std::make_shared<Dropout>(0.5));
  seq->eval();
  CHECK(test::bit_equal(seq->forward(x), x));
  REQUIRE_KILN_ERROR(Dropout(1.5), "p must lie in [0, 1]");
}

TEST_CASE("nn::Embedding: N(0, 1) init, padding row, lookup, printout", "[nn]") {
  manual_seed(13);
  Embedding big(1000, 64);
  CHECK(big.weight.sizes() == Shape{1000, 64});
  CHECK(std::fabs(kiln::std(big.weight).item<double>() - 1.0) < 0.02);
  CHECK(std::fabs(mean(big.weight).item<double>()) < 0.02);
  CHECK(big.to_string() == "Embedding(1000, 64)");

  Embedding emb(10, 3, 0);
  CHECK(test::values(emb.weight.select(0, 0)) == std::vector<double>{0, 0, 0});
  CHECK(emb.to_string() == "Embedding(10, 3, padding_idx=0)");
  Tensor idx = from_vector<int64_t>({0, 4, 4, 9}, {2, 2});
  Tensor out = emb.forward(idx);
  CHECK(out.sizes() == Shape{2, 2, 3});
  CHECK_EQUAL_T(out.select(0, 1).select(0, 1), emb.weight.select(0, 9));
  sum(out).backward();
  CHECK(test::values(emb.weight.grad().select(0, 0)) == std::vector<double>{0, 0, 0});
  CHECK(test::values(emb.weight.grad().select(0, 4)) == std::vector<double>{2, 2, 2});

  Embedding last(5, 2, -1);
  CHECK(*last.padding_idx == 4);
  CHECK(test::values(last.weight.select(0, 4)) == std::vector<double>{0, 0});
  REQUIRE_KILN_ERROR(Embedding(5, 2, 5), "padding_idx");
}

TEST_CASE("nn: a small CNN end to end (names, modes, state dict, gradcheck in f64)", "[nn]") {
  manual_seed(14);
  auto make = [] {
    return std::make_shared<Sequential>(std::make_shared<Conv2d>(1, 4, 3, 1, 1), std::make_shared<BatchNorm2d>(4),
                                        std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2),
                                        std::make_shared<Flatten>(), std::make_shared<Dropout>(0.1),
                                        std::make_shared<Linear>(4 * 4 * 4, 3));
  };
  auto net = make();
  CHECK(param_names(*net) ==
        std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"});
  CHECK(buffer_names(*net) ==
        std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"});
  Tensor x = test::random_tensor({5, 1, 8, 8}, DType::F32, 15);
  Tensor y = net->forward(x);
  CHECK(y.sizes() == Shape{5, 3});
  sum(y).backward();
  for (const auto& [n, p] : net->named_parameters()) {
    INFO(n);
    CHECK(p.grad().defined());
  }

  // Eval mode is deterministic; a fresh model loaded from the state dict agrees exactly.
  net->eval();
  Tensor ye = net->forward(x);
  CHECK(test::bit_equal(net->forward(x), ye));
  auto other = make();
  other->load_state_dict(net->state_dict());
  other->eval();
  CHECK(test::bit_equal(other->forward(x), ye));
  CHECK(other->get_buffer("1.num_batches_tracked").item<int64_t>() == 1);

  // In f64, the eval-mode network's gradient with respect to its input.
  net->to(DType::F64);
  CHECK(net->get_buffer("1.running_var").dtype() == DType::F64);
  CHECK(net->get_buffer("1.num_batches_tracked").dtype() == DType::I64);
  GradcheckResult r = gradcheck([&](const std::vector<Tensor>& v) { return net->forward(v[0]); },
                                {test::random_tensor({2, 1, 8, 8}, DType::F64, 16)});
  INFO(r.message);
  CHECK(r.ok);
}
