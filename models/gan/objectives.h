// The objectives of GAN training and its stabilisers, as functions (kiln_train_gan calls
// them; tests check each formula). Logits are D's raw outputs (N); BCE is
// binary_cross_entropy_with_logits, averaged over the batch.
//
//   discriminator_loss      BCE(D(x), s) + BCE(D(G(z)), 0); s < 1 is one-sided label
//                           smoothing (Salimans et al. 2016: only the real targets move)
//   generator_loss          BCE(D(G(z)), 1), the non-saturating loss of Goodfellow et al.
//   relativistic_*_loss     the relativistic average GAN (RaSGAN): each side's logits
//                           against the other side's mean
//   minimax_generator_loss  -BCE(D(G(z)), 0) = mean log(1 - D(G(z))), the minimax game's own
//                           G loss (what the unrolled GAN of Metz et al. 2017 minimises)
//   feature_matching_loss   ||mean_x f(x) - mean_z f(G(z))||^2 over D's features f
//                           (Salimans et al. 2016); the real side is a constant
//   gradient_penalty        mean_i (||grad_x^ D(x^)_i||_2 - 1)^2 at x^ = e x + (1 - e) G(z),
//                           e ~ U(0, 1) per sample (Gulrajani et al. 2017), differentiable
//   wgan_critic_loss        mean D(G(z)) - mean D(x) (+ lambda * penalty by the caller)
//   wgan_generator_loss     -mean D(G(z)) (also the hinge loss's G loss)
//   hinge_discriminator_loss  mean relu(1 - D(x)) + mean relu(1 + D(G(z))) (Lim & Ye 2017,
//                           the SN-GAN's loss of Miyato et al. 2018)
//   mode_regularizer_loss   lambda1 mean_i ||x_i - G(E(x_i))||^2 + lambda2 BCE(D(G(E(x))), 1)
//                           (Che et al. 2017: the geometric and the mode regulariser)
//   top_k / top_k_count     the k of D's outputs on G's samples that D rates most real, and
//                           k = max(ceil(gamma^epoch B), ceil(nu B)): G's loss on those alone
//                           (Sinha et al., NeurIPS 2020, "Top-k Training of GANs")
//   unroll_discriminator    theta_K after K Adam steps of D's loss from D's optimizer state,
//                           differentiable with respect to G through the steps (second
//                           order; Metz et al. 2017), or as constants (first order)
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/zoo/gan.h>
#include <kiln/optim/optimizer.h>

namespace kiln::gan {

Tensor discriminator_loss(const Tensor& real_logits, const Tensor& fake_logits, double real_target = 1.0);
Tensor generator_loss(const Tensor& fake_logits);
Tensor minimax_generator_loss(const Tensor& fake_logits);
// The relativistic average GAN (Jolicoeur-Martineau, ICLR 2019), RaSGAN: D rates each
// sample against the mean logit of the other side. D: BCE(D(x) - mean D(G(z)), s) +
// BCE(D(G(z)) - mean D(x), 0); G: BCE(D(G(z)) - mean D(x), 1) + BCE(D(x) - mean D(G(z)), 0).
Tensor relativistic_discriminator_loss(const Tensor& real_logits, const Tensor& fake_logits, double real_target = 1.0);
Tensor relativistic_generator_loss(const Tensor& real_logits, const Tensor& fake_logits);
Tensor feature_matching_loss(const Tensor& real_features, const Tensor& fake_features);

// The k entries of D's outputs on G's samples (logits or critic scores, (N)) that D rates
// most real, largest first; differentiable (index_select), so a G loss of them gives the
// other samples no gradient. Ties go to the lower index. Throws unless 1 <= k <= N.
Tensor top_k(const Tensor& fake_logits, int64_t k);
// Top-k training's k for a batch of `batch` at 0-based `epoch`: gamma^epoch * batch,
// rounded up, but at least ceil(nu * batch) (and at least 1). gamma, nu in (0, 1].
int64_t top_k_count(int64_t batch, int64_t epoch, double gamma, double nu);

// critic: x -> (N) scores. eps (N) in [0, 1]: the interpolation weights (drawn by the caller,
// so the call is deterministic). real and fake of one shape (N, ...); fake is detached.
Tensor gradient_penalty(const std::function<Tensor(const Tensor&)>& critic, const Tensor& real, const Tensor& fake,
                        const Tensor& eps);
Tensor wgan_critic_loss(const Tensor& real_scores, const Tensor& fake_scores);
Tensor wgan_generator_loss(const Tensor& fake_scores);
Tensor hinge_discriminator_loss(const Tensor& real_scores, const Tensor& fake_scores);

// reconstruction = G(E(x)); recon_logits = D(reconstruction).
Tensor mode_regularizer_loss(const Tensor& x, const Tensor& reconstruction, const Tensor& recon_logits,
                             double lambda1, double lambda2);

struct UnrollOptions {
  int64_t steps = 5;
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999, eps = 1e-8;
  double real_target = 1.0;
  bool second_order = true;
};
// D's parameters after `steps` Adam steps on discriminator_loss(D(real), D(fake)) starting
// from D's parameters and the Adam state in `d_optimizer` (exp_avg, exp_avg_sq, step of
// each parameter; zeros when it has not stepped yet). With second_order the result is a
// function of `fake` (so of G) through every step; otherwise the steps are constants.
// D and its optimizer are not changed.
std::vector<Tensor> unroll_discriminator(models::Discriminator& D, const Optimizer& d_optimizer, const Tensor& real,
                                         const Tensor& fake, const UnrollOptions& options);

}  // namespace kiln::gan
