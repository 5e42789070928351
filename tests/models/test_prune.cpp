// Pruning (models/prune): masks keep pruned weights at zero through optimizer steps and
// checkpoints; magnitude, N:M and the cubic schedule select what the papers say; the
// traced dependency graph groups coupled channels (residual streams, depthwise and
// grouped convolutions, the flatten before a classifier) so that physical removal keeps
// the network valid and computing the same function; cost counting and the MACs plan.
#include <map>
#include <set>

#include "test_util.h"

using namespace kiln;
using namespace kiln::prune;

namespace {

std::shared_ptr<nn::Sequential> small_resnet(uint64_t seed, int64_t width = 4) {
  Generator gen(seed);
  models::ResNetCNNOptions o;
  o.width = width;
  auto m = models::resnet_cnn(o, gen);
  // BatchNorm with non-trivial statistics and scales, so the pruned function is not trivial
  NoGradGuard ng;
  int k = 0;
  for (auto& mod : m->modules())
    if (auto b = std::dynamic_pointer_cast<nn::BatchNorm2d>(mod)) {
      b->weight.copy_(test::random_tensor(b->weight.sizes(), DType::F32, 100 + k, 0.5) + 1.0);
      b->bias.copy_(test::random_tensor(b->bias.sizes(), DType::F32, 200 + k, 0.5));
      b->running_mean.copy_(test::random_tensor(b->running_mean.sizes(), DType::F32, 300 + k, 0.2));
      b->running_var.copy_(abs(test::random_tensor(b->running_var.sizes(), DType::F32, 400 + k)) + 0.5);
      ++k;
    }
  m->eval();
  return m;
}

// Zeroes, in the dense model, everything the channels own as producers (weight rows,
// biases, BatchNorm scales and shifts): the channel then carries zeros everywhere, so
// the dense model computes what the pruned one does.
void zero_channels(nn::Module& m, const DependencyGraph& g, const std::vector<std::vector<int64_t>>& remove) {
  NoGradGuard ng;
  for (size_t gi = 0; gi < remove.size(); ++gi)
    for (int64_t c : remove[gi])
      for (const Slice& s : g.groups()[gi].channels[c].slices) {
        if (!s.producer || s.name.find("running_") != std::string::npos) continue;
        Tensor t = m.get_parameter(s.name);
        Tensor row = t.select(s.dim, s.index);
        fill_(row, 0.0);
      }
}

// Removes every second channel (at least one kept) of every group.
std::vector<std::vector<int64_t>> every_second(const DependencyGraph& g) {
  std::vector<std::vector<int64_t>> r;
  for (const Group& grp : g.groups()) {
    std::vector<int64_t> v;
    for (int64_t c = 0; c < static_cast<int64_t>(grp.channels.size()); c += 2) v.push_back(c);
    if (v.size() == grp.channels.size()) v.pop_back();
    r.push_back(v);
  }
  return r;
}

int64_t zeros_in(const Tensor& t) {
  int64_t n = 0;
  for (double v : test::values(t)) n += v == 0.0;
  return n;
}

}  // namespace

TEST_CASE("prune::Masks keep pruned weights at zero through Adam steps and checkpoints", "[prune]") {
  auto lin = std::make_shared<nn::Linear>(6, 4);
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("fc", lin);
  Masks masks(model);
  Tensor mask = from_vector(std::vector<float>{1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0},
                            {4, 6});
  masks.set("fc.weight", mask);
  CHECK(zeros_in(lin->weight) == 9);
  CHECK(masks.sparsity() == Approx(9.0 / 24.0));
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.1;
  AdamW opt(model->parameters(), o);
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    sum(mul((*model)(test::random_tensor({3, 6}, DType::F32, step)), 3.0)).backward();
    masks.mask_gradients();
    CHECK(zeros_in(lin->weight.grad()) >= 9);
    opt.step();
    masks.apply();
    CHECK(test::equal(mul(lin->weight, sub(1.0, mask)), zeros({4, 6})));
  }
  CHECK(zeros_in(lin->weight) == 9);
  // into a checkpoint and back into a fresh model
  auto state = masks.state_dict();
  auto model2 = std::make_shared<nn::Sequential>();
  model2->push_back("fc", std::make_shared<nn::Linear>(6, 4));
  Masks m2(model2);
  m2.load_state_dict(state);
  CHECK(m2.names() == std::vector<std::string>{"fc.weight"});
  CHECK(zeros_in(model2->get_parameter("fc.weight")) == 9);
  m2.make_permanent();
  CHECK(m2.empty());
  CHECK_THROWS_WITH(masks.set("fc.weight", ones({6, 4})), Catch::Contains("must have its shape [4, 6]"));
  CHECK_THROWS_WITH(masks.set("fc.nope", ones({4, 6})), Catch::Contains("nope"));
  CHECK_THROWS_WITH(m2.load_state_dict({{"fc.bias", ones({3})}}), Catch::Contains("has shape [3]"));
}

