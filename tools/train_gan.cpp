// kiln_train_gan: trains a GAN — the DCGAN of Radford et al. on images (Fashion-MNIST, or
// a folder of the user's pictures) or the MLP GAN of Metz et al. on 2-D Gaussian mixtures —
// with the stabilisers GAN research compares, on the CPU or a CUDA device, data-parallel
// under tools/kiln-run.
//
// The losses (x real, z ~ N(0, I), D's output a logit, BCE = binary cross entropy on logits):
//   D:  BCE(D(x), s) + BCE(D(G(z)), 0)         s = --label-smoothing (one-sided): 0.9 on
//                                               images by default, 1 (none) on 2-D data
//   G:  BCE(D(G(z)), 1)                         the non-saturating loss (--g-loss minimax:
//                                               mean log(1 - D(G(z))), the default with
//                                               --unrolled, as Metz et al. unroll that game)
// Stabilisers (each a flag; they combine unless noted):
//   --feature-matching        G minimises ||E f(x) - E f(G(z))||^2 over D's last hidden
//                             layer f instead (Salimans et al. 2016)
//   --minibatch-discrimination  D gets a minibatch-discrimination layer before its logit
//                             (Salimans et al. 2016; models/nn/minibatch_discrimination.h);
//                             the default on images (--no-minibatch-discrimination: none)
//   --unrolled K              G's loss is taken against D after K further Adam steps of D,
//                             differentiated through those steps (second order; Metz et al.
//                             2017); --unrolled-first-order drops the second-order terms
//   --mode-regularizer        an encoder E and, for G and E, lambda1 ||x - G(E(x))||^2 +
//                             lambda2 BCE(D(G(E(x))), 1) (Che et al. 2017)
//   --lr-decay linear         the learning rate falls linearly to 0 over the run (the default
//                             on 2-D data, whose modes are 3 sigma = 0.06 wide)
//   --wgan-gp                 a critic without BN, D: E D(G(z)) - E D(x) + lambda (||grad
//                             D(x^)|| - 1)^2 at x^ between real and fake, G: -E D(G(z)),
//                             5 critic steps per G step, Adam(1e-4, 0, 0.9) (Gulrajani et al.
//                             2017); excludes label smoothing, unrolling and the mode
//                             regulariser
//   --spectral-norm           D's convolutions and head spectrally normalised (W / sigma(W),
//                             one power iteration per forward; Miyato et al. 2018), D
//                             without BN; models/nn/spectral_norm.h
//   --relativistic            the relativistic average GAN (RaSGAN; Jolicoeur-Martineau 2019),
//                             D: BCE(D(x) - mean D(G(z)), s) + BCE(D(G(z)) - mean D(x), 0),
//                             G: the same with the targets swapped (both terms, so G's step
//                             runs D on the real batch too); label smoothing applies to the
//                             real term; under DDP the means are each rank's, as BatchNorm's
//                             statistics; excludes WGAN-GP, the hinge loss, unrolling,
//                             feature matching, top-k and --g-loss minimax
//   --hinge                   the hinge loss (Lim & Ye 2017; Miyato et al. 2018), D:
//                             E relu(1 - D(x)) + E relu(1 + D(G(z))), G: -E D(G(z)); excludes
//                             label smoothing, unrolling, the mode regulariser, WGAN-GP and
//                             --g-loss minimax
// Optimizers: Adam by default (the GAN papers'); --optimizer lamb | proxadam (ProxGen's
// proximal step of --prox-lambda |w|^--prox-p) with the same --lr and betas;
// --grad-noise ETA adds annealed Gaussian noise to the gradients of G and D.
//
// An iteration takes one batch of real data and updates D; G (and E) are updated every
// --d-steps iterations. An epoch is one pass over the images, or --steps-per-epoch
// iterations of 2-D data. Every random draw of iteration i (latents, 2-D samples,
// interpolation weights) comes from a Philox stream at a fixed offset for i, so a run is a
// pure function of its flags and a resumed run continues exactly.
//
// After every epoch: an 8 x 8 grid of samples from fixed latents (<run>/samples/
// epoch-NNN.png and <run>/samples.png), or for 2-D data a scatter plot of 2,500 samples
// over the mixture's centres; the metrics of models/eval/gan_metrics.h (2-D: modes covered
// and high-quality share; images with --classifier: MODE score, Inception-style score,
// Fréchet distance of the classifier's penultimate features and class coverage, beside the
// same numbers for real test images); a checkpoint. The last stdout line is a JSON summary.
//
// Data parallel: --batch-size is the global batch; each rank takes its share of every
// batch (the same real samples and latents the single process would use) and G and D are
// each wrapped in DistributedDataParallel. Without BatchNorm (the MLP GAN) N ranks give the
// single process's results; BatchNorm normalises per rank, as PyTorch's DDP does. The
// unrolled D steps and minibatch discrimination run on each rank's share. The per-step
// losses in metrics.jsonl and on the progress line are rank 0's (its share of the batch);
// the per-epoch metrics are computed by rank 0 from the shared G. --dp neighbor (BlueFog's
// decentralized averaging, distributed/decentralized.h) keeps a G, D and E per rank instead,
// each averaged with its --topology neighbors after its own steps, and averaged exactly
// (weights, BatchNorm statistics, Adam's moments, G's weight average) at every epoch end and
// checkpoint, with the consensus distance recorded in metrics.jsonl.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/data/images.h>
#include <kiln/models/data/toy2d.h>
#include <kiln/models/eval/classifier.h>
#include <kiln/models/eval/gan_metrics.h>
#include <kiln/models/gan/objectives.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>
#include <kiln/models/run/step_log.h>
#include <kiln/models/run/run_dir.h>
#include <kiln/models/zoo/gan.h>

#include "cli.h"
#include "run_cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;
constexpr const char* kProg = "kiln_train_gan";

struct Config {
  std::string data = "fashion-mnist";
  std::string model;  // "" = dcgan for images, mlp for 2-D data
  int64_t epochs = 0;  // 0: 40 for images (--max-minutes ends a CPU run sooner), 10 for 2-D data
  double max_minutes = 15;  // the whole run's time budget, whole epochs (0: none)
  int64_t batch_size = 0;  // 0: 32 for images, 256 for 2-D data
  int64_t steps_per_epoch = 0;  // 2-D data (0: 650 with --unrolled, 500 otherwise)
  double lr = 0;      // 0: 3e-4 for images (1e-4 with --wgan-gp), 1e-3 for 2-D data
  double lr_d = 0;    // 0: 2/3 --lr for the DCGAN (--lr with --wgan-gp/--hinge), --lr on 2-D data (/ 10 with --unrolled)
  std::string g_loss;  // "" = minimax with --unrolled (Metz et al.), non-saturating otherwise
  std::string lr_decay;  // "" = none for images, linear for 2-D data
  double beta1 = -1;  // < 0: 0.5 (0 with --wgan-gp)
  std::string optimizer = "adam";  // of G, D and E: adam | lamb | proxadam | sam | asam (Adam's betas, --lr)
  std::string sam_base = "adam";   // --optimizer sam|asam: the optimizer SAM wraps
  double sam_rho = 0, asam_eta = 0.01;  // 0: 0.05 for SAM, 0.5 for ASAM
  bool uses_sam() const { return optimizer == "sam" || optimizer == "asam"; }
  // --optimizer entropy-sgd (Chaudhari et al. 2017); the Langevin step 0.01, not the
  // classifier's 0.1, which diverged with WGAN-GP's unbounded critic on 2-D data
  EntropySGDOptions esgd{.inner_steps = 4, .inner_lr = 0.01};
  double prox_lambda = 1e-4, prox_p = 1;
  double grad_noise = 0, grad_noise_gamma = 0.55;
  tools::DataParallelFlags par;  // --dp ring | hierarchical | neighbor (with several ranks)
  double beta2 = -1;  // < 0: 0.999 (0.9 with --wgan-gp)
  int64_t d_steps = 0;  // 0: 1 (5 with --wgan-gp)
  int64_t latent_dim = 0;  // 0: 100 for DCGAN, 256 for the MLP GAN
  int64_t width = 0;    // 0: 48, with D at 32 unless --d-width
  int64_t d_width = 0;  // 0: --width (32 when --width is not given either)
  int64_t hidden = 128;
  int64_t image_size = 0;  // 0: 28 for Fashion-MNIST, 32 for a folder
  int64_t channels = 3;    // a folder's images: 1 or 3
  double label_smoothing = 0;  // 0: 0.7 for images (1 with --wgan-gp or --hinge), 1 (none) for 2-D data
  bool feature_matching = false;
  bool minibatch_discrimination = false;     // on for images unless --no-minibatch-discrimination or --wgan-gp
  bool no_minibatch_discrimination = false;
  int64_t mbd_kernels = 0;  // 0: 8 (its cost grows with D's features * kernels and batch^2 * kernels)
  int64_t mbd_kernel_dim = 5;
  int64_t unrolled = 0;
  bool unrolled_first_order = false;
  bool mode_regularizer = false;
  double mr_lambda1 = 0.2;
  double mr_lambda2 = 0.4;
  bool wgan_gp = false;
  bool spectral_norm = false;
  bool hinge = false;
  bool relativistic = false;
  bool critic() const { return wgan_gp || hinge; }  // D's output a score, not a logit
  bool top_k = false;
  double top_k_gamma = 0.99;
  double top_k_nu = 0.5;
  double g_ema = -1;  // < 0: 0.9999 for images, 0 (off) for 2-D data
  double gp_lambda = 10.0;
  std::string classifier;
  int64_t eval_samples = 0;  // 0: 10000 for images, 2500 for 2-D data
  uint64_t seed = 0;
  std::string device;
  std::string data_dir = data::kFashionMnistDir;
  int64_t limit_train = 0;
  int64_t stop_after = 0;
  std::string sample_bn = "batch";
  bool eval_only = false;
  std::string eval_images;  // folder:PATH of images to score as if a G had drawn them
  tools::RunFlags run;
};

