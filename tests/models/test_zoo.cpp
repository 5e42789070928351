// The model zoo: resnet_cnn (train_cnn's model) has the documented size, PyTorch-style
// names, a seeded initialisation and the output shape for other channel, class and image
// sizes; bad options throw. Agreement with PyTorch is tested by resnet_cnn_torch_roundtrip.
#include "test_util.h"

using namespace kiln;

TEST_CASE("models::resnet_cnn: size, names, seeded init, shapes", "[models][zoo]") {
  Generator gen(7);
  auto m = models::resnet_cnn({}, gen);
  CHECK(m->num_parameters() == 77754);
  auto sd = m->state_dict();
  CHECK(sd.size() == 56);  // 5 conv + 1 linear (2) + 9 BN x 5 (weight, bias, 3 buffers) = 56
  for (const char* k : {"stem.weight", "stem_bn.running_mean", "block1.conv1.weight", "block2.shortcut.0.weight",
                        "block3.shortcut.1.num_batches_tracked", "block3.bn2.weight", "fc.weight", "fc.bias"})
    CHECK(sd.count(k) == 1);
  CHECK(sd.count("block1.shortcut.0.weight") == 0);  // same shape in and out: identity skip
  CHECK(sd.at("block2.shortcut.0.weight").sizes() == Shape{32, 16, 1, 1});
  CHECK(sd.at("fc.weight").sizes() == Shape{10, 64});

  Generator same(7), other(8);
  auto m2 = models::resnet_cnn({}, same), m3 = models::resnet_cnn({}, other);
  CHECK(test::bit_equal(m2->state_dict().at("block3.conv2.weight"), sd.at("block3.conv2.weight")));
  CHECK(test::bit_equal(m2->state_dict().at("fc.bias"), sd.at("fc.bias")));
  CHECK_FALSE(test::bit_equal(m3->state_dict().at("block3.conv2.weight"), sd.at("block3.conv2.weight")));

  CHECK((*m)(randn({2, 1, 28, 28})).sizes() == Shape{2, 10});
  models::ResNetCNNOptions o;
  o.width = 4;
  o.in_channels = 3;
  o.num_classes = 7;
  auto small = models::resnet_cnn(o, gen);
  small->eval();
  CHECK((*small)(randn({3, 3, 17, 23})).sizes() == Shape{3, 7});
}

TEST_CASE("models::resnet_cnn: bad options throw kiln::Error", "[models][zoo]") {
  Generator gen(0);
  models::ResNetCNNOptions o;
  o.width = 0;
  CHECK_THROWS_WITH(models::resnet_cnn(o, gen), Catch::Contains("resnet_cnn") && Catch::Contains("width 0"));
  o.width = 16;
  o.num_classes = -1;
  CHECK_THROWS_AS(models::resnet_cnn(o, gen), Error);
}
