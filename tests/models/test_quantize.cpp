// Weight quantization (models/prune/quantize.h): k-means weight sharing recovers known
// clusters from its linear initialisation, keeps pruned weights at zero and fine-tunes
// centroids with the summed gradients of Han et al.'s Eq. 3; INQ's levels, rounding rule
// (Zhou et al.'s Eq. 4), magnitude partition by the paper's portions and frozen weights;
// the size accounting; bad hyper-parameters throw kiln::Error.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "test_util.h"

using namespace kiln;
using namespace kiln::prune;

namespace {

std::shared_ptr<nn::Sequential> one_linear(int64_t in, int64_t out, uint64_t seed) {
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("fc", std::make_shared<nn::Linear>(in, out));
  NoGradGuard ng;
  model->get_parameter("fc.weight").copy_(test::random_tensor({out, in}, DType::F32, seed));
  // the bias too, so that two models made with one seed are equal
  model->get_parameter("fc.bias").copy_(test::random_tensor({out}, DType::F32, seed + 1000));
  return model;
}

// A fixed 0/1 mask with 9 zeros of 24, as in test_prune.cpp.
Tensor mask_4x6() {
  return from_vector(std::vector<float>{1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0}, {4, 6});
}

void backward_on(nn::Module& model, int64_t in, uint64_t seed) {
  Tensor y = model(test::random_tensor({5, in}, DType::F32, seed));
  sum(mul(mul(y, y), 0.5)).backward();
}

}  // namespace