void add_flags(CLI::App& app, Config& c) {
  app.option_defaults()->always_capture_default();
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--data", c.data, "fashion-mnist | ring8 | grid25 | folder:PATH (a folder of images, recursively)");
  app.add_option("--model", c.model, "dcgan | mlp (default: dcgan for images, mlp for 2-D data)")
      ->check(CLI::IsMember({"", "dcgan", "mlp"}));
  app.add_option("--epochs", c.epochs, "epochs (0: 40 for images, 10 for 2-D data)")
      ->check(tools::integer_range(0, int64_t{1} << 30));
  app.add_option("--max-minutes", c.max_minutes,
                 "time budget of the whole run (all invocations, evaluations included): no epoch starts that would "
                 "end after it, at the pace of the epochs so far (0: none)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--batch-size", c.batch_size, "global batch, split across the ranks (0: 32 images, 256 points)")
      ->check(tools::integer_range(0, int64_t{1} << 30));
  app.add_option("--steps-per-epoch", c.steps_per_epoch,
                 "iterations per epoch on 2-D data (0: 650 with --unrolled, 500 otherwise)")
      ->check(tools::integer_range(0, int64_t{1} << 30));
  app.add_option("--lr", c.lr,
                 "Adam learning rate of G, D and E (0: 3e-4 for images, 1e-4 with --wgan-gp; 1e-3 for 2-D data)")
      ->check(tools::positive_real(true));
  app.add_option("--lr-d", c.lr_d,
                 "D's learning rate when it differs from G's (0: two thirds of --lr for the DCGAN, 2e-4 at the default "
                 "3e-4, --lr with --wgan-gp or --hinge; --lr on 2-D data, --lr / 10 with --unrolled as the unrolled-GAN "
                 "code)")
      ->check(tools::positive_real(true));
  app.add_option("--g-loss", c.g_loss,
                 "G's loss: non-saturating (BCE(D(G(z)), 1)) | minimax (mean log(1 - D(G(z)))); default: minimax "
                 "with --unrolled, as Metz et al. unroll the minimax game, non-saturating otherwise")
      ->check(CLI::IsMember({"", "non-saturating", "minimax"}));
  app.add_option("--g-ema", c.g_ema,
                 "sample from an exponential moving average of G's weights with this decay, with warm-up "
                 "(Yazici et al. 2019); 0: off (negative: 0.9999 for images, off for 2-D data)");
  app.add_option("--lr-decay", c.lr_decay, "none | linear (to 0 at the last iteration; default: linear for 2-D data)")
      ->check(CLI::IsMember({"", "none", "linear"}));
  app.add_option("--optimizer", c.optimizer,
                 "the optimizer of G, D and E, with --lr and --beta1/--beta2: adam | lamb (layer-wise trust ratio, "
                 "You et al. 2020) | proxadam (ProxGen: the proximal step of --prox-lambda * |w|^--prox-p on the "
                 "conv/linear weights) | sam | asam (sharpness-aware minimisation around --sam-base for D's and "
                 "G's steps alike: each takes a second forward/backward pass at w + e(w)) | entropy-sgd (D's and "
                 "G's steps each run --esgd-inner-steps Langevin steps on slices of the batch, then Adam's step "
                 "on gamma (x - mu): the Entropy-Adam of Chaudhari et al.); formulas in optim/research.h, "
                 "optim/proximal.h, optim/sam.h and optim/entropy_sgd.h")
      ->check(CLI::IsMember({"adam", "lamb", "proxadam", "sam", "asam", "entropy-sgd"}));
  app.add_option("--sam-base", c.sam_base, "sam/asam: the optimizer SAM wraps: adam | lamb | proxadam")
      ->check(CLI::IsMember({"adam", "lamb", "proxadam"}));
  app.add_option("--sam-rho", c.sam_rho,
                 "sam/asam: the neighbourhood radius rho (0: 0.05 for sam as Foret et al. 2021, 0.5 for asam as "
                 "Kwon et al. 2021)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--asam-eta", c.asam_eta, "asam: eta in T = |w| + eta")->check(tools::positive_real(true));
  tools::add_entropy_sgd_flags(app, c.esgd, "the batch (real images and latents alike)");
  app.add_option("--prox-lambda", c.prox_lambda, "proxadam: the penalty weight lambda")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--prox-p", c.prox_p, "proxadam: the penalty's exponent: 0, 0.5 or 1")
      ->check(CLI::IsMember({0.0, 0.5, 1.0}));
  app.add_option("--grad-noise", c.grad_noise,
                 "annealed Gaussian noise of variance ETA / (1 + t)^gamma on G's and D's gradients (Neelakantan et al. "
                 "2015; 0: off)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--grad-noise-gamma", c.grad_noise_gamma, "--grad-noise's decay exponent gamma")
      ->check(tools::positive_real());
  tools::add_dp_flags(app, c.par, /*neighbor=*/true,
                      "G, D and E each averaged with their neighbors after their own steps, and exactly (weights, "
                      "BatchNorm statistics, Adam's moments, G's average) at every epoch end and checkpoint");
  app.add_option("--beta1", c.beta1, "Adam beta1 (negative: 0.5, 0 with --wgan-gp)");
  app.add_option("--beta2", c.beta2, "Adam beta2 (negative: 0.999, 0.9 with --wgan-gp)");
  app.add_option("--d-steps", c.d_steps, "D updates per G update (0: 1, 5 with --wgan-gp)")
      ->check(tools::integer_range(0, 1000));
  app.add_option("--latent-dim", c.latent_dim, "latent size (0: 100 DCGAN, 256 MLP)")
      ->check(tools::integer_range(0, 1 << 16));
  app.add_option("--width", c.width,
                 "DCGAN width: G's last hidden channels (ngf), and D's first (ndf) unless --d-width (0: G 48, D 32)")
      ->check(tools::integer_range(0, 4096));
  app.add_option("--d-width", c.d_width,
                 "DCGAN: D's (and E's) first hidden channels, ndf (0: --width, or 32 when --width is not given)")
      ->check(tools::integer_range(0, 4096));
  app.add_option("--hidden", c.hidden, "MLP GAN hidden units")->check(tools::integer_range(1, 1 << 16));
  app.add_option("--image-size", c.image_size, "28, 32 or 64 (0: 28 for Fashion-MNIST, 32 for a folder)")
      ->check(CLI::IsMember({0, 28, 32, 64}));
  app.add_option("--channels", c.channels, "channels of a folder's images: 1 (grey) or 3 (RGB)")
      ->check(CLI::IsMember({1, 3}));
  app.add_option("--label-smoothing", c.label_smoothing,
                 "D's target for real data, in [0.5, 1] (one-sided smoothing; 1: none; 0: 0.7 for images, 1 with "
                 "--wgan-gp or --hinge and for 2-D data)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(s.c_str(), &end);
            if (end == s.c_str() || *end != '\0' || !(v == 0 || (v >= 0.5 && v <= 1.0)))
              return "must lie in [0.5, 1] (or be 0: the default)";
            return "";
          },
          "in [0.5, 1]"));
  app.add_flag("--feature-matching", c.feature_matching, "G matches the mean of D's last hidden layer");
  app.add_flag("--minibatch-discrimination", c.minibatch_discrimination,
               "a minibatch-discrimination layer in D (the default for images, except with --wgan-gp)");
  app.add_flag("--no-minibatch-discrimination", c.no_minibatch_discrimination,
               "images: D without the minibatch-discrimination layer");
  app.add_option("--mbd-kernels", c.mbd_kernels, "minibatch discrimination: kernels B (0: 8)")
      ->check(tools::integer_range(0, 4096));
  app.add_option("--mbd-kernel-dim", c.mbd_kernel_dim, "minibatch discrimination: kernel dimension C")
      ->check(tools::integer_range(1, 4096));
  app.add_option("--unrolled", c.unrolled, "unroll K steps of D for G's loss (0: off)")
      ->check(tools::integer_range(0, 100));
  app.add_flag("--unrolled-first-order", c.unrolled_first_order,
               "unrolled GAN without the second-order terms (G's loss at the unrolled D, not through it)");
  app.add_flag("--mode-regularizer", c.mode_regularizer, "mode-regularised GAN: an encoder E and its two regularisers");
  app.add_option("--mr-lambda1", c.mr_lambda1, "mode regulariser: weight of ||x - G(E(x))||^2")
      ->check(tools::positive_real(true));
  app.add_option("--mr-lambda2", c.mr_lambda2, "mode regulariser: weight of BCE(D(G(E(x))), 1)")
      ->check(tools::positive_real(true));
  app.add_flag("--wgan-gp", c.wgan_gp, "WGAN with gradient penalty (a critic without BN)");
  app.add_option("--gp-lambda", c.gp_lambda, "WGAN-GP penalty weight")->check(tools::positive_real(true));
  app.add_flag("--spectral-norm", c.spectral_norm,
               "spectral normalisation of D's weights (Miyato et al. 2018): each layer runs with W / sigma(W), "
               "sigma by one power iteration per forward; D without BN");
  app.add_flag("--relativistic", c.relativistic,
               "the relativistic average GAN (RaSGAN, Jolicoeur-Martineau 2019): D BCE(D(x) - mean D(G(z)), s) + "
               "BCE(D(G(z)) - mean D(x), 0), G the same with the targets swapped; D(x) and D(G(z)) in the progress "
               "line are then sigmoid(D(x) - mean D(G(z))) and sigmoid(D(G(z)) - mean D(x))");
  app.add_flag("--hinge", c.hinge,
               "the hinge loss (Lim & Ye 2017; Miyato et al. 2018): D E relu(1 - D(x)) + E relu(1 + D(G(z))), "
               "G -E D(G(z))");
  app.add_flag("--top-k", c.top_k,
               "top-k training (Sinha et al. 2020): G's loss on the k of each rank's samples D rates most real, "
               "k = max(gamma^epoch, nu) of the batch");
  app.add_option("--top-k-gamma", c.top_k_gamma, "--top-k: k's decay per epoch, in (0, 1]")
      ->check(tools::positive_real(false, 1.0));
  app.add_option("--top-k-nu", c.top_k_nu, "--top-k: the smallest k, as a share of the batch, in (0, 1]")
      ->check(tools::positive_real(false, 1.0));
  app.add_option("--classifier", c.classifier,
                 "a kiln_train_cnn run directory or checkpoint: MODE score, Frechet distance, class coverage");
  app.add_option("--eval-samples", c.eval_samples, "samples per evaluation (0: 10000 images, 2500 points)")
      ->check(tools::integer_range(0, int64_t{1} << 24));
  app.add_option("--seed", c.seed, "seed of the initialisation and every random draw")->check(tools::any_uint64());
  app.add_option("--device", c.device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(tools::device_spec());
  app.add_option("--data-dir", c.data_dir, "Fashion-MNIST idx(.gz) files");
  app.add_option("--limit-train", c.limit_train, "use only the first N training images (quick tests; 0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--stop-after", c.stop_after, "stop after N epochs of this invocation")
      ->check(tools::non_negative<int64_t>())
      ->configurable(false);
  app.add_option("--sample-bn", c.sample_bn,
                 "G's BatchNorm when sampling for the grids and metrics: batch (the statistics of each sample "
                 "batch, as PyTorch's DCGAN example samples in train mode; G's running averages are left as "
                 "they were) | running (eval mode)")
      ->check(CLI::IsMember({"batch", "running"}));
  app.add_flag("--eval-only", c.eval_only,
               "evaluate the newest checkpoint of --run-dir (samples/eval.png and the summary) without training")
      ->configurable(false);
  app.add_option("--eval-images", c.eval_images,
                 "folder:PATH: score the images in PATH (e.g. another framework's samples, grey 28 x 28 for the "
                 "Fashion-MNIST classifier) with --classifier's metrics, as if a G had drawn them; trains nothing")
      ->configurable(false);
  tools::add_run_flags(app, c.run);
}