TEST_CASE("prune::magnitude_masks: layer-wise and global, deterministic, monotone", "[prune]") {
  Tensor a = from_vector(std::vector<float>{0.5f, -0.1f, 0.3f, -0.9f}, {2, 2});
  Tensor b = from_vector(std::vector<float>{0.2f, 0.05f, -0.7f, 0.4f, 0.01f, 0.6f}, {3, 2});
  std::vector<std::pair<std::string, Tensor>> w{{"a", a}, {"b", b}};
  auto layer = magnitude_masks(w, 0.5, Scope::Layer);
  CHECK(test::values(layer["a"]) == std::vector<double>{1, 0, 0, 1});
  CHECK(test::values(layer["b"]) == std::vector<double>{0, 0, 1, 1, 0, 1});
  auto global = magnitude_masks(w, 0.5, Scope::Global);  // 5 of 10 go: 0.01 0.05 0.1 0.2 0.3
  CHECK(test::values(global["a"]) == std::vector<double>{1, 0, 0, 1});
  CHECK(test::values(global["b"]) == std::vector<double>{0, 0, 1, 1, 0, 1});
  auto g3 = magnitude_masks(w, 0.3, Scope::Global);  // 3 of 10: 0.01 0.05 0.1
  CHECK(test::values(g3["a"]) == std::vector<double>{1, 0, 1, 1});
  CHECK(test::values(g3["b"]) == std::vector<double>{1, 0, 1, 1, 0, 1});
  // ties break by position; a weight already masked stays pruned even when it has grown
  Tensor t = from_vector(std::vector<float>{1, 1, 1, 1}, {4});
  CHECK(test::values(magnitude_masks({{"t", t}}, 0.5, Scope::Layer)["t"]) == std::vector<double>{0, 0, 1, 1});
  auto lin = std::make_shared<nn::Linear>(2, 2);
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("fc", lin);
  Masks masks(model);
  {
    NoGradGuard ng;
    lin->weight.copy_(from_vector(std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f}, {2, 2}));
  }
  masks.set("fc.weight", from_vector(std::vector<float>{1, 1, 1, 0}, {2, 2}));
  {
    NoGradGuard ng;
    lin->weight.copy_(from_vector(std::vector<float>{0.1f, 0.2f, 0.3f, 9.0f}, {2, 2}));
  }
  auto m2 = magnitude_masks(prunable_weights(*model), 0.5, Scope::Layer, &masks);
  CHECK(test::values(m2["fc.weight"]) == std::vector<double>{0, 1, 1, 0});
  CHECK_THROWS_WITH(magnitude_masks(w, 1.0, Scope::Layer), Catch::Contains("[0, 1)"));
  CHECK(prunable_weights(*small_resnet(1)).size() == 10);  // 7 convs + 2 shortcut convs + fc
}

