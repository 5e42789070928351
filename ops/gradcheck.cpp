// Finite-difference gradient checks (see gradcheck.h).
#include <kiln/ops/gradcheck.h>

#include <cmath>
#include <sstream>

#include <kiln/core/autograd.h>
#include <kiln/core/generator.h>

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

}  // namespace kiln
