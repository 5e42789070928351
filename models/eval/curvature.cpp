#include <kiln/models/eval/curvature.h>

#include <chrono>
#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/core/generator.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/softmax.h>
#include <kiln/ops/unary.h>

namespace kiln::eval {
namespace {

double dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += sum(mul(a[i].to(DType::F64), b[i].to(DType::F64))).item<double>();
  return s;
}

void check_scalar_loss(const char* op, const Tensor& loss) {
  kiln::detail::check_defined(op, loss, "loss");
  KILN_CHECK(loss.numel() == 1, op, ": the loss must be a scalar, got ", describe(loss));
  KILN_CHECK(loss.requires_grad(), op, ": the loss does not depend on the params (computed under NoGradGuard?)");
}

}  // namespace

std::vector<Tensor> hessian_vector_product(const Tensor& loss, const std::vector<Tensor>& params,
                                           const std::vector<Tensor>& v) {
  check_scalar_loss("hessian_vector_product", loss);
  KILN_CHECK(!params.empty() && v.size() == params.size(), "hessian_vector_product: ", v.size(), " vectors for ",
             params.size(), " params");
  for (size_t i = 0; i < v.size(); ++i)
    KILN_CHECK(v[i].defined() && v[i].sizes() == params[i].sizes(), "hessian_vector_product: v[", i, "] is ",
               v[i].defined() ? describe(v[i]) : "undefined", ", param ", describe(params[i]));
  GradOptions first;
  first.create_graph = true;
  first.allow_unused = true;
  std::vector<Tensor> g = grad({loss}, params, {}, first);
  Tensor gv;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined()) continue;
    Tensor t = sum(mul(g[i], v[i].detach().to(g[i].dtype())));
    gv = gv.defined() ? add(gv, t) : t;
  }
  std::vector<Tensor> hv(params.size());
  if (gv.defined() && gv.requires_grad()) {
    GradOptions second;
    second.allow_unused = true;
    hv = grad({gv}, params, {}, second);
  }
  for (size_t i = 0; i < hv.size(); ++i)
    hv[i] = hv[i].defined() ? hv[i].detach() : zeros_like(params[i]);
  return hv;
}