TEST_CASE("prune::nm_mask keeps the n largest of every m along the input dimension", "[prune]") {
  Tensor w = from_vector(std::vector<float>{1, -5, 3, 2, 0, 0, -1, 4,  //
                                            9, 8, 7, 6, 0.1f, -0.2f, 0.3f, -0.4f},
                         {2, 8});
  CHECK(test::values(nm_mask(w, 2, 4)) ==
        std::vector<double>{0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1});
  // a convolution: groups of m input channels at each kernel position
  Tensor c = test::random_tensor({3, 8, 3, 3}, DType::F32, 5);
  Tensor m = nm_mask(c, 2, 4);
  std::vector<double> cv = test::values(c), mv = test::values(m);
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t k = 0; k < 9; ++k)
      for (int64_t c0 = 0; c0 < 8; c0 += 4) {
        int kept = 0;
        double min_kept = 1e9, max_dropped = 0;
        for (int64_t j = 0; j < 4; ++j) {
          const size_t i = static_cast<size_t>((o * 8 + c0 + j) * 9 + k);
          if (mv[i] == 1) ++kept, min_kept = std::min(min_kept, std::fabs(cv[i]));
          else max_dropped = std::max(max_dropped, std::fabs(cv[i]));
        }
        CHECK(kept == 2);
        CHECK(min_kept >= max_dropped);
      }
  CHECK_FALSE(nm_applicable(test::random_tensor({4, 1, 3, 3}, DType::F32, 1), 4));
  CHECK_THROWS_WITH(nm_mask(test::random_tensor({4, 6}, DType::F32, 1), 2, 4), Catch::Contains("not a multiple of 4"));
}

TEST_CASE("prune::gradual_sparsity is Zhu & Gupta's cubic", "[prune]") {
  CHECK(gradual_sparsity(0, 0.0, 0.9, 10, 110) == 0.0);
  CHECK(gradual_sparsity(10, 0.0, 0.9, 10, 110) == 0.0);
  CHECK(gradual_sparsity(60, 0.0, 0.9, 10, 110) == Approx(0.9 - 0.9 * 0.125));
  CHECK(gradual_sparsity(85, 0.1, 0.9, 10, 110) == Approx(0.9 - 0.8 * std::pow(0.25, 3)));
  CHECK(gradual_sparsity(500, 0.0, 0.9, 10, 110) == 0.9);
}

TEST_CASE("prune::DependencyGraph groups a residual network's channels and removal keeps its function",
          "[prune][graph]") {
  auto m = small_resnet(3, 4);
  Tensor x = test::random_tensor({2, 1, 12, 12}, DType::F32, 9);
  DependencyGraph g(m, x);
  // stem + block1 (residual stream), block1.conv1, block2.conv1, block2's stream
  // (conv2 + shortcut), block3.conv1, block3's stream (with the classifier's columns)
  REQUIRE(g.groups().size() == 6);
  std::map<std::string, size_t> size;
  for (const Group& grp : g.groups()) size[grp.name] = grp.channels.size();
  CHECK(size["stem.weight"] == 4);
  CHECK(size["block1.conv1.weight"] == 4);
  CHECK(size["block2.conv1.weight"] == 8);
  CHECK(size["block2.conv2.weight"] == 8);
  CHECK(size["block3.conv1.weight"] == 16);
  CHECK(size["block3.conv2.weight"] == 16);
  CHECK(g.blocked().empty());
  // the stem's stream owns block1.conv2's rows and block2's input columns
  const Group* stem = nullptr;
  for (const Group& grp : g.groups())
    if (grp.name == "stem.weight") stem = &grp;
  std::set<std::string> owned;
  for (const Slice& s : stem->channels[1].slices) owned.insert(s.name + ":" + std::to_string(s.dim));
  for (const char* k : {"stem.weight:0", "stem_bn.weight:0", "stem_bn.running_var:0", "block1.conv2.weight:0",
                        "block1.bn2.bias:0", "block1.conv1.weight:1", "block2.conv1.weight:1",
                        "block2.shortcut.0.weight:1"})
    CHECK(owned.count(k) == 1);
  auto remove = every_second(g);
  zero_channels(*m, g, remove);
  Tensor dense = (*m)(x);
  const int64_t params_before = m->num_parameters();
  g.prune(remove);
  Tensor pruned = (*m)(x);
  CHECK(test::allclose(pruned, dense, 1e-5, 1e-5));
  CHECK(m->num_parameters() < params_before / 2);
  auto stem_conv = std::dynamic_pointer_cast<nn::Conv2d>(m->get_submodule("stem"));
  CHECK(stem_conv->out_channels == 2);
  CHECK(std::dynamic_pointer_cast<nn::Linear>(m->get_submodule("fc"))->in_features == 8);
  CHECK(std::dynamic_pointer_cast<nn::BatchNorm2d>(m->get_submodule("block2.shortcut.1"))->num_features == 4);
  // it trains in its new shape, and traces again
  m->train();
  sum((*m)(x)).backward();
  CHECK(m->get_parameter("block3.conv2.weight").grad().sizes() == Shape{8, 8, 3, 3});
  DependencyGraph again(m, x);
  CHECK(again.groups().size() == 6);
  std::vector<std::vector<int64_t>> all(6);
  for (int64_t c = 0; c < static_cast<int64_t>(again.groups()[0].channels.size()); ++c) all[0].push_back(c);
  CHECK_THROWS_WITH(again.prune(all), Catch::Contains("would cut the network"));
}

