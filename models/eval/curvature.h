// Curvature and gradient-noise instruments, callable from any training loop:
//
//   hessian_vector_product   H v at the current params, exact: the gradient of <grad L, v>
//                            through kiln::grad(create_graph) (Pearlmutter's trick)
//   hessian_top_eigenvalue   the eigenvalue of largest magnitude of the loss Hessian by power
//                            iteration on Hessian-vector products (as PyHessian does), to
//                            watch the "edge of stability" relation lambda_max ~ 2 / lr
//   fisher_top_eigenvalue    the top eigenvalue of the Fisher (generalised Gauss-Newton)
//                            matrix F = (1/N) sum_i J_i^T H_i J_i of a model's outputs f_i
//                            (N, C), H_i = diag(p_i) - p_i p_i^T for softmax cross entropy
//                            (p = softmax f) or I for squared error, by power iteration on
//                            exact F v products (J v by the double-backward trick, then J^T);
//                            at initialisation it gives the lazy/catapult boundary 2 / lambda_0
//                            of Lewkowycz et al. (2020)
//   gradient_noise_scale     McCandlish et al. (2018)'s simple noise scale B = tr(S) / |G|^2
//                            from k micro-batch gradients of b samples each: the unbiased
//                            estimates |G|^2 = (B_big |G_big|^2 - b |G_small|^2) / (B_big - b)
//                            and tr(S) = (|G_small|^2 - |G_big|^2) / (1/b - 1/B_big), with
//                            |G_small|^2 the mean of the k squared norms, G_big their mean and
//                            B_big = k b; it predicts the critical batch size
//   optimization_variance    Zhang et al. (ICLR 2021): the variance of the predictions after
//                            one training step on different batches, relative to their mean
//                            square: E_x sum_c Var_k f_c(x; theta_k) / E_x sum_c E_k f_c^2;
//                            it tracks the test error without a validation set
//
// The loss closure must compute the loss at the params' current values from recorded
// (twice differentiable) ops; it is called once per hessian_top_eigenvalue call.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln::eval {

// H v for the scalar `loss` (built with gradients enabled) over `params`; v[i] has
// params[i]'s shape. Throws kiln::Error for mismatched shapes or a non-scalar loss.
std::vector<Tensor> hessian_vector_product(const Tensor& loss, const std::vector<Tensor>& params,
                                           const std::vector<Tensor>& v);

struct PowerIterationOptions {
  int64_t max_iterations = 100;
  double tolerance = 1e-4;  // stop when |lambda_k - lambda_{k-1}| <= tolerance * |lambda_k|
  uint64_t seed = 0;        // the random start vector
};

struct TopEigen {
  double eigenvalue = 0;    // largest in magnitude (sign kept)
  int64_t iterations = 0;   // Hessian-vector products taken
  bool converged = false;
  double seconds = 0;       // the call's wall time
  std::vector<Tensor> eigenvector;  // unit norm over all params together
};

// Power iteration on H (the Hessian of loss_fn() over params). Throws kiln::Error for no
// params, a non-scalar loss or bad options.
TopEigen hessian_top_eigenvalue(const std::function<Tensor()>& loss_fn, const std::vector<Tensor>& params,
                                const PowerIterationOptions& options = {});

enum class FisherLoss { CrossEntropy, SquaredError };
// outputs_fn: the model's outputs (N, C) at the params' current values, from recorded
// (twice differentiable) ops; called once.
TopEigen fisher_top_eigenvalue(const std::function<Tensor()>& outputs_fn, const std::vector<Tensor>& params,
                               FisherLoss loss = FisherLoss::CrossEntropy, const PowerIterationOptions& options = {});

struct NoiseScale {
  double simple_noise_scale = 0;  // tr(S) / |G|^2, in samples
  double trace_sigma = 0;         // tr(S), per-sample gradient covariance trace
  double grad_norm_sq = 0;        // |G|^2, the true gradient's squared norm (estimate)
};
// grads[k]: the gradients (one tensor per param) of micro-batch k, each the mean over
// `batch` samples. Needs k >= 2 micro-batches of batch >= 1. The estimate can come out
// negative or infinite on few micro-batches (as the paper notes, average it over steps).
NoiseScale gradient_noise_scale(const std::vector<std::vector<Tensor>>& grads, int64_t batch);

// probs[k] (N, C): the model's outputs (softmax probabilities) on N fixed inputs after the
// k-th one-step update. Needs k >= 2 tensors of one shape.
double optimization_variance(const std::vector<Tensor>& probs);

}  // namespace kiln::eval