TEST_CASE("prune::linear_centroids spaces k values evenly from lo to hi", "[quantize]") {
  CHECK(linear_centroids(-1.0f, 2.0f, 4) == std::vector<float>{-1.0f, 0.0f, 1.0f, 2.0f});
  CHECK(linear_centroids(0.5f, 0.5f, 3) == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK(linear_centroids(3.0f, 7.0f, 1) == std::vector<float>{3.0f});
  std::vector<float> c = linear_centroids(-0.3f, 0.5f, 16);
  for (int i = 0; i < 16; ++i) CHECK(c[i] == Approx(-0.3 + 0.8 * i / 15.0).margin(1e-7));
  CHECK_KILN_ERROR(linear_centroids(0.0f, 1.0f, 0), "k must be at least 1");
  CHECK_KILN_ERROR(linear_centroids(1.0f, 0.0f, 2), "lo <= hi");
}

TEST_CASE("prune::kmeans_1d recovers known clusters, excludes values and keeps empty clusters", "[quantize]") {
  // four tight clusters, symmetric offsets: their means are exactly the centres
  const std::vector<float> centres{-3.0f, -1.0f, 0.5f, 2.0f};
  std::vector<float> v;
  for (float c : centres)
    for (float d : {-0.02f, -0.01f, 0.0f, 0.01f, 0.02f}) v.push_back(c + d);
  std::reverse(v.begin(), v.end());  // order does not matter
  KMeans km = kmeans_1d(v, 4);
  REQUIRE(km.centroids.size() == 4);
  CHECK(km.converged);
  for (int j = 0; j < 4; ++j) CHECK(km.centroids[j] == Approx(centres[j]).margin(1e-6));
  for (size_t i = 0; i < v.size(); ++i) CHECK(km.centroids[km.index[i]] == Approx(v[i]).margin(0.021));

  // random clusters of unequal sizes and spreads: Lloyd iterates to the clusters' means
  std::vector<float> r;
  std::vector<double> mean(3, 0.0);
  const std::vector<float> rc{-0.4f, 0.1f, 0.9f};
  const std::vector<int> sizes{50, 400, 20};
  std::vector<double> noise = test::values(test::random_tensor({470}, DType::F32, 7, 0.05));
  size_t t = 0;
  for (int j = 0; j < 3; ++j) {
    for (int i = 0; i < sizes[j]; ++i, ++t) {
      r.push_back(rc[j] + static_cast<float>(noise[t]));
      mean[j] += r.back();
    }
    mean[j] /= sizes[j];
  }
  km = kmeans_1d(r, 3);
  CHECK(km.converged);
  CHECK(km.iterations >= 1);
  for (int j = 0; j < 3; ++j) CHECK(km.centroids[j] == Approx(mean[j]).margin(1e-5));

  // excluded values get -1 and do not move the initialisation (min/max of the included)
  std::vector<float> x{-100.0f, 0.0f, 0.1f, 0.9f, 1.0f, 100.0f};
  std::vector<uint8_t> inc{0, 1, 1, 1, 1, 0};
  km = kmeans_1d(x, 2, inc, 1);
  CHECK(km.index == std::vector<int32_t>{-1, 0, 0, 1, 1, -1});
  CHECK(km.centroids[0] == Approx(0.05f));
  CHECK(km.centroids[1] == Approx(0.95f));

  // a centroid that gets no values stays at its linear position
  std::vector<float> y{0.0f, 0.0f, 1.0f, 1.0f, 10.0f};
  km = kmeans_1d(y, 3);
  CHECK(km.centroids == std::vector<float>{0.5f, 5.0f, 10.0f});
  CHECK(km.index == std::vector<int32_t>{0, 0, 0, 0, 2});

  CHECK_KILN_ERROR(kmeans_1d({}, 4), "nothing to cluster");
  CHECK_KILN_ERROR(kmeans_1d({1.0f, 2.0f}, 2, {0, 0}), "nothing to cluster");
  CHECK_KILN_ERROR(kmeans_1d({1.0f}, 0), "k must be at least 1");
  CHECK_KILN_ERROR(kmeans_1d({1.0f, NAN}, 2), "not finite");
}

TEST_CASE("prune::SharedWeights: weights become codebook[index]; pruned zeros stay zero through AdamW", "[quantize]") {
  auto model = one_linear(6, 4, 1);
  Masks masks(model);
  masks.set("fc.weight", mask_4x6());
  SharedWeights shared(model);
  shared.quantize("fc.weight", 2, &masks);
  masks.make_permanent();  // the shared weights keep the zeros themselves from here
  Tensor w = model->get_parameter("fc.weight");
  const std::vector<float> m = mask_4x6().to_vector<float>();
  auto check_state = [&] {
    std::vector<float> wv = w.to_vector<float>(), cb = shared.codebook("fc.weight").to_vector<float>();
    std::vector<int64_t> idx = shared.index("fc.weight").to_vector<int64_t>();
    REQUIRE(cb.size() == 4);
    std::set<float> distinct;
    for (size_t i = 0; i < wv.size(); ++i) {
      if (m[i] == 0.0f) {
        CHECK(idx[i] == -1);
        CHECK(wv[i] == 0.0f);
      } else {
        REQUIRE(idx[i] >= 0);
        CHECK(wv[i] == cb[idx[i]]);
        distinct.insert(wv[i]);
      }
    }
    CHECK(distinct.size() <= 4);
  };
  check_state();
  CHECK(shared.coded("fc.weight") == 15);
  CHECK(shared.bits("fc.weight") == 2);
  AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  AdamW opt(model->parameters(), o);
  const std::vector<float> cb0 = shared.codebook("fc.weight").to_vector<float>();
  for (int step = 0; step < 4; ++step) {
    opt.zero_grad();
    backward_on(*model, 6, 10 + step);
    shared.share_gradients();
    opt.step();
    shared.apply();
    check_state();
  }
  CHECK(shared.codebook("fc.weight").to_vector<float>() != cb0);  // the centroids did train

  // a checkpoint round trip into a fresh model gives the same weights
  auto state = shared.state_dict();
  CHECK(state.count("fc.weight.codebook") == 1);
  CHECK(state.at("fc.weight.index").dtype() == DType::I32);
  auto fresh = one_linear(6, 4, 99);
  SharedWeights again(fresh);
  again.load_state_dict(state);
  CHECK(test::equal(fresh->get_parameter("fc.weight"), w));
  CHECK_KILN_ERROR(again.load_state_dict({{"fc.weight.codebook", ones({4})}}), "lacks its codebook, index or bits");
}

TEST_CASE("prune::SharedWeights: a centroid's gradient is the sum of its weights' gradients (Han et al. Eq. 3)",
          "[quantize]") {
  auto model = one_linear(6, 4, 2);
  Masks masks(model);
  masks.set("fc.weight", mask_4x6());
  SharedWeights shared(model);
  shared.quantize("fc.weight", 2, &masks);
  Tensor w = model->get_parameter("fc.weight");
  backward_on(*model, 6, 3);
  const std::vector<double> g = test::values(w.grad());
  const std::vector<int64_t> idx = shared.index("fc.weight").to_vector<int64_t>();
  std::vector<double> want(4, 0.0);
  for (size_t i = 0; i < g.size(); ++i)
    if (idx[i] >= 0) want[idx[i]] += g[i];
  const std::vector<double> got = test::values(shared.centroid_gradient("fc.weight"));
  REQUIRE(got.size() == 4);
  for (int j = 0; j < 4; ++j) CHECK(got[j] == Approx(want[j]).margin(1e-5));

  // plain SGD on the centroids: C' = C - lr dL/dC, the weights follow
  const std::vector<double> c0 = test::values(shared.codebook("fc.weight"));
  shared.sgd_step(0.1);
  const std::vector<double> c1 = test::values(shared.codebook("fc.weight"));
  for (int j = 0; j < 4; ++j) CHECK(c1[j] == Approx(c0[j] - 0.1 * want[j]).margin(1e-6));
  const std::vector<double> wv = test::values(w);
  for (size_t i = 0; i < wv.size(); ++i) CHECK(wv[i] == (idx[i] >= 0 ? Approx(c1[idx[i]]) : Approx(0.0)));

  // share_gradients + an SGD optimizer + apply does the same update
  auto model2 = one_linear(6, 4, 2);
  Masks masks2(model2);
  masks2.set("fc.weight", mask_4x6());
  SharedWeights shared2(model2);
  shared2.quantize("fc.weight", 2, &masks2);
  backward_on(*model2, 6, 3);
  shared2.share_gradients();
  const std::vector<double> g2 = test::values(model2->get_parameter("fc.weight").grad());
  for (size_t i = 0; i < g2.size(); ++i) CHECK(g2[i] == (idx[i] >= 0 ? Approx(want[idx[i]]).margin(1e-5) : Approx(0.0)));
  SGDOptions so;
  so.lr = 0.1;
  SGD sgd({model2->get_parameter("fc.weight")}, so);
  sgd.step();
  shared2.apply();
  CHECK_CLOSE(shared2.codebook("fc.weight"), shared.codebook("fc.weight"));
  CHECK_CLOSE(model2->get_parameter("fc.weight"), w);
}

TEST_CASE("prune::SharedWeights: bad bits, empty and all-pruned layers throw", "[quantize]") {
  auto model = one_linear(6, 4, 4);
  SharedWeights shared(model);
  CHECK_KILN_ERROR(shared.quantize("fc.weight", 0), "1 to 8 bits");
  CHECK_KILN_ERROR(shared.quantize("fc.weight", 9), "1 to 8 bits");
  CHECK_KILN_ERROR(shared.quantize_all(9), "1 to 8 bits");
  CHECK_KILN_ERROR(shared.quantize("fc.nope", 4), "nope");
  Masks masks(model);
  masks.set("fc.weight", zeros({4, 6}));
  CHECK_KILN_ERROR(shared.quantize("fc.weight", 4, &masks), "every weight of 'fc.weight' is pruned");
  auto empty = std::make_shared<nn::Sequential>();
  empty->push_back("fc", std::make_shared<nn::Linear>(6, 0));
  REQUIRE(empty->get_parameter("fc.weight").numel() == 0);
  SharedWeights se(empty);
  CHECK_KILN_ERROR(se.quantize("fc.weight", 4), "is empty");
  CHECK_KILN_ERROR(Inq(empty, 3), "is empty");
  CHECK_KILN_ERROR(shared.set("fc.weight", ones({5}), zeros({4, 6}, DType::I64), 2), "1 to 2^2 values");
  CHECK_KILN_ERROR(shared.set("fc.weight", ones({4}), full({4, 6}, 4, DType::I64), 2), "outside [-1, 4)");
  CHECK_KILN_ERROR(shared.codebook("fc.weight"), "is not quantized");
  CHECK_KILN_ERROR(shared.sgd_step(-1.0), "learning rate");
  shared.quantize("fc.weight", 3);
  CHECK_KILN_ERROR(shared.centroid_gradient("fc.weight"), "has no gradient");
}

TEST_CASE("prune::inq_levels: {0, +-2^n2 .. +-2^n1}, n1 = floor(log2(4s/3)), n2 = n1 + 1 - 2^(b-1)/2", "[quantize]") {
  // s = 0.9: 4s/3 = 1.2, n1 = 0
  InqLevels l5 = inq_levels(0.9, 5);
  CHECK(l5.n1 == 0);
  CHECK(l5.n2 == -7);  // 8 magnitudes
  CHECK(l5.values() == std::vector<float>{-1.0f, -0.5f, -0.25f, -0.125f, -0.0625f, -0.03125f, -0.015625f, -0.0078125f,
                                          0.0f, 0.0078125f, 0.015625f, 0.03125f, 0.0625f, 0.125f, 0.25f, 0.5f, 1.0f});
  CHECK(l5.values().size() == 17);  // 2^5 codes hold them (Zhou et al. spend one bit on zero)
  InqLevels l3 = inq_levels(0.9, 3);
  CHECK(l3.n1 == 0);
  CHECK(l3.n2 == -1);
  CHECK(l3.values() == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f});
  InqLevels l4 = inq_levels(0.9, 4);
  CHECK(l4.magnitudes() == std::vector<float>{0.125f, 0.25f, 0.5f, 1.0f});
  InqLevels l2 = inq_levels(0.9, 2);  // ternary
  CHECK(l2.values() == std::vector<float>{-1.0f, 0.0f, 1.0f});
  // n1 at and around powers of two: s = 0.75 gives 4s/3 = 1 exactly
  CHECK(inq_levels(0.75, 3).n1 == 0);
  CHECK(inq_levels(0.74, 3).n1 == -1);
  CHECK(inq_levels(1.4, 3).n1 == 0);   // 1.87
  CHECK(inq_levels(1.5, 3).n1 == 1);   // 2
  CHECK(inq_levels(0.05, 5).n1 == -4);  // 4s/3 = 0.0667: 2^-4 = 0.0625 <= 0.0667 < 2^-3
  CHECK_KILN_ERROR(inq_levels(0.9, 1), "2 to 5 bits");
  CHECK_KILN_ERROR(inq_levels(0.9, 6), "2 to 5 bits");
  CHECK_KILN_ERROR(inq_levels(0.0, 3), "positive and finite");
}