TEST_CASE("prune::DependencyGraph couples depthwise and grouped convolutions and a flatten", "[prune][graph]") {
  Generator gen(4);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("c0", std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1));
  m->push_back("bn0", std::make_shared<nn::BatchNorm2d>(8));
  m->push_back("r0", std::make_shared<nn::ReLU>());
  m->push_back("dw", std::make_shared<nn::Conv2d>(8, 16, 3, 1, 1, 1, 8));  // depthwise, multiplier 2
  m->push_back("r1", std::make_shared<nn::ReLU>());
  m->push_back("gc", std::make_shared<nn::Conv2d>(16, 6, 1, 1, 0, 1, 2));  // 2 groups
  m->push_back("pool", std::make_shared<nn::MaxPool2d>(2));
  m->push_back("flat", std::make_shared<nn::Flatten>());
  m->push_back("fc", std::make_shared<nn::Linear>(6 * 3 * 3, 5));
  {
    NoGradGuard ng;
    auto bn = std::dynamic_pointer_cast<nn::BatchNorm2d>(m->get_submodule("bn0"));
    bn->running_var.copy_(full({8}, 2.0));
    bn->running_mean.copy_(full({8}, 0.1));
  }
  m->eval();
  Tensor x = test::random_tensor({2, 3, 6, 6}, DType::F32, 2);
  DependencyGraph g(m, x);
  std::map<std::string, size_t> size;
  for (const Group& grp : g.groups()) size[grp.name] = grp.channels.size();
  CHECK(size.size() == 2);
  // c0's channel k feeds the depthwise conv's 2k and 2k+1; the grouped conv reads input i
  // and 8 + i through the same weight column, so c0's k and k + 4 are one channel
  CHECK(size["c0.weight"] == 4);
  CHECK(size["gc.weight"] == 3);  // a channel is the same row of both groups
  auto remove = every_second(g);
  zero_channels(*m, g, remove);
  Tensor dense = (*m)(x);
  g.prune(remove);
  CHECK(test::allclose((*m)(x), dense, 1e-5, 1e-5));
  auto dw = std::dynamic_pointer_cast<nn::Conv2d>(m->get_submodule("dw"));
  CHECK((dw->in_channels == 4 && dw->groups == 4 && dw->out_channels == 8));
  auto gc = std::dynamic_pointer_cast<nn::Conv2d>(m->get_submodule("gc"));
  CHECK(gc->groups == 2);
  CHECK(gc->weight.sizes()[0] % 2 == 0);
  CHECK(std::dynamic_pointer_cast<nn::Linear>(m->get_submodule("fc"))->in_features == gc->out_channels * 9);
}

TEST_CASE("prune::count_cost counts parameters and MACs from the shapes", "[prune]") {
  auto m = small_resnet(5, 16);
  Cost c = count_cost(m, zeros({1, 1, 28, 28}));
  CHECK(c.params == 77754);
  CHECK(c.nonzero == c.params);
  auto conv = [](int64_t o, int64_t i, int64_t k, int64_t hw) { return o * i * k * k * hw * hw; };
  const int64_t expected = conv(16, 1, 3, 28) + 2 * conv(16, 16, 3, 28) + conv(32, 16, 3, 14) + conv(32, 32, 3, 14) +
                           conv(32, 16, 1, 14) + conv(64, 32, 3, 7) + conv(64, 64, 3, 7) + conv(64, 32, 1, 7) + 64 * 10;
  CHECK(c.macs == expected);
  CHECK(count_cost(m, zeros({4, 1, 28, 28})).macs == expected);  // per example
  Masks masks(m);
  masks.set("fc.weight", zeros({10, 64}));
  Cost after = count_cost(m, zeros({1, 1, 28, 28}));
  CHECK(after.nonzero == c.params - 640);
  CHECK(after.nonzero_macs == expected - 640);
  CHECK(format_cost(after).find("block3.conv2") != std::string::npos);
}