// ---- settings that follow from the flags -----------------------------------------------

struct Plan {
  bool toy = false;  // 2-D data
  std::optional<data::Mixture2d> mixture;
  std::string folder;
  bool dcgan() const { return !toy; }  // images train the DCGAN, 2-D data the MLP GAN
};

Plan resolve(Config& c) {
  Plan p;
  if (c.data == "ring8" || c.data == "grid25") {
    p.toy = true;
    p.mixture = data::mixture2d(c.data);
  } else if (c.data.rfind("folder:", 0) == 0) {
    p.folder = c.data.substr(7);
    if (p.folder.empty()) throw CLI::ValidationError("--data", "folder: needs a path (folder:PATH)");
  } else if (c.data != "fashion-mnist") {
    throw CLI::ValidationError("--data", "'" + c.data + "' is not fashion-mnist, ring8, grid25 or folder:PATH");
  }
  if (c.model.empty()) c.model = p.toy ? "mlp" : "dcgan";
  if (p.toy && c.model == "dcgan") throw CLI::ValidationError("--model", "dcgan needs image data; 2-D data trains --model mlp");
  if (!p.toy && c.model == "mlp") throw CLI::ValidationError("--model", "mlp trains 2-D data (ring8, grid25); images need dcgan");
  if (c.minibatch_discrimination && c.no_minibatch_discrimination)
    throw CLI::ValidationError("--no-minibatch-discrimination", "contradicts --minibatch-discrimination");
  const bool smoothing = c.label_smoothing > 0 && c.label_smoothing < 1.0;  // asked for
  if (c.wgan_gp && (smoothing || c.unrolled > 0 || c.mode_regularizer))
    throw CLI::ValidationError("--wgan-gp",
                               "excludes --label-smoothing, --unrolled and --mode-regularizer (its critic has no "
                               "probabilities)");
  if (c.hinge && (c.wgan_gp || smoothing || c.unrolled > 0 || c.mode_regularizer ||
                  c.g_loss == "minimax"))
    throw CLI::ValidationError("--hinge",
                               "excludes --wgan-gp, --label-smoothing, --unrolled, --mode-regularizer and --g-loss "
                               "minimax (they are defined on D's probabilities)");
  if (c.relativistic && (c.wgan_gp || c.hinge || c.unrolled > 0 || c.feature_matching || c.top_k ||
                         c.g_loss == "minimax"))
    throw CLI::ValidationError("--relativistic",
                               "excludes --wgan-gp, --hinge, --unrolled, --feature-matching, --top-k and --g-loss "
                               "minimax (they bring their own D or G loss)");
  if (c.top_k && c.feature_matching)
    throw CLI::ValidationError("--top-k", "excludes --feature-matching (whose G loss is not a per-sample one)");
  if (c.unrolled_first_order && c.unrolled == 0)
    throw CLI::ValidationError("--unrolled-first-order", "needs --unrolled K");
  if (p.toy && !c.classifier.empty())
    throw CLI::ValidationError("--classifier", "applies to image data; 2-D data is measured by modes covered");
  if (!p.folder.empty() && !c.classifier.empty() && c.channels != 1)
    throw CLI::ValidationError("--classifier", "the Fashion-MNIST classifier reads 1-channel 28 x 28 images");
  // Images: batch 32 at lr 3e-4 (the DCGAN paper's 128 at 2e-4 takes too few steps in a
  // CPU's 15 minutes): measured on Fashion-MNIST, the MODE score after 8 epochs was 4.61 at
  // batch 64 / 2e-4, 4.85 at 32 / 2e-4, 4.94 at 16 / 2e-4 and 4.93 at 32 / 3e-4, and 32 / 3e-4
  // stays level with 16 / 2e-4 to 30 epochs (5.42, 5.43) at more images per second on two
  // threads (README "Training a GAN").
  if (c.epochs == 0) c.epochs = p.toy ? 10 : 40;
  if (c.batch_size == 0) c.batch_size = p.toy ? 256 : 32;
  if (c.lr == 0) c.lr = c.wgan_gp ? 1e-4 : p.toy ? 1e-3 : 3e-4;
  // The unrolled-GAN reference code trains D ten times slower than G on 2-D data (1e-4, 1e-3).
  // The DCGAN's D (with minibatch discrimination) wins the game by far (D(G(z)) about 0.04
  // late in the default run): at two thirds of G's rate, with label smoothing 0.7, the
  // 15-minute default run reached MODE 5.95 against 5.87 (README "Training a GAN").
  // (Rounded to 10 significant digits: 2e-4, not 1.9999999999999998e-4.)
  auto two_thirds = [](double lr) { return std::stod(detail::str(std::setprecision(10), lr * 2.0 / 3.0)); };
  if (c.lr_d == 0)
    c.lr_d = c.unrolled > 0 && p.toy                ? c.lr / 10
             : p.dcgan() && !c.wgan_gp && !c.hinge ? two_thirds(c.lr)
                                                   : c.lr;
  // The unrolled GAN covers the ring's modes well only after about 6,500 iterations (the
  // reference code trains 25,000; README "Training a GAN").
  if (c.steps_per_epoch == 0) c.steps_per_epoch = c.unrolled > 0 ? 650 : 500;
  if (c.g_ema < 0) c.g_ema = p.toy ? 0.0 : 0.9999;
  // G 48 wide, D 32: with minibatch discrimination and smoothing in D, the 15-minute default
  // run reached MODE 5.87 after 28 epochs against 5.76 after 31 with both at 32 (README
  // "Training a GAN"); without them the wider G had been behind at equal time.
  if (c.width == 0) {
    c.width = 48;
    if (c.d_width == 0) c.d_width = 32;
  }
  if (c.d_width == 0) c.d_width = c.width;
  if (c.g_ema >= 1) throw CLI::ValidationError("--g-ema", "the decay must lie in [0, 1)");
  if (c.g_loss.empty()) c.g_loss = c.unrolled > 0 ? "minimax" : "non-saturating";
  if (c.wgan_gp && c.g_loss == "minimax")
    throw CLI::ValidationError("--g-loss", "minimax is a loss of D's logits; --wgan-gp has its own critic loss");
  if (c.lr_decay.empty()) c.lr_decay = p.toy ? "linear" : "none";
  if (c.beta1 < 0) c.beta1 = c.wgan_gp ? 0.0 : 0.5;
  if (c.beta2 < 0) c.beta2 = c.wgan_gp ? 0.9 : 0.999;
  if (c.beta1 >= 1 || c.beta2 >= 1) throw CLI::ValidationError("--beta1/--beta2", "must lie in [0, 1)");
  if (c.unrolled > 0 && c.optimizer != "adam")
    throw CLI::ValidationError("--unrolled", "unrolls D's Adam steps; it needs --optimizer adam");
  if (c.uses_sam() && c.sam_rho == 0) c.sam_rho = c.optimizer == "asam" ? 0.5 : 0.05;
  if (c.optimizer == "entropy-sgd" && c.grad_noise > 0)
    throw CLI::ValidationError("--grad-noise", "does not combine with --optimizer entropy-sgd (it has its own "
                                               "Langevin noise, --esgd-noise)");
  if (c.d_steps == 0) c.d_steps = c.wgan_gp ? 5 : 1;
  tools::check_dp_flags(c.par);
  if (c.par.dp == "neighbor" && (c.uses_sam() || c.optimizer == "entropy-sgd"))
    throw CLI::ValidationError("--dp neighbor", "does not combine with --optimizer " + c.optimizer +
                                                    (c.uses_sam() ? " (SAM's second pass at w + e(w) would run on "
                                                                    "weights mid-exchange)"
                                                                  : " (its inner loop needs the gradients of one "
                                                                    "shared model)"));
  if (c.latent_dim == 0) c.latent_dim = p.dcgan() ? 100 : 256;
  if (c.mbd_kernels == 0) c.mbd_kernels = 8;
  // Images: minibatch discrimination (8 kernels) and one-sided label smoothing (Salimans et
  // al. 2016 use both) by default: the 15-minute default run on 2 CPU threads reached MODE
  // 5.76 after 31 epochs with them (smoothing 0.9) against 5.51 after 36 without; smoothing
  // 0.7 with D at two thirds of G's rate 5.95, 0.8 5.93 (README "Training a GAN").
  if (p.dcgan() && !c.wgan_gp && !c.no_minibatch_discrimination) c.minibatch_discrimination = true;
  if (c.label_smoothing == 0) c.label_smoothing = p.dcgan() && !c.wgan_gp && !c.hinge ? 0.7 : 1.0;
  if (c.image_size == 0) c.image_size = p.folder.empty() ? 28 : 32;
  if (p.folder.empty() && !p.toy && c.image_size != 28)
    throw CLI::ValidationError("--image-size", "Fashion-MNIST images are 28 x 28");
  if (c.eval_samples == 0) c.eval_samples = p.toy ? 2500 : 10000;
  return p;
}