TEST_CASE("prune::inq_round is Zhou et al.'s Eq. 4", "[quantize]") {
  const InqLevels l3 = inq_levels(0.9, 3);  // {0, +-0.5, +-1}: zero below 0.25, 0.5 on [0.25, 0.75), 1 on [0.75, 1.5)
  const std::vector<std::pair<float, float>> cases{{0.0f, 0.0f},   {0.24f, 0.0f},  {-0.2499f, 0.0f}, {0.25f, 0.5f},
                                                   {-0.3f, -0.5f}, {0.74f, 0.5f},  {0.75f, 1.0f},    {-0.8f, -1.0f},
                                                   {1.2f, 1.0f},   {-1.49f, -1.0f}};
  for (auto [w, q] : cases) {
    INFO("w = " << w);
    CHECK(inq_round(w, l3) == q);
  }
  const InqLevels l5 = inq_levels(0.9, 5);  // smallest level 2^-7 = 0.0078125: zero below 0.00390625
  CHECK(inq_round(0.0039f, l5) == 0.0f);
  CHECK(inq_round(0.004f, l5) == 0.0078125f);
  CHECK(inq_round(0.09f, l5) == 0.0625f);    // below (0.0625 + 0.125) / 2 = 0.09375
  CHECK(inq_round(-0.1f, l5) == -0.125f);
  CHECK(inq_round(0.3f, l5) == 0.25f);       // below 0.375
  CHECK(inq_round(0.4f, l5) == 0.5f);
  // every rounded value is in the set and is the nearest level (the intervals are midpoints)
  const std::vector<float> set = l5.values();
  for (double w : test::values(test::random_tensor({200}, DType::F32, 5, 0.5))) {
    const float q = inq_round(static_cast<float>(w), l5);
    CHECK(std::find(set.begin(), set.end(), q) != set.end());
    for (float s : set) CHECK(std::fabs(q - w) <= std::fabs(s - w) + 1e-7);
  }
}

