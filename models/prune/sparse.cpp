// Per-layer sparse kernel selection by measured time (models/prune/sparse.h).
#include <kiln/models/prune/sparse.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

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
  for (const LayerCall& call : calls) {
    SparseChoice ch;
    ch.layer = call.name;
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(call.module)) {
      if (c->groups != 1 || !(c->dilation == Int2(1)) || c->padding_mode != PaddingMode::Zeros) continue;
      KILN_CHECK(c->weight.device().is_cpu(), "use_sparse_kernels: ", call.name, " is on ", c->weight.device().str());
      ch.sparsity = zero_fraction(c->weight);
      if (ch.sparsity < min_sparsity) continue;
      Tensor x = randn(call.input);
      const CsrWeight w = to_csr(c->weight.detach());
      const Tensor bias = c->bias.defined() ? c->bias.detach().contiguous() : Tensor();
      const Int2 stride = c->stride, padding = c->padding;
      ch.dense_ms = median_ms([&] { (void)conv2d(x, c->weight, c->bias, stride, padding); }, repeats);
      ch.sparse_ms = median_ms([&] { (void)sparse_conv2d(x, w, bias, stride, padding); }, repeats);
      ch.sparse = ch.sparse_ms < ch.dense_ms;
      if (ch.sparse)
        c->eval_kernel = [w, bias, stride, padding](const Tensor& in) { return sparse_conv2d(in, w, bias, stride, padding); };
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(call.module)) {
      KILN_CHECK(l->weight.device().is_cpu(), "use_sparse_kernels: ", call.name, " is on ", l->weight.device().str());
      ch.sparsity = zero_fraction(l->weight);
      if (ch.sparsity < min_sparsity) continue;
      Tensor x = randn(call.input);
      const CsrWeight w = to_csr(l->weight.detach());
      const Tensor bias = l->bias.defined() ? l->bias.detach().contiguous() : Tensor();
      ch.dense_ms = median_ms([&] { (void)nn::linear(x, l->weight, l->bias); }, repeats);
      ch.sparse_ms = median_ms([&] { (void)sparse_linear(x, w, bias); }, repeats);
      ch.sparse = ch.sparse_ms < ch.dense_ms;
      if (ch.sparse) l->eval_kernel = [w, bias](const Tensor& in) { return sparse_linear(in, w, bias); };
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
  char line[200];
  std::snprintf(line, sizeof line, "%-24s %9s %11s %11s  %s\n", "layer", "sparsity", "dense ms", "sparse ms", "kernel");
  s += line;
  for (const SparseChoice& c : choices) {
    std::snprintf(line, sizeof line, "%-24s %8.1f%% %11.3f %11.3f  %s\n", c.layer.c_str(), 100 * c.sparsity, c.dense_ms,
                  c.sparse_ms, c.sparse ? "sparse" : "dense");
    s += line;
  }
  return s;
}

}  // namespace kiln::prune