TopEigen hessian_top_eigenvalue(const std::function<Tensor()>& loss_fn, const std::vector<Tensor>& params,
                                const PowerIterationOptions& o) {
  KILN_CHECK(static_cast<bool>(loss_fn), "hessian_top_eigenvalue: no loss function");
  KILN_CHECK(!params.empty(), "hessian_top_eigenvalue: no params");
  KILN_CHECK(o.max_iterations >= 1 && o.tolerance >= 0, "hessian_top_eigenvalue: bad options (max_iterations ",
             o.max_iterations, ", tolerance ", o.tolerance, ")");
  const auto t0 = std::chrono::steady_clock::now();
  Tensor loss = loss_fn();
  check_scalar_loss("hessian_top_eigenvalue", loss);
  // grad L once, with its graph kept: each iteration differentiates <grad L, v>.
  GradOptions first;
  first.create_graph = true;
  first.allow_unused = true;
  std::vector<Tensor> g = grad({loss}, params, {}, first);

  Generator gen(o.seed);
  std::vector<Tensor> v;
  for (const Tensor& p : params) v.push_back(randn(p.sizes(), TensorOptions(p.dtype()), &gen).to(p.device()));
  auto normalise = [](std::vector<Tensor>& x) {
    const double n = std::sqrt(dot(x, x));
    KILN_CHECK(n > 0 && std::isfinite(n), "hessian_top_eigenvalue: the Hessian-vector product is ", n,
               " (a zero or non-finite Hessian along the iterate)");
    for (Tensor& t : x) t = div(t, n);
  };
  normalise(v);
  TopEigen r;
  double prev = 0;
  for (int64_t k = 0; k < o.max_iterations; ++k) {
    Tensor gv;
    for (size_t i = 0; i < g.size(); ++i) {
      if (!g[i].defined()) continue;
      Tensor t = sum(mul(g[i], v[i].to(g[i].dtype())));
      gv = gv.defined() ? add(gv, t) : t;
    }
    KILN_CHECK(gv.defined() && gv.requires_grad(), "hessian_top_eigenvalue: the loss's gradient does not depend on "
               "the params (a loss linear in them has a zero Hessian)");
    GradOptions second;
    second.allow_unused = true;
    second.retain_graph = true;
    std::vector<Tensor> hv = grad({gv}, params, {}, second);
    for (size_t i = 0; i < hv.size(); ++i) hv[i] = hv[i].defined() ? hv[i].detach() : zeros_like(params[i]);
    const double lambda = dot(v, hv);  // Rayleigh quotient (|v| = 1)
    r.iterations = k + 1;
    r.eigenvalue = lambda;
    v = hv;
    normalise(v);
    if (k > 0 && std::abs(lambda - prev) <= o.tolerance * std::abs(lambda)) {
      r.converged = true;
      break;
    }
    prev = lambda;
  }
  r.eigenvector = v;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

TopEigen fisher_top_eigenvalue(const std::function<Tensor()>& outputs_fn, const std::vector<Tensor>& params,
                               FisherLoss kind, const PowerIterationOptions& o) {
  KILN_CHECK(static_cast<bool>(outputs_fn), "fisher_top_eigenvalue: no output function");
  KILN_CHECK(!params.empty(), "fisher_top_eigenvalue: no params");
  KILN_CHECK(o.max_iterations >= 1 && o.tolerance >= 0, "fisher_top_eigenvalue: bad options (max_iterations ",
             o.max_iterations, ", tolerance ", o.tolerance, ")");
  const auto t0 = std::chrono::steady_clock::now();
  Tensor f = outputs_fn();
  kiln::detail::check_defined("fisher_top_eigenvalue", f, "outputs");
  KILN_CHECK(f.dim() == 2 && f.size(0) >= 1, "fisher_top_eigenvalue: outputs must be (N, C), got ", describe(f));
  KILN_CHECK(f.requires_grad(), "fisher_top_eigenvalue: the outputs do not depend on the params");
  const double n = static_cast<double>(f.size(0));
  Tensor p;
  if (kind == FisherLoss::CrossEntropy) {
    NoGradGuard no_grad;
    p = softmax(f.detach(), 1);
  }
  // J^T u as a function of a dummy u (N, C): differentiating <J^T u, v> by u gives J v.
  Tensor u = zeros_like(f.detach()).set_requires_grad(true);
  GradOptions first;
  first.create_graph = true;
  first.allow_unused = true;
  first.retain_graph = true;
  std::vector<Tensor> jtu = grad({sum(mul(f, u))}, params, {}, first);

  Generator gen(o.seed);
  std::vector<Tensor> v;
  for (const Tensor& q : params) v.push_back(randn(q.sizes(), TensorOptions(q.dtype()), &gen).to(q.device()));
  auto normalise = [](std::vector<Tensor>& x) {
    const double nn = std::sqrt(dot(x, x));
    KILN_CHECK(nn > 0 && std::isfinite(nn), "fisher_top_eigenvalue: the Fisher-vector product is ", nn);
    for (Tensor& t : x) t = div(t, nn);
  };
  normalise(v);
  TopEigen r;
  double prev = 0;
  for (int64_t k = 0; k < o.max_iterations; ++k) {
    Tensor s;
    for (size_t i = 0; i < jtu.size(); ++i) {
      if (!jtu[i].defined()) continue;
      Tensor t = sum(mul(jtu[i], v[i].to(jtu[i].dtype())));
      s = s.defined() ? add(s, t) : t;
    }
    KILN_CHECK(s.defined() && s.requires_grad(), "fisher_top_eigenvalue: the outputs do not depend on the params");
    GradOptions keep;
    keep.retain_graph = true;
    Tensor jv = grad({s}, {u}, {}, keep)[0].detach();  // (N, C)
    Tensor hjv = kind == FisherLoss::CrossEntropy ? sub(mul(p, jv), mul(p, sum(mul(p, jv), {1}, true))) : jv;
    hjv = div(hjv, n);
    GradOptions second;
    second.retain_graph = true;
    second.allow_unused = true;
    std::vector<Tensor> fv = grad({sum(mul(f, hjv))}, params, {}, second);
    for (size_t i = 0; i < fv.size(); ++i) fv[i] = fv[i].defined() ? fv[i].detach() : zeros_like(params[i]);
    const double lambda = dot(v, fv);
    r.iterations = k + 1;
    r.eigenvalue = lambda;
    v = fv;
    normalise(v);
    if (k > 0 && std::abs(lambda - prev) <= o.tolerance * std::abs(lambda)) {
      r.converged = true;
      break;
    }
    prev = lambda;
  }
  r.eigenvector = v;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

NoiseScale gradient_noise_scale(const std::vector<std::vector<Tensor>>& grads, int64_t batch) {
  const size_t k = grads.size();
  KILN_CHECK(k >= 2 && batch >= 1, "gradient_noise_scale: needs >= 2 micro-batches of >= 1 samples, got ", k,
             " of ", batch);
  const size_t n = grads[0].size();
  for (const auto& g : grads)
    KILN_CHECK(g.size() == n, "gradient_noise_scale: micro-batches hold ", g.size(), " and ", n, " gradients");
  double small = 0;  // mean over micro-batches of |g_k|^2
  std::vector<Tensor> mean_g(n);
  for (const auto& g : grads) {
    small += dot(g, g) / static_cast<double>(k);
    for (size_t i = 0; i < n; ++i) {
      Tensor t = g[i].detach().to(DType::F64);
      mean_g[i] = mean_g[i].defined() ? add(mean_g[i], t) : t;
    }
  }
  for (Tensor& t : mean_g) t = div(t, static_cast<double>(k));
  const double big = dot(mean_g, mean_g);
  const double b = static_cast<double>(batch), B = b * static_cast<double>(k);
  NoiseScale r;
  r.grad_norm_sq = (B * big - b * small) / (B - b);
  r.trace_sigma = (small - big) / (1.0 / b - 1.0 / B);
  r.simple_noise_scale = r.trace_sigma / r.grad_norm_sq;
  return r;
}

double optimization_variance(const std::vector<Tensor>& probs) {
  KILN_CHECK(probs.size() >= 2, "optimization_variance: needs >= 2 prediction sets, got ", probs.size());
  for (const Tensor& p : probs)
    KILN_CHECK(p.defined() && p.dim() == 2 && p.sizes() == probs[0].sizes(),
               "optimization_variance: predictions must share one shape (N, C), got ",
               p.defined() ? describe(p) : "undefined", " and ", describe(probs[0]));
  const double k = static_cast<double>(probs.size());
  Tensor mean_f, mean_f2;
  for (const Tensor& p : probs) {
    Tensor f = p.detach().to(DType::F64);
    mean_f = mean_f.defined() ? add(mean_f, f) : f;
    Tensor f2 = mul(f, f);
    mean_f2 = mean_f2.defined() ? add(mean_f2, f2) : f2;
  }
  mean_f = div(mean_f, k);
  mean_f2 = div(mean_f2, k);
  const double var = sum(sub(mean_f2, mul(mean_f, mean_f))).item<double>();  // summed over x and c
  const double sq = sum(mean_f2).item<double>();
  return sq > 0 ? var / sq : 0.0;
}

}  // namespace kiln::eval