TEST_CASE("prune::Inq partitions by magnitude at 50/75/87.5/100% and frozen weights do not move", "[quantize]") {
  CHECK(inq_portions() == std::vector<double>{0.5, 0.75, 0.875, 1.0});
  auto model = one_linear(8, 5, 6);  // 40 weights
  Tensor w = model->get_parameter("fc.weight");
  const std::vector<float> w0 = w.to_vector<float>();
  double s = 0;
  for (float v : w0) s = std::max(s, std::fabs(static_cast<double>(v)));
  Inq inq(model, 4);
  const InqLevels lv = inq.levels("fc.weight");
  CHECK(lv.n1 == inq_levels(s, 4).n1);
  const std::vector<float> set = lv.values();
  AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  std::vector<uint8_t> was_frozen(40, 0);
  std::vector<float> frozen_at(40, 0.0f);
  for (double p : inq_portions()) {
    const std::vector<float> before = w.to_vector<float>();
    inq.quantize_portion(p);
    const std::vector<float> fr = inq.frozen("fc.weight").to_vector<float>();
    const std::vector<float> after = w.to_vector<float>();
    const int64_t n = static_cast<int64_t>(std::count(fr.begin(), fr.end(), 1.0f));
    CHECK(n == std::llround(p * 40));
    CHECK(inq.frozen_fraction() == Approx(static_cast<double>(n) / 40));
    // the newly frozen are the largest |w| of the free ones, rounded by Eq. 4
    float smallest_new = INFINITY, largest_free = 0;
    for (size_t i = 0; i < 40; ++i) {
      if (fr[i] == 1.0f && !was_frozen[i]) {
        smallest_new = std::min(smallest_new, std::fabs(before[i]));
        CHECK(after[i] == inq_round(before[i], lv));
      } else if (fr[i] == 0.0f) {
        largest_free = std::max(largest_free, std::fabs(before[i]));
        CHECK(after[i] == before[i]);
      } else {
        CHECK(after[i] == frozen_at[i]);  // frozen earlier: unchanged
      }
    }
    CHECK(smallest_new >= largest_free);
    for (size_t i = 0; i < 40; ++i)
      if (fr[i] == 1.0f) {
        was_frozen[i] = 1;
        frozen_at[i] = after[i];
        CHECK(std::find(set.begin(), set.end(), after[i]) != set.end());
      }
    // retraining: the frozen weights stay, the free ones move
    AdamW opt(model->parameters(), o);
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      backward_on(*model, 8, 20 + step);
      inq.mask_gradients();
      const std::vector<float> g = w.grad().to_vector<float>();
      for (size_t i = 0; i < 40; ++i)
        if (fr[i] == 1.0f) CHECK(g[i] == 0.0f);
      opt.step();
      inq.apply();
    }
    const std::vector<float> trained = w.to_vector<float>();
    int moved = 0;
    for (size_t i = 0; i < 40; ++i) {
      if (fr[i] == 1.0f) CHECK(trained[i] == frozen_at[i]);
      else moved += trained[i] != after[i];
    }
    if (p < 1.0) CHECK(moved > 0);
  }
  for (float v : w.to_vector<float>()) CHECK(std::find(set.begin(), set.end(), v) != set.end());
  CHECK_KILN_ERROR(inq.quantize_portion(0.5), "portions accumulate");
  CHECK_KILN_ERROR(inq.quantize_portion(1.5), "in [0, 1]");
  CHECK(inq.state_dict().at("fc.weight.levels").to_vector<int64_t>() == std::vector<int64_t>{4, lv.n1, lv.n2});
}

