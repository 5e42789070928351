// Finite-difference gradient checks (see gradcheck.h).
#include <kiln/ops/gradcheck.h>

#include <cmath>
#include <sstream>

#include <kiln/core/autograd.h>
#include <kiln/core/generator.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>
#include <kiln/ops/reduce.h>

namespace kiln {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  std::vector<Tensor> xs;
  for (const Tensor& in : inputs) {
    if (in.defined() && is_floating(in.dtype())) {
      Tensor x = in.detach().to(kCPU, DType::F64).contiguous().clone().detach();
      x.set_requires_grad(true);
      xs.push_back(x);
    } else {
      xs.push_back(in.defined() ? in.detach().to(kCPU) : in);
    }
  }
  Tensor y = f(xs);
  KILN_CHECK(y.defined() && y.dtype() == DType::F64, "gradcheck: f must return an f64 tensor for f64 inputs, got ",
             y.defined() ? dtype_name(y.dtype()) : "undefined");
  Generator gen(opt.seed);
  Tensor w = randn(y.sizes(), DType::F64, &gen);
  std::vector<double> wv = w.to_vector<double>();
  y.backward(w);

  auto project = [&](const Tensor& out) {
    std::vector<double> v = out.to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < v.size(); ++i) s += v[i] * wv[i];
    return s;
  };

  GradcheckResult res;
  NoGradGuard no_grad;
  for (size_t k = 0; k < xs.size(); ++k) {
    Tensor x = xs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> analytic = g.defined() ? g.to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    double* p = x.data<double>();
    for (int64_t j = 0; j < x.numel(); ++j) {
      double orig = p[j];
      p[j] = orig + opt.eps;
      double fp = project(f(xs));
      p[j] = orig - opt.eps;
      double fm = project(f(xs));
      p[j] = orig;
      double numeric = (fp - fm) / (2 * opt.eps);
      double err = std::fabs(analytic[j] - numeric);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (res.ok && !(err <= opt.atol + opt.rtol * std::fabs(numeric))) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << k << " element " << j << ": analytic " << analytic[j] << " vs numeric " << numeric
           << " (output grad_fn " << (y.grad_fn() ? y.grad_fn()->name() : std::string("none")) << ")";
        res.message = os.str();
      }
    }
  }
  return res;
}

GradcheckResult gradgradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                              const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  Tensor u;  // the output's weighting, drawn once from the output's shape
  auto first_order = [&](const std::vector<Tensor>& xs) {
    // gradcheck evaluates its finite differences without grad mode; this function needs it.
    EnableGradGuard recording;
    Tensor y = f(xs);
    if (!u.defined()) {
      Generator gen(opt.seed + 1);
      u = randn(y.sizes(), DType::F64, &gen);
    }
    std::vector<Tensor> wrt;
    for (const Tensor& x : xs)
      if (x.defined() && x.requires_grad()) wrt.push_back(x);
    GradOptions go;
    go.create_graph = true;
    go.allow_unused = true;
    std::vector<Tensor> gs = grad({y}, wrt, {u}, go);
    std::vector<Tensor> flat;
    for (size_t i = 0; i < gs.size(); ++i)
      flat.push_back(gs[i].defined() ? gs[i].reshape({-1}) : zeros({wrt[i].numel()}, DType::F64));
    Tensor out = cat(flat);
    // A gradient that does not depend on the inputs (add, neg, ...): the second derivative
    // is 0; tie it to the inputs with a zero term so that it can be checked all the same.
    if (!out.requires_grad())
      for (const Tensor& x : wrt) out = add(out, mul(kiln::sum(x), 0.0));
    return out;
  };
  return gradcheck(first_order, inputs, opt);
}

}  // namespace kiln
