// kiln_mcr2: learns features with the MCR^2 objective (Yu et al., NeurIPS 2020; formulas
// in models/eval/mcr2.h) on Fashion-MNIST and measures them.
//
// The network is the model zoo's ResNet-style CNN (models/zoo/resnet_cnn.h) with its head
// producing --feature-dim features, each sample's features normalised to the unit sphere
// (as the paper does). Each step maximises the rate reduction Delta R = R(Z) - Rc(Z | Pi)
// of the batch's features (loss = -Delta R, Adam). After training it reports, on the test
// set: Delta R, R and Rc of the features, and the accuracy of a linear probe (a linear
// classifier trained with cross-entropy on the frozen training-set features for
// --probe-epochs). The last line of stdout is a JSON summary.
//
// usage: kiln_mcr2 [--epochs 2] [--batch-size 500] [--feature-dim 32] [--eps 0.7071]
//                  [--lr 1e-3] [--probe-epochs 30] [--limit-train N] [--limit-test N]
//                  [--device cpu|cuda] [--seed S] [--data-dir DIR]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/eval/mcr2.h>
#include <kiln/models/run/progress.h>

#include "cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

struct Config {
  int64_t epochs = 2, batch_size = 500, feature_dim = 32, width = 16, probe_epochs = 30;
  double eps = std::sqrt(0.5), lr = 1e-3;  // the paper's eps^2 = 0.5
  int64_t limit_train = 0, limit_test = 0, log_every = 20;
  uint64_t seed = 0;
  std::string device, data_dir = data::kFashionMnistDir;
};

Tensor normalise_rows(const Tensor& z) { return div(z, sqrt(add(sum(mul(z, z), {1}, true), 1e-12))); }

// The normalised features of every sample of `loader` (eval mode, no graph), on the CPU,
// with their labels.
std::pair<Tensor, Tensor> features(nn::Module& net, const data::DataLoader& loader) {
  NoGradGuard no_grad;
  std::vector<Tensor> zs, ys;
  for (int64_t b = 0; b < loader.size(); ++b) {
    data::Batch batch = loader.get(0, b);
    zs.push_back(normalise_rows(net(batch.x)).cpu());
    ys.push_back(batch.y.cpu());
  }
  return {cat(zs, 0), cat(ys, 0)};
}