TEST_CASE("prune: importance criteria, the MACs plan, and a pruned model reloaded", "[prune]") {
  auto m = small_resnet(6, 8);
  Tensor x = test::random_tensor({4, 1, 12, 12}, DType::F32, 3);
  DependencyGraph g(m, x);
  // L1: block1.conv1's channel 5 gets the largest filter, channel 2 the smallest
  {
    NoGradGuard ng;
    Tensor w = m->get_parameter("block1.conv1.weight");
    Tensor r5 = w.select(0, 5), r2 = w.select(0, 2);
    fill_(r5, 1.0);
    mul_(r2, 1e-3);
  }
  Importance l1 = l1_importance(g, *m);
  size_t gi = 0;
  for (; gi < g.groups().size(); ++gi)
    if (g.groups()[gi].name == "block1.conv1.weight") break;
  REQUIRE(gi < g.groups().size());
  auto& v = l1[gi];
  CHECK(std::max_element(v.begin(), v.end()) - v.begin() == 5);
  CHECK(std::min_element(v.begin(), v.end()) - v.begin() == 2);
  double mean = 0;
  for (double e : v) mean += e / static_cast<double>(v.size());
  CHECK(mean == Approx(1.0));  // normalised by the group's mean
  // Taylor: (sum over the channel's producer parameters of g * w)^2, by hand for one channel
  m->train();
  TaylorAccumulator taylor(g, *m);
  sum(mul((*m)(x), (*m)(x))).backward();
  taylor.accumulate();
  double s = 0;
  for (const Slice& sl : g.groups()[gi].channels[3].slices) {
    if (!sl.producer || sl.name.find("running_") != std::string::npos) continue;
    Tensor p = m->get_parameter(sl.name);
    s += sum(mul(p.grad().select(sl.dim, sl.index), p.detach().select(sl.dim, sl.index))).item<double>();
  }
  Importance ti = taylor.importance();
  Importance raw = ti;  // undo the normalisation with the group's sum of squares
  double sq = 0;
  for (size_t c = 0; c < g.groups()[gi].channels.size(); ++c) {
    double t = 0;
    for (const Slice& sl : g.groups()[gi].channels[c].slices) {
      if (!sl.producer || sl.name.find("running_") != std::string::npos) continue;
      Tensor p = m->get_parameter(sl.name);
      t += sum(mul(p.grad().select(sl.dim, sl.index), p.detach().select(sl.dim, sl.index))).item<double>();
    }
    sq += t * t / static_cast<double>(g.groups()[gi].channels.size());
  }
  CHECK(ti[gi][3] == Approx(s * s / sq).epsilon(1e-4));
  // slimming: the penalty is lambda * sign(gamma), the importance |gamma|
  m->zero_grad();
  sum((*m)(x)).backward();
  auto bn = std::dynamic_pointer_cast<nn::BatchNorm2d>(m->get_submodule("stem_bn"));
  Tensor before = bn->weight.grad().clone();
  add_slimming_penalty(*m, 0.5);
  CHECK(test::allclose(sub(bn->weight.grad(), before), full({8}, 0.5), 1e-6, 1e-6));  // the scales are positive here
  Importance sl = slimming_importance(g, *m);
  CHECK(std::isfinite(sl[gi][0]));
  m->eval();

  // the plan meets the MACs target; the pruned model has exactly the planned MACs
  MacModel macs(m, x.narrow(0, 0, 1));
  for (Scope scope : {Scope::Layer, Scope::Global}) {
    auto m2 = small_resnet(6, 8);
    DependencyGraph g2(m2, x);
    ChannelPlan plan = plan_channels(g2, l1_importance(g2, *m2), macs, 0.5, scope);
    CHECK(plan.macs_after <= plan.macs_before / 2);
    CHECK(plan.macs_after > plan.macs_before / 4);
    g2.prune(plan.remove);
    CHECK(count_cost(m2, x.narrow(0, 0, 1)).macs == plan.macs_after);
  }
  // round_to: every group keeps a multiple of it
  for (Scope scope : {Scope::Layer, Scope::Global}) {
    ChannelPlan plan = plan_channels(g, l1, macs, 0.5, scope, 0.1, 0, 4);
    CHECK(plan.macs_after <= plan.macs_before / 2);
    for (size_t k = 0; k < g.groups().size(); ++k)
      CHECK((g.groups()[k].channels.size() - plan.remove[k].size()) % 4 == 0);
  }
  CHECK_THROWS_WITH(plan_channels(g, l1, macs, 1.0, Scope::Layer), Catch::Contains("(0, 1)"));
  CHECK_THROWS_WITH(plan_channels(g, l1, macs, 0.001, Scope::Layer), Catch::Contains("cannot bring the MACs down"));

  // saved and loaded into a freshly built model of the original configuration
  DependencyGraph g3(m, x);
  ChannelPlan plan = plan_channels(g3, l1_importance(g3, *m), macs, 0.6, Scope::Layer);
  g3.prune(plan.remove);
  Tensor y = (*m)(x);
  auto state = m->state_dict();
  auto fresh = small_resnet(99, 8);
  shrink_to_state(*fresh, state);
  fresh->load_state_dict(state);
  fresh->eval();
  CHECK(test::equal((*fresh)(x), y));
  auto wide = small_resnet(1, 4);
  CHECK_THROWS_WITH(shrink_to_state(*wide, small_resnet(1, 8)->state_dict()), Catch::Contains("larger than"));
}

