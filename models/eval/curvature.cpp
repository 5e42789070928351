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

// sum_i <a_i, b_i> as a recorded 0-d tensor (terms with an undefined a_i left out; b_i is
// taken in a_i's dtype); undefined when every a_i is.
Tensor inner(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  Tensor s;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].defined()) continue;
    Tensor t = sum(mul(a[i], b[i].to(a[i].dtype())));
    s = s.defined() ? add(s, t) : t;
  }
  return s;
}

// <a, b> in f64, read back once.
double dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  Tensor s;
  for (size_t i = 0; i < a.size(); ++i) {
    Tensor t = sum(mul(a[i].to(DType::F64), b[i].to(DType::F64)));
    s = s.defined() ? add(s, t) : t;
  }
  return s.defined() ? s.item<double>() : 0.0;
}

// d output / d params, detached, zeros where a param is not reached.
std::vector<Tensor> grads_or_zeros(const Tensor& output, const std::vector<Tensor>& params, bool retain_graph) {
  GradOptions go;
  go.allow_unused = true;
  go.retain_graph = retain_graph;
  std::vector<Tensor> g = grad({output}, params, {}, go);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i].defined() ? g[i].detach() : zeros_like(params[i]);
  return g;
}

void check_scalar_loss(const char* op, const Tensor& loss) {
  kiln::detail::check_defined(op, loss, "loss");
  KILN_CHECK(loss.numel() == 1, op, ": the loss must be a scalar, got ", describe(loss));
  KILN_CHECK(loss.requires_grad(), op, ": the loss does not depend on the params (computed under NoGradGuard?)");
}

void check_power_options(const char* op, const std::vector<Tensor>& params, const PowerIterationOptions& o) {
  KILN_CHECK(!params.empty(), op, ": no params");
  KILN_CHECK(o.max_iterations >= 1 && o.tolerance >= 0, op, ": bad options (max_iterations ", o.max_iterations,
             ", tolerance ", o.tolerance, ")");
}

// Power iteration on a symmetric operator given by its products `product(v)`, from a random
// unit vector drawn with options.seed; t0 starts the reported time.
TopEigen power_iteration(const char* op, const std::vector<Tensor>& params, const PowerIterationOptions& o,
                         std::chrono::steady_clock::time_point t0,
                         const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& product) {
  Generator gen(o.seed);
  std::vector<Tensor> v;
  for (const Tensor& p : params) v.push_back(randn(p.sizes(), TensorOptions(p.dtype()), &gen).to(p.device()));
  auto normalise = [op](std::vector<Tensor>& x) {
    const double n = std::sqrt(dot(x, x));
    KILN_CHECK(n > 0 && std::isfinite(n), op, ": the matrix-vector product has norm ", n,
               " (a zero or non-finite matrix along the iterate)");
    for (Tensor& t : x) t = div(t, n);
  };
  normalise(v);
  TopEigen r;
  double prev = 0;
  for (int64_t k = 0; k < o.max_iterations; ++k) {
    std::vector<Tensor> av = product(v);
    const double lambda = dot(v, av);  // Rayleigh quotient (|v| = 1)
    r.iterations = k + 1;
    r.eigenvalue = lambda;
    v = std::move(av);
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
  std::vector<Tensor> vd;
  for (const Tensor& t : v) vd.push_back(t.detach());
  Tensor gv = inner(grad({loss}, params, {}, first), vd);
  if (!gv.defined() || !gv.requires_grad()) {  // a loss at most linear in the params
    std::vector<Tensor> zero;
    for (const Tensor& p : params) zero.push_back(zeros_like(p));
    return zero;
  }
  return grads_or_zeros(gv, params, false);
}

TopEigen hessian_top_eigenvalue(const std::function<Tensor()>& loss_fn, const std::vector<Tensor>& params,
                                const PowerIterationOptions& o) {
  const char* op = "hessian_top_eigenvalue";
  KILN_CHECK(static_cast<bool>(loss_fn), op, ": no loss function");
  check_power_options(op, params, o);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor loss = loss_fn();
  check_scalar_loss(op, loss);
  // grad L once, with its graph kept: each product differentiates <grad L, v>.
  GradOptions first;
  first.create_graph = true;
  first.allow_unused = true;
  const std::vector<Tensor> g = grad({loss}, params, {}, first);
  return power_iteration(op, params, o, t0, [&](const std::vector<Tensor>& v) {
    Tensor gv = inner(g, v);
    KILN_CHECK(gv.defined() && gv.requires_grad(), op, ": the loss's gradient does not depend on the params (a loss "
               "linear in them has a zero Hessian)");
    return grads_or_zeros(gv, params, true);
  });
}

TopEigen fisher_top_eigenvalue(const std::function<Tensor()>& outputs_fn, const std::vector<Tensor>& params,
                               FisherLoss kind, const PowerIterationOptions& o) {
  const char* op = "fisher_top_eigenvalue";
  KILN_CHECK(static_cast<bool>(outputs_fn), op, ": no output function");
  check_power_options(op, params, o);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor f = outputs_fn();
  kiln::detail::check_defined(op, f, "outputs");
  KILN_CHECK(f.dim() == 2 && f.size(0) >= 1, op, ": outputs must be (N, C), got ", describe(f));
  KILN_CHECK(f.requires_grad(), op, ": the outputs do not depend on the params");
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
  const std::vector<Tensor> jtu = grad({sum(mul(f, u))}, params, {}, first);
  return power_iteration(op, params, o, t0, [&](const std::vector<Tensor>& v) {
    Tensor s = inner(jtu, v);
    KILN_CHECK(s.defined() && s.requires_grad(), op, ": the outputs do not depend on the params");
    GradOptions keep;
    keep.retain_graph = true;
    Tensor jv = grad({s}, {u}, {}, keep)[0].detach();  // (N, C)
    Tensor hjv = kind == FisherLoss::CrossEntropy ? sub(mul(p, jv), mul(p, sum(mul(p, jv), {1}, true))) : jv;
    return grads_or_zeros(sum(mul(f, div(hjv, n))), params, true);  // J^T H J v / N
  });
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
