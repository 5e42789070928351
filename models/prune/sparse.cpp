// Per-layer sparse kernel selection by measured time (models/prune/sparse.h).
#include <kiln/models/prune/sparse.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/prune/graph.h>
#include <kiln/models/prune/masks.h>
#include <kiln/ops/sparse.h>

namespace kiln::prune {
namespace {

double median_ms(const std::function<void()>& f, int64_t repeats) {
  f();  // warm
  std::vector<double> t;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double zero_fraction(const Tensor& w) {
  return w.numel() > 0 ? 1.0 - static_cast<double>(count_nonzero(w)) / static_cast<double>(w.numel()) : 0.0;
}

}  // namespace

std::vector<SparseChoice> use_sparse_kernels(const std::shared_ptr<nn::Module>& model, const Tensor& example,
                                             double min_sparsity, int64_t repeats) {
  KILN_CHECK(model != nullptr, "use_sparse_kernels: the model is null");
  KILN_CHECK(example.defined() && example.device().is_cpu(), "use_sparse_kernels: the sparse kernels are CPU kernels; "
             "the example batch is ", example.defined() ? describe(example) : std::string("undefined"));
  KILN_CHECK(repeats >= 1, "use_sparse_kernels: repeats must be >= 1");
  clear_sparse_kernels(*model);
  std::vector<SparseChoice> out;
  const auto calls = layer_calls(model, example);
  NoGradGuard no_grad;
  const int64_t batch = example.dim() > 0 ? example.size(0) : 1;
  // Calls with at least this many images (rows for a Linear) follow the example batch's result.
  const double split = std::sqrt(static_cast<double>(std::max<int64_t>(batch, 1)));
  // Times dense(x) and sparse(x) at the layer's input shape and at one image of it.
  auto time_both = [&](SparseChoice& ch, const Shape& shape, const std::function<void(const Tensor&)>& dense,
                       const std::function<void(const Tensor&)>& sparse) {
    Tensor x = randn(shape);
    ch.batch = batch;
    ch.dense_ms = median_ms([&] { dense(x); }, repeats);
    ch.sparse_ms = median_ms([&] { sparse(x); }, repeats);
    ch.sparse = ch.sparse_ms < ch.dense_ms;
    if (shape.empty() || shape[0] == 1) {
      ch.dense_ms_b1 = ch.dense_ms, ch.sparse_ms_b1 = ch.sparse_ms, ch.sparse_b1 = ch.sparse;
      return;
    }
    Tensor one = x.narrow(0, 0, 1).contiguous();
    ch.dense_ms_b1 = median_ms([&] { dense(one); }, repeats);
    ch.sparse_ms_b1 = median_ms([&] { sparse(one); }, repeats);
    ch.sparse_b1 = ch.sparse_ms_b1 < ch.dense_ms_b1;
  };
  for (const LayerCall& call : calls) {
    SparseChoice ch;
    ch.layer = call.name;
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(call.module)) {
      if (c->groups != 1 || !(c->dilation == Int2(1)) || c->padding_mode != PaddingMode::Zeros) continue;
      KILN_CHECK(c->weight.device().is_cpu(), "use_sparse_kernels: ", call.name, " is on ", c->weight.device().str());
      ch.sparsity = zero_fraction(c->weight);
      if (ch.sparsity < min_sparsity) continue;
      const CsrWeight w = to_csr(c->weight.detach());
      const Tensor weight = c->weight.detach(), bias = c->bias.defined() ? c->bias.detach().contiguous() : Tensor();
      const Int2 stride = c->stride, padding = c->padding;
      time_both(ch, call.input, [&](const Tensor& x) { (void)conv2d(x, weight, bias, stride, padding); },
                [&](const Tensor& x) { (void)sparse_conv2d(x, w, bias, stride, padding); });
      if (ch.sparse || ch.sparse_b1)
        c->eval_kernel = [w, weight, bias, stride, padding, split, big = ch.sparse, small = ch.sparse_b1](const Tensor& in) {
          const int64_t n = in.dim() == 4 ? in.size(0) : 1;
          if (static_cast<double>(n) >= split ? big : small) return sparse_conv2d(in, w, bias, stride, padding);
          return conv2d(in, weight, bias, stride, padding);
        };
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(call.module)) {
      KILN_CHECK(l->weight.device().is_cpu(), "use_sparse_kernels: ", call.name, " is on ", l->weight.device().str());
      ch.sparsity = zero_fraction(l->weight);
      if (ch.sparsity < min_sparsity) continue;
      const CsrWeight w = to_csr(l->weight.detach());
      const Tensor weight = l->weight.detach(), bias = l->bias.defined() ? l->bias.detach().contiguous() : Tensor();
      time_both(ch, call.input, [&](const Tensor& x) { (void)nn::linear(x, weight, bias); },
                [&](const Tensor& x) { (void)sparse_linear(x, w, bias); });
      if (ch.sparse || ch.sparse_b1)
        l->eval_kernel = [w, weight, bias, split, big = ch.sparse, small = ch.sparse_b1](const Tensor& in) {
          const int64_t rows = in.size(-1) > 0 ? in.numel() / in.size(-1) : 0;
          if (static_cast<double>(rows) >= split ? big : small) return sparse_linear(in, w, bias);
          return nn::linear(in, weight, bias);
        };
    } else {
      continue;
    }
    out.push_back(ch);
  }
  return out;
}

void clear_sparse_kernels(nn::Module& model) {
  for (auto& mod : model.modules()) {
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) c->eval_kernel = nullptr;
    else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) l->eval_kernel = nullptr;
  }
}

std::string format_sparse_choices(const std::vector<SparseChoice>& choices) {
  std::string s;
  char line[240];
  const int64_t b = choices.empty() ? 0 : choices.front().batch;
  const std::string at_b = "batch " + std::to_string(b);
  std::snprintf(line, sizeof line, "%-24s %9s %12s %12s %12s %12s  %s\n", "layer", "sparsity", "dense ms", "sparse ms",
                "dense ms", "sparse ms", "kernel");
  s += line;
  std::snprintf(line, sizeof line, "%-24s %9s %25s %25s\n", "", "", at_b.c_str(), "batch 1");
  s += line;
  for (const SparseChoice& c : choices) {
    const char* kernel = c.sparse && c.sparse_b1 ? "sparse"
                         : c.sparse              ? "sparse for larger batches"
                         : c.sparse_b1           ? "sparse for small batches"
                                                 : "dense";
    std::snprintf(line, sizeof line, "%-24s %8.1f%% %12.3f %12.3f %12.3f %12.3f  %s\n", c.layer.c_str(),
                  100 * c.sparsity, c.dense_ms, c.sparse_ms, c.dense_ms_b1, c.sparse_ms_b1, kernel);
    s += line;
  }
  return s;
}

}  // namespace kiln::prune