TEST_CASE("prune::use_sparse_kernels: a masked model gives the same outputs with the kernels it picks",
          "[prune][sparse]") {
  auto m = small_resnet(8, 8);
  Masks masks(m);
  for (auto& [name, mask] : magnitude_masks(prunable_weights(*m), 0.9, Scope::Global)) masks.set(name, mask);
  Tensor x = test::random_tensor({4, 1, 14, 14}, DType::F32, 6);
  Tensor dense;
  {
    NoGradGuard ng;
    dense = (*m)(x);
  }
  auto choices = use_sparse_kernels(m, x, 0.5, 2);
  CHECK(choices.size() >= 8);  // the 3x3 and 1x1 convolutions and the classifier are 90% zeros or close
  bool any = false;
  for (const SparseChoice& c : choices) {
    CHECK(c.sparsity >= 0.5);
    CHECK(c.batch == 4);
    CHECK((c.dense_ms > 0 && c.sparse_ms > 0 && c.dense_ms_b1 > 0 && c.sparse_ms_b1 > 0));
    CHECK(c.sparse == (c.sparse_ms < c.dense_ms));
    CHECK(c.sparse_b1 == (c.sparse_ms_b1 < c.dense_ms_b1));
    any = any || c.sparse || c.sparse_b1;
  }
  // whichever kernel each layer took, the function is the same (forced below where none won)
  if (!any) std::dynamic_pointer_cast<nn::Conv2d>(m->get_submodule("block2.conv2"))->eval_kernel =
      [w = to_csr(m->get_parameter("block2.conv2.weight").detach())](const Tensor& in) {
        return sparse_conv2d(in, w, Tensor(), 1, 1);
      };
  {
    NoGradGuard ng;
    CHECK(test::allclose((*m)(x), dense, 1e-4, 1e-5));
    // one image: the kernels chosen for small batches, the same function
    CHECK(test::allclose((*m)(x.narrow(0, 0, 1)), dense.narrow(0, 0, 1), 1e-4, 1e-5));
  }
  CHECK(format_sparse_choices(choices).find("block1.conv1") != std::string::npos);
  CHECK(format_sparse_choices(choices).find("batch 4") != std::string::npos);
  // in training mode (or with gradients) the dense kernels run: gradients flow as before
  m->train();
  sum((*m)(x)).backward();
  CHECK(m->get_parameter("block2.conv2.weight").grad().defined());
  clear_sparse_kernels(*m);
  CHECK_FALSE(std::dynamic_pointer_cast<nn::Conv2d>(m->get_submodule("block2.conv2"))->eval_kernel);
}
