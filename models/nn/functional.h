// functional_call: runs a module with its parameters replaced by other tensors, without
// touching the module (PyTorch's torch.func.functional_call). Unrolled GANs evaluate the
// discriminator at parameters reached by differentiable optimizer steps, theta_k =
// theta_{k-1} - lr * grad(L, theta_{k-1}, create_graph), and backpropagate through
// them into the generator; Hessian-vector products and meta-learning do the same.
#pragma once
#include <span>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// `params` replace module.parameters(), in that order (same shapes). A child whose
// replacements are its own tensors runs its ordinary forward; otherwise the layer is
// evaluated with the ops on the replacements. Supported with replacements: Linear,
// Conv2d, ConvTranspose2d, BatchNorm2d (training: batch statistics, the running ones are
// left alone; eval: the running ones), LayerNorm, MinibatchDiscrimination, SpectralNorm
// (one power iteration from its u and v, which are left as they were), and Sequential
// containers of these and of parameter-free modules. Any other module with replaced
// parameters is a kiln::Error naming it, as are a wrong count or shape.
Tensor functional_call(Module& module, const Tensor& input, std::span<const Tensor> params);

}  // namespace kiln::nn