int train_features(const Config& c) {
  const std::string want = c.device.empty() ? (cuda_is_available() ? "cuda" : "cpu") : c.device;
  KILN_CHECK(want == "cpu" || cuda_is_available(), "kiln_mcr2: --device ", want, ": no usable CUDA device");
  const Device device(want.c_str());
  data::Dataset train = data::load_fashion_mnist(c.data_dir, true).head(c.limit_train);
  data::Dataset test = data::load_fashion_mnist(c.data_dir, false).head(c.limit_test);
  data::LoaderOptions lo;
  lo.batch_size = c.batch_size;
  lo.shuffle = true;
  lo.seed = c.seed;
  lo.drop_last = true;  // every step sees a full batch (the coding rates depend on m)
  lo.device = device;
  data::DataLoader loader(train, lo);
  KILN_CHECK(loader.size() > 0, "kiln_mcr2: no full batch of ", c.batch_size, " in ", train.size(), " images");
  data::LoaderOptions eo;
  eo.batch_size = 1000;
  eo.shuffle = false;
  eo.device = device;
  data::DataLoader train_eval(train, eo), test_eval(test, eo);

  Generator gen(c.seed);
  models::ResNetCNNOptions mo;
  mo.width = c.width;
  mo.num_classes = c.feature_dim;  // the head outputs the features
  auto net = models::resnet_cnn(mo, gen);
  net->to(device);
  Adam opt(net->parameters(), AdamOptions{.lr = c.lr});
  const int64_t total = loader.size() * c.epochs;
  std::fprintf(stderr,
               "kiln_mcr2: device %s, %lld train / %lld test images, features %lld-d on the unit sphere, eps^2 %g, "
               "batch %lld, %lld steps\n",
               device.str().c_str(), (long long)train.size(), (long long)test.size(), (long long)c.feature_dim,
               c.eps * c.eps, (long long)c.batch_size, (long long)total);
  run::Progress progress("kiln_mcr2", total, 0, c.log_every);
  const auto t0 = Clock::now();
  int64_t step = 0, images = 0;
  double last_dr = NAN;
  for (int64_t e = 0; e < c.epochs; ++e) {
    loader.seek(e, 0);
    for (int64_t b = 0; b < loader.size(); ++b) {
      data::Batch batch = loader.next();
      net->train();
      Tensor z = normalise_rows((*net)(batch.x));
      eval::RateReduction rr = eval::rate_reduction(z, batch.y, data::kFashionMnistClasses, c.eps);
      opt.zero_grad();
      neg(rr.delta_r).backward();
      opt.step();
      ++step;
      images += batch.y.size(0);
      if (progress.due(step, step == total)) {
        last_dr = rr.delta_r.item<double>();
        progress.log(step, e + 1, c.epochs, {{"delta_R", last_dr}, {"R", rr.r.item<double>()},
                                                    {"Rc", rr.rc.item<double>()}}, images);
        images = 0;
      }
    }
  }
  const double train_s = std::chrono::duration<double>(Clock::now() - t0).count();
  progress.end_epoch_line();

  // The features, measured on the test set, and the linear probe.
  net->eval();
  auto [ztr, ytr] = features(*net, train_eval);
  auto [zte, yte] = features(*net, test_eval);
  eval::RateReduction test_rr = eval::rate_reduction(zte, yte, data::kFashionMnistClasses, c.eps);
  Generator pgen(c.seed + 1);
  nn::Linear probe(c.feature_dim, data::kFashionMnistClasses);
  probe.reset_parameters(&pgen);
  Adam popt(probe.parameters(), AdamOptions{.lr = 1e-2});
  const int64_t n = ztr.size(0), pb = 1000;
  for (int64_t pe = 0; pe < c.probe_epochs; ++pe)
    for (int64_t i = 0; i < n; i += pb) {
      const int64_t len = std::min(pb, n - i);
      popt.zero_grad();
      cross_entropy(probe(ztr.narrow(0, i, len)), ytr.narrow(0, i, len)).backward();
      popt.step();
    }
  double probe_acc = 0;
  {
    NoGradGuard no_grad;
    Tensor pred = argmax(probe(zte), 1);
    probe_acc = mean(eq(pred, yte).to(DType::F64)).item<double>();
  }
  std::fprintf(stderr,
               "kiln_mcr2: test features: Delta R %.4f (R %.4f, Rc %.4f); linear probe test accuracy %.4f "
               "(train %.1f s)\n",
               test_rr.delta_r.item<double>(), test_rr.r.item<double>(), test_rr.rc.item<double>(), probe_acc, train_s);
  run::print_summary({{"test_delta_r", test_rr.delta_r.item<double>()},
                      {"test_r", test_rr.r.item<double>()},
                      {"test_rc", test_rr.rc.item<double>()},
                      {"probe_test_accuracy", probe_acc},
                      {"last_batch_delta_r", last_dr},
                      {"steps", step},
                      {"train_seconds", train_s},
                      {"feature_dim", c.feature_dim},
                      {"device", device.str()}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Learns unit-sphere features of Fashion-MNIST by maximal coding rate reduction (MCR^2) and "
               "reports their rate reduction and linear-probe accuracy.",
               "kiln_mcr2"};
  Config c;
  app.add_option("--epochs", c.epochs, "training epochs")->check(tools::integer_range(1, 100000))->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "samples per step (the coding rates are of one batch)")
      ->check(tools::integer_range(2, 1 << 20))->capture_default_str();
  app.add_option("--feature-dim", c.feature_dim, "feature dimension d")
      ->check(tools::integer_range(1, 4096))->capture_default_str();
  app.add_option("--width", c.width, "channels of the CNN's first stage")
      ->check(tools::integer_range(1, 4096))->capture_default_str();
  app.add_option("--eps", c.eps, "the allowed distortion eps (the paper: eps^2 = 0.5)")
      ->check(tools::positive_real())->capture_default_str();
  app.add_option("--lr", c.lr, "Adam's learning rate")->check(tools::positive_real())->capture_default_str();
  app.add_option("--probe-epochs", c.probe_epochs, "epochs of the linear probe on the frozen features")
      ->check(tools::integer_range(1, 100000))->capture_default_str();
  app.add_option("--limit-train", c.limit_train, "use only the first N training images (0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--limit-test", c.limit_test, "evaluate on only the first N test images (0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--log-every", c.log_every, "progress line every N steps")->check(tools::integer_range(1, 1 << 30));
  app.add_option("--seed", c.seed, "seed of the initialisation and the data order")->check(tools::any_uint64());
  app.add_option("--device", c.device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(tools::device_spec());
  app.add_option("--data-dir", c.data_dir, "Fashion-MNIST idx(.gz) files");
  return tools::kiln_main(app, argc, argv, [&] { return train_features(c); });
}
