// CPU kernels computed by oneDNN (Debian's libdnnl), beside kiln's own loops.
//
// oneDNN's JIT convolutions (AVX2/AVX-512, blocked layouts) beat im2col + GEMM on the CPU,
// and PyTorch's CPU backend runs its convolutions through the same library. Its sgemm
// also fills the f32 matmul slot: on this project's 2-core machine it is 4-19% faster than
// OpenBLAS's on one thread at the GPT's shapes, and up to 3.7x on two (OpenBLAS hardly
// splits the weight gradients' (K large, M and N small) products across threads). They fill the
// CPU slots of the ops they cover when kiln loads its kernels (ops/register.cpp), unless
// KILN_ONEDNN=0 is set. kiln's loops (kiln::cpu::<op>) stay the reference: the tests
// compare each oneDNN kernel with them, and each kernel hands what oneDNN does not cover
// (f64, f16/bf16, geometries oneDNN rejects) to them.
//
// oneDNN runs on kiln's OpenMP thread pool (core/parallel.h). Its results are
// deterministic for a given thread count; they may differ in the last bits between
// thread counts (its weight gradient splits the batch over threads).
#pragma once
#include <kiln/core/tensor_view.h>
#include <kiln/ops/conv.h>

namespace kiln::onednn {

// Whether the oneDNN kernels are in use: KILN_ONEDNN is unset or not "0".
bool enabled();
// Puts the oneDNN kernels into the CPU slots of the ops they cover.
void register_kernels();

// The slots' contracts (ops/op_list.h: matmul; ops/conv.h). matmul: f32 through
// dnnl_sgemm, anything else to cpu::matmul (OpenBLAS).
void matmul(const TensorView& a, const TensorView& b, const TensorView& out);
void conv2d_forward(const TensorView& x, const TensorView& w, const TensorView& bias, const TensorView& y,
                    const Conv2dGeometry& g);
void conv2d_backward_data(const TensorView& gy, const TensorView& w, const TensorView& gx, const Conv2dGeometry& g);
void conv2d_backward_weight(const TensorView& x, const TensorView& gy, const TensorView& gw, const Conv2dGeometry& g);

}  // namespace kiln::onednn
