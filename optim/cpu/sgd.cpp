// CPU reference for the fused SGD update (slot sgd_update, optim/op_list.h): one plain
// loop per tensor, every element computed in double in the operation order of PyTorch's
// torch.optim.SGD (single-tensor path), then rounded to the storage dtypes (params and
// grads: f16/bf16/f32/f64; momentum buffers: accumulate_dtype of the params').
// cuda/kernels/optim.cu computes the same formulas in f32 (f64 for f64 params).
#include <kiln/core/cpu_loops.h>
#include <kiln/optim/cpu/dispatch.h>
#include <kiln/optim/op_list.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

}  // namespace

void sgd_update(TensorViews params, TensorViews grads, TensorViews momentum_buffers, const SgdUpdateArgs& a) {
  const bool use_momentum = a.momentum != 0.0;
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("sgd_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* buf = use_momentum ? momentum_buffers[t].ptr<S>() : nullptr;
      const int64_t n = params[t].numel;
      parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        double g = to_f64(gp[i]);
        if (a.maximize) g = -g;
        const double pv = to_f64(p[i]);
        if (a.weight_decay != 0.0) g = g + a.weight_decay * pv;
        if (use_momentum) {
          double b = a.init_momentum ? g : a.momentum * to_f64(buf[i]) + (1.0 - a.dampening) * g;
          buf[i] = convert<S>(b);
          b = to_f64(buf[i]);  // the stored buffer is what PyTorch reads back
          g = a.nesterov ? g + a.momentum * b : b;
        }
        p[i] = convert<T>(pv + (-a.lr) * g);
      }
      });
    });
  }
}

}  // namespace kiln::cpu