// The settings a resumed run must share with the run that wrote the checkpoint.
std::map<std::string, std::string> run_metadata(const Config& c) {
  auto num = [](double v) {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", v);
    return std::string(b);
  };
  return {{"format", "kiln_train_gan/1"},
          {"data", c.data},
          {"model", c.model},
          {"batch_size", std::to_string(c.batch_size)},
          {"steps_per_epoch", std::to_string(c.steps_per_epoch)},
          {"lr", num(c.lr)},
          {"lr_d", num(c.lr_d)},
          {"g_loss", c.g_loss},
          {"g_ema", num(c.g_ema)},
          {"lr_decay", c.lr_decay},
          {"beta1", num(c.beta1)},
          {"optimizer",  // (the spellings of runs from before SAM, so they stay resumable)
           c.uses_sam() ? detail::str(c.optimizer, " ", c.sam_base, " rho ", num(c.sam_rho), " eta ", num(c.asam_eta),
                                      c.sam_base == "proxadam"
                                          ? detail::str(" prox ", num(c.prox_lambda), " p ", num(c.prox_p))
                                          : "")
           : c.optimizer == "proxadam"    ? detail::str("proxadam ", num(c.prox_lambda), " p ", num(c.prox_p))
           : c.optimizer == "entropy-sgd" ? "entropy-sgd " + tools::entropy_sgd_description(c.esgd)
                                          : c.optimizer},
          {"grad_noise", c.grad_noise > 0 ? detail::str(num(c.grad_noise), " ", num(c.grad_noise_gamma)) : ""},
          {"beta2", num(c.beta2)},
          {"d_steps", std::to_string(c.d_steps)},
          {"latent_dim", std::to_string(c.latent_dim)},
          {"width", c.d_width == c.width ? std::to_string(c.width)  // (older runs' spelling)
                                         : detail::str(c.width, " d ", c.d_width)},
          {"hidden", std::to_string(c.hidden)},
          {"image_size", std::to_string(c.image_size)},
          {"label_smoothing", num(c.label_smoothing)},
          {"stabilisers", detail::str(c.feature_matching ? "fm " : "", c.minibatch_discrimination ? "mbd " : "",
                                      c.unrolled, c.unrolled_first_order ? "u1 " : "u ",
                                      c.mode_regularizer ? "mr " : "", c.wgan_gp ? "gp" : "",
                                      c.top_k ? detail::str(" topk ", num(c.top_k_gamma), " ", num(c.top_k_nu))
                                              : "",
                                      c.spectral_norm ? " sn" : "", c.hinge ? " hinge" : "",
                                      c.relativistic ? " ra" : "")},
          {"seed", std::to_string(c.seed)},
          {"limit_train", std::to_string(c.limit_train)}};
}

// Every random draw of iteration `it` and stream `stream` (0: latents, 1: 2-D data, 2: GP
// interpolation, 3: unrolled latents): a Philox stream at a fixed offset, so nothing but the
// iteration counter needs checkpointing.
void seek_draws(Generator& g, uint64_t seed, int64_t it, int stream) {
  g.set_state(seed ^ 0x9e3779b97f4a7c15ULL, (static_cast<uint64_t>(it) * 8 + stream) << 28);
}

// Rows [rank * n / world, (rank + 1) * n / world) of a global batch.
Tensor shard(const Tensor& t, int rank, int world) {
  const int64_t per = t.size(0) / world;
  return t.narrow(0, rank * per, per);
}

// ---- the run -----------------------------------------------------------------------------

struct Models {
  std::shared_ptr<nn::Module> G, E;
  std::shared_ptr<models::Discriminator> D;
};

Models build(const Config& c, const Plan& p, Generator& gen) {
  Models m;
  if (p.dcgan()) {
    models::DcganOptions o;
    o.image_size = c.image_size;
    o.channels = p.folder.empty() ? 1 : c.channels;
    o.latent_dim = c.latent_dim;
    o.width = c.width;
    o.d_width = c.d_width;
    o.batch_norm_in_d = !c.wgan_gp && !c.spectral_norm;
    o.spectral_norm = c.spectral_norm;
    o.minibatch_kernels = c.minibatch_discrimination ? c.mbd_kernels : 0;
    o.minibatch_kernel_dim = c.mbd_kernel_dim;
    m.G = models::dcgan_generator(o, gen);
    m.D = models::dcgan_discriminator(o, gen);
    if (c.mode_regularizer) m.E = models::dcgan_encoder(o, gen);
  } else {
    models::MlpGanOptions o;
    o.latent_dim = c.latent_dim;
    o.hidden = c.hidden;
    o.spectral_norm = c.spectral_norm;
    o.minibatch_kernels = c.minibatch_discrimination ? c.mbd_kernels : 0;
    o.minibatch_kernel_dim = c.mbd_kernel_dim;
    m.G = models::mlp_generator(o, gen);
    m.D = models::mlp_discriminator(o, gen);
    if (c.mode_regularizer) m.E = models::mlp_encoder(o, gen);
  }
  return m;
}

// --optimizer: Adam (the GAN papers'), LAMB or ProxAdam with the same lr and betas, no
// weight decay. LAMB adapts, and ProxAdam penalises, the conv/linear weights (>= 2 dims)
// only, as kiln_train_cnn does.
std::unique_ptr<Optimizer> make_optimizer(const std::vector<Tensor>& params, const Config& c, double lr) {
  const std::string& kind = c.uses_sam() ? c.sam_base : c.optimizer;
  // entropy-sgd: Adam outside (the Entropy-Adam of Chaudhari et al.)
  if (kind == "adam" || kind == "entropy-sgd") return std::make_unique<Adam>(params, AdamOptions{.lr = lr, .beta1 = c.beta1, .beta2 = c.beta2});
  ParamGroup weights, others;
  for (const Tensor& p : params) (p.dim() >= 2 ? weights : others).params.push_back(p);
  std::vector<ParamGroup> groups;
  if (kind == "lamb") {
    weights.options = {{"weight_decay", 0.0}};
    others.options = {{"weight_decay", 0.0}, {"adapt", 0.0}};
  } else {
    weights.options = {{"lambda", c.prox_lambda}};
    others.options = {{"lambda", 0.0}};
  }
  if (!weights.params.empty()) groups.push_back(weights);
  if (!others.params.empty()) groups.push_back(others);
  if (kind == "lamb") return std::make_unique<LAMB>(groups, LAMBOptions{.lr = lr, .beta1 = c.beta1, .beta2 = c.beta2});
  return std::make_unique<ProxAdam>(groups, ProxAdamOptions{.lr = lr, .beta1 = c.beta1, .beta2 = c.beta2, .p = c.prox_p});
}

// The image metrics' real-data side, computed once.
struct RealBaseline {
  Tensor prior;  // p*(y): the training labels' class frequencies
  double mode_score = NAN, inception = NAN, frechet = NAN;
  Tensor test_features;
};