TEST_CASE("prune::Inq keeps pruned weights at zero and leaves them out of the portions; bad input throws",
          "[quantize]") {
  auto model = one_linear(6, 4, 8);
  Masks masks(model);
  masks.set("fc.weight", mask_4x6());  // 15 unpruned
  Inq inq(model, 3, &masks);
  const std::vector<float> m = mask_4x6().to_vector<float>();
  inq.quantize_portion(0.5);
  std::vector<float> fr = inq.frozen("fc.weight").to_vector<float>();
  int64_t frozen_unpruned = 0;
  for (size_t i = 0; i < 24; ++i) {
    if (m[i] == 0.0f) CHECK(fr[i] == 1.0f);  // pruned: frozen at 0
    else frozen_unpruned += fr[i] == 1.0f;
  }
  CHECK(frozen_unpruned == std::llround(0.5 * 15));
  inq.quantize_portion(1.0);
  std::vector<float> w = model->get_parameter("fc.weight").to_vector<float>();
  for (size_t i = 0; i < 24; ++i)
    if (m[i] == 0.0f) CHECK(w[i] == 0.0f);
  CHECK(inq.layer_bits().at("fc.weight") == 3 * 15);

  CHECK_KILN_ERROR(Inq(model, 1), "2 to 5 bits");
  CHECK_KILN_ERROR(Inq(model, 6), "2 to 5 bits");
  auto zero = one_linear(6, 4, 9);
  {
    NoGradGuard ng;
    zero->get_parameter("fc.weight").zero_();
  }
  CHECK_KILN_ERROR(Inq(zero, 3), "no power-of-two levels");
  auto none = std::make_shared<nn::Sequential>();
  none->push_back("relu", std::make_shared<nn::ReLU>());
  CHECK_KILN_ERROR(Inq(none, 3), "no Conv2d");
}

