// Backward on CUDA against backward on the CPU: the same graph, the same f32 inputs,
// gradients within tolerance (the backward formulas are ops, so this exercises the CUDA
// kernels through autograd, including broadcasting and views).
#include "test_util.h"

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

// Runs f on CPU leaves and on CUDA copies of them, backpropagates the same output
// gradient, and compares every input gradient.
void check_backward(const std::function<Tensor(const V&)>& f, const std::vector<Shape>& shapes, uint64_t seed,
                    double lo = -2.0, double hi = 2.0) {
  V cpu, gpu;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Generator g(seed + i);
    Tensor x = add(mul(rand(shapes[i], DType::F32, &g), hi - lo), lo);
    cpu.push_back(x.clone().set_requires_grad(true));
    gpu.push_back(x.to(cuda0()).set_requires_grad(true));
  }
  Tensor yc = f(cpu), yg = f(gpu);
  REQUIRE(yg.is_cuda());
  Generator gg(seed + 100);
  Tensor w = randn(yc.sizes(), DType::F32, &gg);
  yc.backward(w);
  yg.backward(w.to(cuda0()));
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("input " << i);
    REQUIRE(gpu[i].grad().defined());
    CHECK(gpu[i].grad().is_cuda());
    CHECK_CLOSE_TOL(gpu[i].grad().cpu(), cpu[i].grad(), 1e-4, 1e-4);
  }
}

}  // namespace

TEST_CASE("cuda backward: unary ops", "[cuda][autograd]") {
  for (UnaryOp op : {UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Relu,
                     UnaryOp::LeakyRelu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Gelu, UnaryOp::GeluTanh,
                     UnaryOp::Silu, UnaryOp::Erf}) {
    INFO(op_name(op));
    check_backward([op](const V& v) { return unary(op, v[0], 0.1); }, {{33, 65}}, 1);
  }
  for (UnaryOp op : {UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt}) {
    INFO(op_name(op));
    check_backward([op](const V& v) { return unary(op, v[0]); }, {{7, 129}}, 2, 0.5, 3.0);
  }
}

TEST_CASE("cuda backward: binary ops with broadcasting", "[cuda][autograd]") {
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum,
                      BinaryOp::Minimum}) {
    INFO(op_name(op));
    check_backward([op](const V& v) { return binary(op, v[0], v[1]); }, {{17, 33}, {33}}, 3, 0.5, 2.0);
    check_backward([op](const V& v) { return binary(op, v[0].t(), v[1]); }, {{33, 17}, {17, 1}}, 4, 0.5, 2.0);
  }
  check_backward([](const V& v) { return pow(v[0], v[1]); }, {{9, 11}, {11}}, 5, 0.5, 2.0);
}

TEST_CASE("cuda backward: reductions, softmax, matmul, index ops", "[cuda][autograd]") {
  check_backward([](const V& v) { return sum(v[0], {1}); }, {{5, 1000, 3}}, 6);
  check_backward([](const V& v) { return mean(v[0], {0, 2}); }, {{5, 100, 3}}, 7);
  check_backward([](const V& v) { return max(v[0], {-1}); }, {{31, 257}}, 8);
  check_backward([](const V& v) { return var(v[0], {1}); }, {{7, 300}}, 9);
  check_backward([](const V& v) { return softmax(v[0], -1); }, {{13, 1025}}, 10);
  check_backward([](const V& v) { return log_softmax(v[0], 0); }, {{64, 9}}, 11);
  check_backward([](const V& v) { return matmul(v[0], v[1]); }, {{3, 33, 65}, {65, 17}}, 12);
  check_backward([](const V& v) { return matmul(v[0].transpose(-1, -2), v[1]); }, {{2, 65, 33}, {2, 65, 9}}, 13);
  Tensor idx = from_vector<int64_t>({4, 0, 4, 2});
  check_backward([idx](const V& v) { return index_select(v[0], 1, idx.to(v[0].device())); },
                 {{3, 5, 7}}, 14);
  check_backward([](const V& v) { return cat({v[0], v[1].t()}, 0); }, {{4, 6}, {6, 3}}, 15);
}