// The classifier's prior (the training labels' frequencies) and its scores of the first
// `n` real test images (the Fréchet baseline: training against test images).
RealBaseline real_baseline(const eval::Classifier& classifier, const data::Dataset& train_images,
                           const std::string& data_dir, int64_t n) {
  RealBaseline real;
  std::vector<double> freq(classifier.num_classes, 0);
  for (int64_t y : train_images.labels.to_vector<int64_t>())
    if (y >= 0 && y < classifier.num_classes) freq[y] += 1.0 / static_cast<double>(train_images.size());
  real.prior = from_vector<double>(freq);
  data::Dataset test = data::load_fashion_mnist(data_dir, false);
  n = std::min(n, test.size());
  eval::Classified rt = eval::classify(classifier, test.images.narrow(0, 0, n), 0, 255);
  real.mode_score = eval::mode_score(rt.probs, real.prior);
  real.inception = eval::inception_score(rt.probs);
  real.test_features = rt.features;
  const int64_t nt = std::min(n, train_images.size());
  eval::Classified rtr = eval::classify(classifier, train_images.images.narrow(0, 0, nt), 0, 255);
  real.frechet = eval::frechet_distance(rtr.features, rt.features);
  std::fprintf(stderr, "%s: classifier %s; real test images: MODE %.3f, Inception %.3f, Frechet train-vs-test %.3f\n",
               kProg, classifier.checkpoint.c_str(), real.mode_score, real.inception, real.frechet);
  return real;
}

// The metrics of classified samples beside the real baseline's.
run::Record image_metrics(const eval::Classified& c, const RealBaseline& real, int64_t num_classes) {
  eval::ClassCoverage cc = eval::class_coverage(c.predicted, num_classes);
  return {{"mode_score", eval::mode_score(c.probs, real.prior)},
          {"mode_score_real", real.mode_score},
          {"inception_score", eval::inception_score(c.probs)},
          {"inception_score_real", real.inception},
          {"frechet", eval::frechet_distance(c.features, real.test_features)},
          {"frechet_real", real.frechet},
          {"classes_covered", cc.classes_covered},
          {"class_ratio", cc.max_min_ratio}};
}

// --eval-images folder:PATH: the metrics of a folder of images (another generator's
// samples), without a run.
int eval_images(const Config& cfg) {
  if (cfg.eval_images.rfind("folder:", 0) != 0 || cfg.eval_images.size() == 7)
    throw CLI::ValidationError("--eval-images", "takes folder:PATH (a folder of images)");
  if (cfg.classifier.empty()) throw CLI::ValidationError("--eval-images", "needs --classifier (the metrics' classifier)");
  if (cfg.data != "fashion-mnist")
    throw CLI::ValidationError("--eval-images", "compares against Fashion-MNIST's test images (--data fashion-mnist)");
  const Device device = tools::pick_device(kProg, cfg.device, dist::LaunchEnv{});
  eval::Classifier classifier = eval::load_classifier(cfg.classifier, device);
  data::Dataset train_images = data::load_fashion_mnist(cfg.data_dir, true);
  data::Dataset samples = data::load_image_folder(cfg.eval_images.substr(7), 28, 1);
  // (the first --eval-samples of the folder's images in path order, against as many test images)
  const int64_t n = std::min(cfg.eval_samples, samples.size());
  RealBaseline real = real_baseline(classifier, train_images, cfg.data_dir, cfg.eval_samples);
  eval::Classified c = eval::classify(classifier, samples.images.narrow(0, 0, n), 0, 255);
  run::Record rec = image_metrics(c, real, classifier.num_classes);
  rec.push_back({"images", n});
  rec.push_back({"eval_images", cfg.eval_images});
  rec.push_back({"classifier", classifier.checkpoint});
  run::print_summary(rec);
  return 0;
}