TEST_CASE("prune: size accounting against f32 dense", "[quantize]") {
  auto model = one_linear(6, 4, 10);  // 24 weights + 4 biases
  CHECK(dense_bits(*model) == 32 * 28);
  Masks masks(model);
  masks.set("fc.weight", mask_4x6());
  CHECK(sparse_bits(*model) == 32 * (15 + 4));
  SharedWeights shared(model);
  shared.quantize("fc.weight", 2, &masks);
  CHECK(shared.layer_bits().at("fc.weight") == 2 * 15 + 32 * 4);  // indices + the f32 codebook
  CHECK(quantized_bits(*model, shared.layer_bits()) == 2 * 15 + 32 * 4 + 32 * 4);
  auto dense = one_linear(6, 4, 11);
  Inq inq(dense, 5);
  CHECK(quantized_bits(*dense, inq.layer_bits()) == 5 * 24 + 32 * 4);
  CHECK_KILN_ERROR(quantized_bits(*dense, {{"fc.nope", 8}}), "not parameters of the model");
}

TEST_CASE("prune: k-means and INQ on every conv/linear weight of the CNN, through training steps", "[quantize]") {
  Generator gen(3);
  models::ResNetCNNOptions opt;
  opt.width = 4;
  auto model = models::resnet_cnn(opt, gen);
  const auto weights = prunable_weights(*model);
  REQUIRE(weights.size() >= 8);
  Masks masks(model);
  for (auto& [name, m] : magnitude_masks(weights, 0.5, Scope::Global)) masks.set(name, m);
  SharedWeights shared(model);
  shared.quantize_all(3, &masks);
  masks.make_permanent();
  CHECK(shared.names().size() == weights.size());
  AdamWOptions o;
  o.lr = 0.01;
  AdamW adam(model->parameters(), o);
  model->train();
  for (int step = 0; step < 2; ++step) {
    adam.zero_grad();
    Tensor y = (*model)(test::random_tensor({4, 1, 28, 28}, DType::F32, 30 + step));
    cross_entropy(y, from_vector(std::vector<int64_t>{1, 3, 5, 7})).backward();
    shared.share_gradients();
    adam.step();
    shared.apply();
  }
  int64_t zeros = 0, total = 0;
  for (const auto& [name, w] : weights) {
    std::set<float> distinct;
    for (float v : w.to_vector<float>()) {
      if (v == 0.0f) ++zeros;
      else distinct.insert(v);
      ++total;
    }
    INFO(name);
    CHECK(distinct.size() <= 8);
    CHECK(distinct.size() >= 2);
  }
  CHECK(zeros == total / 2);  // the pruned half, and no centroid at exactly zero

  Generator gen2(4);
  auto model2 = models::resnet_cnn(opt, gen2);
  Inq inq(model2, 5);
  for (double p : inq_portions()) inq.quantize_portion(p);
  for (const auto& [name, w] : prunable_weights(*model2)) {
    const std::vector<float> set = inq.levels(name).values();
    INFO(name);
    for (float v : w.to_vector<float>()) CHECK(std::find(set.begin(), set.end(), v) != set.end());
  }
  CHECK(inq.frozen_fraction() == 1.0);
}