int train(Config cfg, const CLI::App& app) {
  const auto t_start = Clock::now();
  Plan plan = resolve(cfg);
  if (!cfg.eval_images.empty()) return eval_images(cfg);
  if (cfg.eval_only) {
    if (cfg.run.run_dir.empty() || cfg.run.overwrite)
      throw CLI::ValidationError("--eval-only", "needs --run-dir (a run with a checkpoint) and no --overwrite");
    cfg.run.resume = true;
  }
  tools::RunContext rc = tools::open_run(kProg, "train_gan", cfg.run, cfg.device, cfg.batch_size);
  const Device device = rc.device;
  const int world = rc.world, rank = rc.rank;
  const bool main_rank = rc.main_rank;
  run::Checkpointer ckpt(rc.dir->checkpoint_dir(), run::CheckpointOptions{cfg.run.keep_last});
  const int64_t local_batch = cfg.batch_size / world;

  // ---- data ----
  data::Dataset images;
  std::unique_ptr<data::DataLoader> loader;
  if (!plan.toy) {
    images = (plan.folder.empty() ? data::load_fashion_mnist(cfg.data_dir, true)
                                  : data::load_image_folder(plan.folder, cfg.image_size, cfg.channels))
                 .head(cfg.limit_train);
    data::LoaderOptions lo;
    lo.batch_size = local_batch;
    lo.rank = rank;
    lo.world_size = world;
    lo.seed = cfg.seed;
    lo.drop_last = true;  // every batch full: the D/G batch sizes stay equal
    lo.mean = 0.5f;       // pixels to [-1, 1], G's tanh range
    lo.std = 0.5f;
    lo.device = device;
    loader = std::make_unique<data::DataLoader>(images, lo);
    KILN_CHECK(loader->size() > 0, kProg, ": no full training batch (", images.size(), " images, batch ", local_batch,
               " per rank)");
  }
  const int64_t iters_per_epoch = plan.toy ? cfg.steps_per_epoch : loader->size();
  const int64_t total_iters = iters_per_epoch * cfg.epochs;

  // ---- models and optimizers ----
  Generator gen(cfg.seed);
  Models m = build(cfg, plan, gen);
  for (auto mod : {m.G, std::static_pointer_cast<nn::Module>(m.D), m.E})
    if (mod) mod->to(device), mod->train();
  std::vector<Tensor> ge_params = m.G->parameters();
  if (m.E)
    for (auto& t : m.E->parameters()) ge_params.push_back(t);
  auto opt_g = make_optimizer(ge_params, cfg, cfg.lr);
  auto opt_d = make_optimizer(m.D->parameters(), cfg, cfg.lr_d);
  // --optimizer sam|asam: each net's step is SAM's two passes around its base optimizer.
  std::unique_ptr<SAM> sam_g, sam_d;
  if (cfg.uses_sam()) {
    const SamOptions so{cfg.sam_rho, cfg.optimizer == "asam", cfg.asam_eta};
    sam_g = std::make_unique<SAM>(*opt_g, so);
    sam_d = std::make_unique<SAM>(*opt_d, so);
  }
  // --optimizer entropy-sgd: each net's step is Entropy-SGD's inner loop around its Adam; D's
  // and G's Langevin noise are drawn apart (and the same on every rank).
  std::unique_ptr<EntropySGD> esgd_g, esgd_d;
  if (cfg.optimizer == "entropy-sgd") {
    EntropySGDOptions o = cfg.esgd;
    o.seed = cfg.seed * 2;
    esgd_g = std::make_unique<EntropySGD>(*opt_g, o);
    o.seed = cfg.seed * 2 + 1;
    esgd_d = std::make_unique<EntropySGD>(*opt_d, o);
  }
  // --g-ema: a second G whose weights are the running average of G's; the grids and
  // metrics sample from it. G's buffers (BN running averages) are copied into it.
  std::shared_ptr<nn::Module> g_avg;
  std::unique_ptr<ExponentialAverage> ema;
  if (cfg.g_ema > 0) {
    Generator unused(cfg.seed);
    g_avg = build(cfg, plan, unused).G;
    g_avg->to(device), g_avg->train();
    g_avg->load_state_dict(m.G->state_dict());
    ema = std::make_unique<ExponentialAverage>(g_avg->parameters(), cfg.g_ema, /*warmup=*/true);
  }
  auto update_average = [&] {
    if (!ema) return;
    ema->update(m.G->parameters());
    NoGradGuard no_grad;
    std::vector<Tensor> from = m.G->buffers(), to = g_avg->buffers();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  };
  const int64_t n_params_g = m.G->num_parameters(), n_params_d = m.D->num_parameters();

  // ---- resume ----
  const auto meta = run_metadata(cfg);
  int64_t iter = 0;
  std::string last_ckpt;
  double seconds_before = 0;  // wall time of earlier invocations (--max-minutes counts them)
  if (cfg.run.resume) {
    run::ResumePoint ck = run::load_resume_point(kProg, ckpt, meta);
    last_ckpt = ck.path;
    m.G->load_state_dict(run::sub_state(ck.tensors, "G."));
    m.D->load_state_dict(run::sub_state(ck.tensors, "D."));
    if (m.E) m.E->load_state_dict(run::sub_state(ck.tensors, "E."));
    opt_g->load_state_dict(run::sub_state(ck.tensors, "optim_g."));
    opt_d->load_state_dict(run::sub_state(ck.tensors, "optim_d."));
    if (ema) {
      g_avg->load_state_dict(run::sub_state(ck.tensors, "G_ema."));
      ema->load_state_dict(run::sub_state(ck.tensors, "G_ema_state."));
    }
    iter = run::get_i64(ck.tensors, "train.iteration", last_ckpt);
    // (checkpoints from before --max-minutes have no clock: their time is not counted)
    if (ck.tensors.count("train.seconds")) seconds_before = run::get_f64(ck.tensors, "train.seconds", last_ckpt);
    if (esgd_d) {  // their scoping and noise continue: D stepped every iteration, G every d_steps-th
      auto with_steps = [&](const char* prefix, int64_t steps) {
        std::map<std::string, Tensor> s = run::sub_state(ck.tensors, prefix);
        s["entropy_sgd.step"] = run::f64_scalar(static_cast<double>(steps));
        return s;
      };
      esgd_d->load_state_dict(with_steps("optim_d.", iter));
      esgd_g->load_state_dict(with_steps("optim_g.", iter / cfg.d_steps));
    }
    if (main_rank)
      std::fprintf(stderr, "%s: resumed from %s at iteration %lld\n", kProg, last_ckpt.c_str(), (long long)iter);
  }
  if (loader) loader->seek(iter / iters_per_epoch, iter % iters_per_epoch);
  auto elapsed = [&] { return seconds_before + std::chrono::duration<double>(Clock::now() - t_start).count(); };

  run::MetricsWriter metrics;
  if (main_rank && !cfg.eval_only) {
    tools::write_config(app, rc.dir->config_path());
    if (cfg.run.resume) run::MetricsWriter::truncate_after(rc.dir->metrics_path(), iter);
    metrics = run::MetricsWriter(rc.dir->metrics_path());
  }

  // Data parallel: --dp ring|hierarchical replicate G and D (and E) and average their
  // gradients during backward (DDP); --dp neighbor keeps a G, D and E per rank, each averaged
  // with its neighbors after its own steps (D every iteration, G and E every --d-steps-th),
  // and exactly at every epoch end and checkpoint (reach_consensus below).
  std::shared_ptr<nn::Module> netG = m.G, netD = m.D, netE = m.E;
  std::shared_ptr<dist::DecentralizedDataParallel> dec_g, dec_d, dec_e;
  if (world > 1 && cfg.par.dp == "neighbor") {
    dist::DecentralizedOptions o;
    o.topology = dist::Topology::named(cfg.par.topology, world);
    o.mode = dist::parse_decentralized_mode(cfg.par.neighbor_mode);
    auto wrap = [&](const std::shared_ptr<nn::Module>& mod, int64_t steps_taken) {
      auto d = std::make_shared<dist::DecentralizedDataParallel>(mod, rc.pg, o);
      d->set_step(steps_taken);  // a resumed run continues the topology's cycle
      return d;
    };
    netD = dec_d = wrap(m.D, iter);
    netG = dec_g = wrap(m.G, iter / cfg.d_steps);
    if (m.E) netE = dec_e = wrap(m.E, iter / cfg.d_steps);
  } else if (world > 1) {
    dist::DDPOptions o;
    o.hierarchical = cfg.par.dp == "hierarchical";
    netG = std::make_shared<dist::DistributedDataParallel>(m.G, rc.pg, o);
    netD = std::make_shared<dist::DistributedDataParallel>(m.D, rc.pg, o);
    if (m.E) netE = std::make_shared<dist::DistributedDataParallel>(m.E, rc.pg, o);
  }
  // --dp neighbor, every rank at the same iterations: the consensus distance of G and D, then
  // the exact average of everything that differs by rank (the nets' weights and BatchNorm
  // statistics, their optimizers' moments, G's weight average), so that evaluation and
  // checkpoints see one model. Once per iteration however often it is asked.
  int64_t consensus_at = -1;
  auto reach_consensus = [&] {
    if (!dec_d || consensus_at == iter) return;
    consensus_at = iter;
    const double distance_g = dec_g->consensus_distance(), distance_d = dec_d->consensus_distance();
    for (auto& d : {dec_g, dec_d, dec_e})
      if (d) d->average_exactly();
    auto average = [&](auto& holder) {
      std::map<std::string, Tensor> sd = holder.state_dict();
      dist::average_state(*rc.pg, sd);
      holder.load_state_dict(sd);
    };
    average(*opt_g), average(*opt_d);
    if (g_avg) average(*g_avg);
    if (main_rank)
      metrics.write({{"type", "consensus"}, {"step", iter}, {"distance_g", distance_g}, {"distance_d", distance_d}});
  };

  // ---- evaluation set-up (rank 0) ----
  const std::string samples_dir = (std::filesystem::path(rc.dir->path()) / "samples").string();
  const std::string samples_png = (std::filesystem::path(rc.dir->path()) / "samples.png").string();
  Tensor fixed_z;
  {
    Generator fz(cfg.seed + 1);
    fixed_z = randn({plan.toy ? cfg.eval_samples : 64, cfg.latent_dim}, DType::F32, &fz).to(device);
  }
  std::optional<eval::Classifier> classifier;
  RealBaseline real;
  if (main_rank && !cfg.classifier.empty()) {
    classifier = eval::load_classifier(cfg.classifier, device);
    real = real_baseline(*classifier, images, cfg.data_dir, cfg.eval_samples);
  }

  if (main_rank)
    std::fprintf(stderr,
                 "%s: device %s, %s on %s, G %lld params, D %lld params%s, batch %lld%s, %s lr %g betas (%g, %g), "
                 "%lld iterations/epoch; run %s\n",
                 kProg, rc.device_name.c_str(), cfg.model.c_str(), cfg.data.c_str(), (long long)n_params_g,
                 (long long)n_params_d, m.E ? detail::str(", E ", m.E->num_parameters(), " params").c_str() : "",
                 (long long)cfg.batch_size,
                 world > 1 ? detail::str(" (", world, " ranks x ", local_batch, ", ", rc.pg->backend_name(), ")").c_str()
                           : "",
                 cfg.optimizer.c_str(), cfg.lr, cfg.beta1, cfg.beta2, (long long)iters_per_epoch,
                 rc.dir->path().c_str());

  // ---- one iteration ----
  const double real_target = cfg.label_smoothing;
  const auto g_objective = cfg.g_loss == "minimax" ? gan::minimax_generator_loss : gan::generator_loss;
  struct StepOut {
    Tensor d_loss, g_loss, d_real, d_fake;  // device scalars (g_loss undefined when G did not step)
    Tensor d_sharpness, g_sharpness;        // --optimizer sam|asam: L(w + e(w)) - L(w) of each step
  };
  auto real_batch = [&](int64_t it) -> Tensor {
    if (!plan.toy) return loader->next().x;
    Generator g;
    seek_draws(g, cfg.seed, it, 1);
    return shard(data::sample_mixture(*plan.mixture, cfg.batch_size, g), rank, world).to(device);
  };
  auto latents = [&](int64_t it, int stream) {
    Generator g;
    seek_draws(g, cfg.seed, it, stream);
    return shard(randn({cfg.batch_size, cfg.latent_dim}, DType::F32, &g), rank, world).to(device);
  };
  // One net's update once its loss has been taken (backward done): Entropy-SGD stepped inside
  // its inner loop already; SAM takes its second pass (`objective` at w + e(w): BatchNorm
  // sees both) and the base step at w, and returns the sharpness L(w + e(w)) - L(w);
  // otherwise the base optimizer steps. `noise` adds --grad-noise to the gradient the step
  // uses.
  auto update = [](EntropySGD* esgd, SAM* sam, Optimizer& opt, const Tensor& loss,
                   const std::function<Tensor()>& objective, const std::function<void()>& noise) -> Tensor {
    if (esgd) return Tensor();
    if (!sam) {
      noise();
      opt.step();
      return Tensor();
    }
    sam->first_step();
    Tensor perturbed = objective();
    perturbed.backward();
    noise();
    sam->second_step();
    return sub(perturbed.detach(), loss.detach());
  };
  auto iteration = [&](int64_t it) -> StepOut {
    StepOut out;
    if (cfg.lr_decay == "linear") {
      const double f = 1.0 - static_cast<double>(it) / static_cast<double>(total_iters);
      opt_g->set_lr(cfg.lr * f);
      opt_d->set_lr(cfg.lr_d * f);
    }
    Tensor x = real_batch(it);
    Tensor z = latents(it, 0);
    const bool g_steps = (it + 1) % cfg.d_steps == 0;
    // (--dp neighbor: G's wrapper sees only the forwards of the iterations G steps in, so
    // an overlapped exchange starts once per G step.)
    Tensor fake = dec_g && !g_steps ? m.G->forward(z) : (*netG)(z);
    // D step.
    opt_d->zero_grad();
    Tensor lr, lf;
    Tensor eps;  // WGAN-GP's interpolation weights, the same in SAM's second pass
    if (cfg.wgan_gp) {
      Generator ge;
      seek_draws(ge, cfg.seed, it, 2);
      eps = shard(rand({cfg.batch_size}, DType::F32, &ge), rank, world).to(device);
    }
    // D's loss at its current weights on real xr and G's samples xf (its logits in lr, lf;
    // e: WGAN-GP's interpolation weights).
    auto d_loss_at = [&](const Tensor& xr, const Tensor& xf, const Tensor& e) {
      lr = (*netD)(xr), lf = (*netD)(xf.detach());
      if (cfg.hinge) return gan::hinge_discriminator_loss(lr, lf);
      if (cfg.relativistic) return gan::relativistic_discriminator_loss(lr, lf, real_target);
      if (!cfg.wgan_gp) return gan::discriminator_loss(lr, lf, real_target);
      Tensor gp = gan::gradient_penalty([&](const Tensor& xh) { return (*netD)(xh); }, xr, xf, e);
      return add(gan::wgan_critic_loss(lr, lf), mul(gp, cfg.gp_lambda));
    };
    auto d_objective = [&] { return d_loss_at(x, fake, eps); };
    // Entropy-SGD: its L Langevin steps on the L slices of the batch (real images, G's
    // samples and, for WGAN-GP, the interpolation weights alike), then Adam's step; the
    // step's loss is the mean of the L losses.
    auto slice = [](const Tensor& t, int64_t k, int64_t parts) {
      const int64_t n = t.size(0);
      return t.narrow(0, k * n / parts, (k + 1) * n / parts - k * n / parts);
    };
    const int64_t parts = std::min<int64_t>(cfg.esgd.inner_steps, x.size(0));
    Tensor d_loss;
    if (esgd_d) {
      int64_t l = 0;
      const double mean_loss = esgd_d->step([&] {
        const int64_t k = l++ % parts;
        const Tensor xs = slice(x, k, parts), fs = slice(fake, k, parts);
        Tensor li = d_loss_at(xs, fs, cfg.wgan_gp ? slice(eps, k, parts) : Tensor());
        li.backward();
        return li;
      });
      d_loss = scalar_tensor(mean_loss, TensorOptions(DType::F32, device));
    } else {
      d_loss = d_objective();
      d_loss.backward();
    }
    Tensor d_out_real = lr.detach(), d_out_fake = lf.detach();
    if (cfg.relativistic)  // D's relativistic outputs: each side against the other's mean
      d_out_real = sub(lr.detach(), mean(lf.detach())), d_out_fake = sub(lf.detach(), mean(lr.detach()));
    // --grad-noise: seeded by (seed, iteration), the same on every rank; D and G draw apart
    // (on the gradient the step uses: SAM's, at w + e(w)).
    auto d_noise = [&] {
      if (cfg.grad_noise > 0) add_gradient_noise_(m.D->parameters(), it, cfg.grad_noise, cfg.grad_noise_gamma, cfg.seed * 2 + 1);
    };
    if (dec_d) dec_d->before_step();
    out.d_sharpness = update(esgd_d.get(), sam_d.get(), *opt_d, d_loss, d_objective, d_noise);
    if (dec_d) dec_d->after_step();
    out.d_loss = d_loss.detach();
    out.d_real = cfg.critic() ? mean(d_out_real) : mean(sigmoid(d_out_real));
    out.d_fake = cfg.critic() ? mean(d_out_fake) : mean(sigmoid(d_out_fake));
    if (!g_steps) return out;

    // G (and E) step. (--dp neighbor: G's loss runs D's module itself; a forward through D's
    // wrapper would start D's next overlapped exchange.)
    opt_g->zero_grad();
    // G's loss needs D's gradient with respect to D's input only: D's weights stop requiring
    // gradients for the G step, so its backward skips their gradients (and D's DDP does not
    // all-reduce them). Not with --unrolled, which differentiates D's steps by its weights.
    std::optional<nn::FrozenParameters> frozen_d;
    if (cfg.unrolled == 0) frozen_d.emplace(m.D->parameters());
    nn::Module& d_for_g = dec_d ? static_cast<nn::Module&>(*m.D) : *netD;
    // --top-k: G's loss on the samples D rates most real (k of this rank's share).
    auto chosen = [&](const Tensor& d_out) {
      return cfg.top_k ? gan::top_k(d_out, gan::top_k_count(d_out.size(0), it / iters_per_epoch,
                                                            cfg.top_k_gamma, cfg.top_k_nu))
                       : d_out;
    };
    auto g_objective_at = [&](const Tensor& samples) {  // G's (and E's) loss on G's `samples`
      Tensor g_loss;
      if (cfg.unrolled > 0) {
        gan::UnrollOptions uo;
        uo.steps = cfg.unrolled;
        uo.lr = opt_d->lr();
        uo.beta1 = cfg.beta1;
        uo.beta2 = cfg.beta2;
        uo.real_target = real_target;
        uo.second_order = !cfg.unrolled_first_order;
        std::vector<Tensor> theta = gan::unroll_discriminator(*m.D, *opt_d, x, samples, uo);
        g_loss = g_objective(chosen(m.D->run(samples, theta).logits));
      } else if (cfg.feature_matching) {
        g_loss = gan::feature_matching_loss(m.D->run(x).features, m.D->run(samples).features);
      } else if (cfg.critic()) {  // WGAN-GP's and the hinge loss's G loss alike
        g_loss = gan::wgan_generator_loss(chosen(d_for_g(samples)));
      } else if (cfg.relativistic) {  // D's logits on the real batch: constants for G
        Tensor real_now;
        {
          NoGradGuard no_grad;
          real_now = d_for_g(x);
        }
        g_loss = gan::relativistic_generator_loss(real_now, d_for_g(samples));
      } else {
        g_loss = g_objective(chosen(d_for_g(samples)));
      }
      if (m.E) {
        Tensor rec = (*netG)((*netE)(x));
        g_loss = add(g_loss, gan::mode_regularizer_loss(x, rec, d_for_g(rec), cfg.mr_lambda1, cfg.mr_lambda2));
      }
      return g_loss;
    };
    Tensor g_loss;
    if (esgd_g) {  // its L Langevin steps, each on G's samples of the next slice of the latents
      int64_t l = 0;
      const double mean_loss = esgd_g->step([&] {
        const int64_t k = l++ % parts;
        Tensor li = g_objective_at((*netG)(slice(z, k, parts)));
        li.backward();
        return li;
      });
      g_loss = scalar_tensor(mean_loss, TensorOptions(DType::F32, device));
    } else {
      g_loss = g_objective_at(fake);
      g_loss.backward();
    }
    auto g_noise = [&] {
      if (cfg.grad_noise > 0) add_gradient_noise_(ge_params, it, cfg.grad_noise, cfg.grad_noise_gamma, cfg.seed * 2);
    };
    // (SAM's second pass from G's perturbed weights: new samples of the same latents)
    for (auto& d : {dec_g, dec_e})
      if (d) d->before_step();
    out.g_sharpness = update(esgd_g.get(), sam_g.get(), *opt_g, g_loss, [&] { return g_objective_at((*netG)(z)); },
                             g_noise);
    for (auto& d : {dec_g, dec_e})
      if (d) d->after_step();
    frozen_d.reset();
    update_average();
    opt_d->zero_grad();  // what G's loss left in D's .grad (--unrolled) is not D's
    out.g_loss = g_loss.detach();
    return out;
  };

  // ---- evaluation ----
  run::Record last_eval;
  auto evaluate = [&](int64_t epoch) -> run::Record {
    NoGradGuard no_grad;
    nn::Module& sampler = g_avg ? *g_avg : *m.G;  // --g-ema: the averaged G
    run::Record r;
    // Sampling with batch statistics (G stays in train mode) must not move G's running
    // averages: they are saved and put back.
    const bool batch_stats = cfg.sample_bn == "batch";
    std::vector<Tensor> kept;
    if (batch_stats)
      for (const Tensor& b : sampler.buffers()) kept.push_back(b.clone());
    else
      sampler.eval();
    const std::string epoch_png =
        cfg.eval_only ? samples_dir + "/eval.png"
                      : detail::str(samples_dir, "/epoch-", epoch < 100 ? (epoch < 10 ? "00" : "0") : "", epoch, ".png");
    if (plan.toy) {
      Tensor s = sampler.forward(fixed_z).to(kCPU);
      eval::ModeCoverage mc = eval::mode_coverage(s, *plan.mixture);
      const double extent = plan.mixture->name == "ring8" ? 3.0 : 6.0;
      data::write_scatter_png(epoch_png, s, plan.mixture->centers, extent);
      if (!cfg.eval_only) data::write_scatter_png(samples_png, s, plan.mixture->centers, extent);
      r = {{"modes_covered", mc.modes_covered}, {"high_quality", mc.high_quality}};
    } else {
      Tensor grid = data::image_grid(sampler.forward(fixed_z), 8);
      data::write_png(epoch_png, grid);
      if (!cfg.eval_only) data::write_png(samples_png, grid);
      if (classifier) {
        std::vector<Tensor> probs, feats, preds;
        for (int64_t s = 0; s < cfg.eval_samples; s += 500) {
          const int64_t n = std::min<int64_t>(500, cfg.eval_samples - s);
          Generator ez(cfg.seed + 2);
          ez.set_state(cfg.seed + 2, static_cast<uint64_t>(s) * static_cast<uint64_t>(cfg.latent_dim));
          Tensor gz = randn({n, cfg.latent_dim}, DType::F32, &ez).to(device);
          eval::Classified c = eval::classify(*classifier, sampler.forward(gz), -1, 1);
          probs.push_back(c.probs), feats.push_back(c.features), preds.push_back(c.predicted);
        }
        r = image_metrics({cat(probs, 0), cat(feats, 0), cat(preds, 0)}, real, classifier->num_classes);
      }
    }
    if (batch_stats) {
      std::vector<Tensor> now = sampler.buffers();
      for (size_t i = 0; i < now.size(); ++i) now[i].copy_(kept[i]);
    } else {
      sampler.train();
    }
    if (cfg.eval_only) r.push_back({"samples_png", epoch_png});
    return r;
  };

  if (cfg.eval_only) {
    if (!main_rank) return 0;
    run::Record rec = evaluate(iter / iters_per_epoch);
    rec.push_back({"iterations", iter});
    rec.push_back({"checkpoint", last_ckpt});
    rec.push_back({"sample_bn", cfg.sample_bn});
    run::print_summary(rec);
    return 0;
  }

  // ---- training ----
  run::Progress progress(kProg, total_iters, iter, cfg.run.log_every);
  run::NonFiniteGuard guard(kProg, run::NonFinitePolicy::Stop);
  // Per-step losses stay on the device until a progress line or checkpoint reads them back
  // in one go (run::StepLog); the guard checks D's and G's losses in step order.
  run::StepLog steps(&guard, &metrics, {"d_loss", "g_loss"});
  double last_d = NAN, last_g = NAN, last_dx = NAN, last_dgz = NAN;
  auto flush = [&] {
    const run::StepLog::Summary s = steps.flush(last_ckpt);
    if (s.steps == 0) return;
    last_d = s.latest("d_loss"), last_dx = s.latest("d_real"), last_dgz = s.latest("d_fake");
    if (!std::isnan(s.latest("g_loss"))) last_g = s.latest("g_loss");  // steps that trained G
  };
  auto save = [&] {
    reach_consensus();
    if (!main_rank) return;
    metrics.sync();
    std::map<std::string, Tensor> st;
    run::put_state(st, "G.", m.G->state_dict());
    run::put_state(st, "D.", m.D->state_dict());
    if (m.E) run::put_state(st, "E.", m.E->state_dict());
    run::put_state(st, "optim_g.", opt_g->state_dict());
    run::put_state(st, "optim_d.", opt_d->state_dict());
    if (ema) {
      run::put_state(st, "G_ema.", g_avg->state_dict());
      run::put_state(st, "G_ema_state.", ema->state_dict());
    }
    st["train.iteration"] = run::i64_scalar(iter);
    st["train.seconds"] = run::f64_scalar(elapsed());
    run::check_finite_state(kProg, st, iter, last_ckpt);
    auto md = meta;
    md["epochs"] = std::to_string(cfg.epochs);
    md["world_size"] = std::to_string(world);
    last_ckpt = ckpt.save(iter, st, md);
  };

  double train_seconds = 0;
  int64_t train_images = 0, images_since_log = 0, epochs_this_run = 0, iters_this_run = 0;
  bool interrupted = false, out_of_time = false;
  const double budget_s = cfg.max_minutes * 60.0, loop_start = elapsed();
  while (iter < total_iters && !interrupted) {
    if (cfg.stop_after > 0 && epochs_this_run >= cfg.stop_after) break;
    if (budget_s > 0) {
      // No epoch starts that would end after the budget at the pace of this invocation's
      // epochs (training, evaluation and checkpoint); rank 0's clock decides for all ranks.
      const double pace = epochs_this_run > 0 ? (elapsed() - loop_start) / static_cast<double>(epochs_this_run) : 0.0;
      double over = elapsed() + pace > budget_s ? 1.0 : 0.0;
      if (world > 1) {
        Tensor t = from_vector(std::vector<double>{main_rank ? over : 0.0}).to(device);  // NCCL: device tensors
        rc.pg->all_reduce(t)->wait();
        over = t.to_vector<double>()[0];
      }
      if (over > 0) {
        out_of_time = true;
        if (main_rank)
          std::fprintf(stderr,
                       "%s: stopping after epoch %lld of %lld: another epoch (%.0f s at this pace) would end after the "
                       "--max-minutes %g budget (%.0f s spent; --max-minutes 0 for none)\n",
                       kProg, (long long)(iter / iters_per_epoch), (long long)cfg.epochs, pace, cfg.max_minutes,
                       elapsed());
        break;
      }
    }
    const int64_t epoch = iter / iters_per_epoch;
    const auto t_epoch = Clock::now();
    int64_t epoch_images = 0;
    while (iter < (epoch + 1) * iters_per_epoch) {
      StepOut s = iteration(iter);
      ++iter;
      epoch_images += cfg.batch_size;
      images_since_log += cfg.batch_size;
      std::vector<std::pair<std::string, Tensor>> values{
          {"d_loss", s.d_loss}, {"g_loss", s.g_loss}, {"d_real", s.d_real}, {"d_fake", s.d_fake}};
      if (cfg.uses_sam()) {  // SAM's sharpness of each net's step on this batch
        values.emplace_back("d_sharpness", s.d_sharpness);
        values.emplace_back("g_sharpness", s.g_sharpness);
      }
      steps.push(iter, (iter - 1) / iters_per_epoch + 1, std::move(values));
      const bool last = iter % iters_per_epoch == 0;
      if (main_rank && progress.due(iter, last)) {
        flush();
        progress.log(iter, epoch + 1, cfg.epochs,
                     {{"d_loss", last_d}, {"g_loss", last_g}, {"D(x)", last_dx},
                      {"D(G(z))", last_dgz}},
                     images_since_log);
        images_since_log = 0;
      }
      if (!main_rank && (last || steps.size() >= static_cast<size_t>(cfg.run.log_every))) flush();
      if (cfg.run.save_every > 0 && iter % cfg.run.save_every == 0 && !last) flush(), save();
      if (cfg.run.stop_after_steps > 0 && ++iters_this_run >= cfg.run.stop_after_steps) {
        flush();
        interrupted = true;
        break;
      }
    }
    if (interrupted) break;
    flush();
    if (main_rank) progress.end_epoch_line();
    const double es = std::chrono::duration<double>(Clock::now() - t_epoch).count();
    train_seconds += es;
    train_images += epoch_images;
    ++epochs_this_run;
    reach_consensus();  // --dp neighbor: the epoch's metrics and checkpoint see the exact average
    if (!main_rank) {
      rc.pg->barrier()->wait();
      continue;
    }
    const auto t_eval = Clock::now();
    last_eval = evaluate(iter / iters_per_epoch);
    const double eval_s = std::chrono::duration<double>(Clock::now() - t_eval).count();
    const double ips = static_cast<double>(epoch_images) / std::max(es, 1e-9);
    run::Record rec{{"type", "epoch"},         {"epoch", iter / iters_per_epoch}, {"step", iter},
                    {"d_loss", last_d},        {"g_loss", last_g},               {"images_per_second", ips},
                    {"train_seconds", es},     {"eval_seconds", eval_s}};
    std::string line;
    for (auto& kv : last_eval) {
      rec.push_back(kv);
      if (const double* d = std::get_if<double>(&kv.second)) line += detail::str("  ", kv.first, " ", *d);
      if (const int64_t* n = std::get_if<int64_t>(&kv.second)) line += detail::str("  ", kv.first, " ", *n);
    }
    std::fprintf(stderr, "epoch %lld/%lld: d_loss %.4f  g_loss %.4f%s  (train %.1f s, %.0f img/s; eval %.1f s)\n",
                 (long long)(iter / iters_per_epoch), (long long)cfg.epochs, last_d, last_g, line.c_str(), es, ips,
                 eval_s);
    metrics.write(rec);
    save();
    rc.pg->barrier()->wait();
  }

  if (!main_rank) return 0;
  if (interrupted)
    std::fprintf(stderr, "%s: stopped after --stop-after-steps; resume with --resume --run-dir %s\n", kProg,
                 rc.dir->path().c_str());
  if (cfg.run.plot && !interrupted) tools::plot_run(kProg, rc.dir->path());
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  run::Record summary;
  for (auto& kv : last_eval) summary.push_back(kv);
  for (auto& kv : run::Record{{"images_per_second", static_cast<double>(train_images) / std::max(train_seconds, 1e-9)},
                              {"seconds", total_s},
                              {"train_seconds", train_seconds},
                              {"d_loss", last_d},
                              {"g_loss", last_g},
                              {"iterations", iter},
                              {"epochs", iter / iters_per_epoch},
                              {"batch_size", cfg.batch_size},
                              {"lr", cfg.lr},
                              {"lr_d", cfg.lr_d},
                              {"beta1", cfg.beta1},
                              {"beta2", cfg.beta2},
                              {"g_ema", cfg.g_ema},
                              {"width", cfg.width},
                              {"d_width", cfg.d_width},
                              {"mbd_kernels", cfg.minibatch_discrimination ? cfg.mbd_kernels : 0},
                              {"mbd_kernel_dim", cfg.mbd_kernel_dim},
                              {"label_smoothing", cfg.label_smoothing},
                              {"relativistic", cfg.relativistic},
                              {"data", cfg.data},
                              {"model", cfg.model},
                              {"device", rc.device_name},
                              {"world_size", int64_t{world}},
                              {"samples_png", samples_png},
                              {"metrics", rc.dir->metrics_path()},
                              {"run_dir", rc.dir->path()},
                              {"interrupted", interrupted},
                              {"out_of_time", out_of_time}})
    summary.push_back(kv);
  run::print_summary(summary);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a GAN (DCGAN on images, an MLP GAN on 2-D mixtures) with the stabilisers of GAN research.",
               kProg};
  Config cfg;
  add_flags(app, cfg);
  // Exit status: 0 done (or --help), 1 an error, 2 a bad command line, 3 a non-finite loss.
  return tools::kiln_main(app, argc, argv, [&] {
    try {
      return train(cfg, app);
    } catch (const run::NonFiniteLoss& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "\n%s: %s\n", kProg, e.what());
      return 3;
    }
  });
}
