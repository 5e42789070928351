// DecentralizedDataParallel (see decentralized.h): the parameters, packed per dtype and
// device into flat buffers, are averaged with the neighbors by neighbor_allreduce (or
// all-reduced exactly every k steps); the optimizer in between is the trainer's own.
#include <kiln/distributed/decentralized.h>
#include <kiln/distributed/ddp.h>

#include <chrono>

#include <kiln/core/autograd.h>
#include <kiln/core/log.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>

namespace kiln::dist {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

const char* decentralized_mode_name(DecentralizedMode m) {
  switch (m) {
    case DecentralizedMode::AdaptThenCombine: return "atc";
    case DecentralizedMode::Overlap: return "overlap";
    case DecentralizedMode::GradientTracking: return "gradient-tracking";
  }
  return "?";
}

DecentralizedMode parse_decentralized_mode(const std::string& s) {
  for (auto m : {DecentralizedMode::AdaptThenCombine, DecentralizedMode::Overlap, DecentralizedMode::GradientTracking})
    if (s == decentralized_mode_name(m)) return m;
  throw Error("unknown decentralized mode '" + s + "' (known: atc, overlap, gradient-tracking)");
}

DecentralizedDataParallel::DecentralizedDataParallel(std::shared_ptr<nn::Module> module,
                                                     std::shared_ptr<ProcessGroup> pg, DecentralizedOptions options)
    : nn::Module("DecentralizedDataParallel"), module_(std::move(module)), pg_(std::move(pg)),
      options_(std::move(options)) {
  KILN_CHECK(module_, "DecentralizedDataParallel: null module");
  KILN_CHECK(pg_, "DecentralizedDataParallel: null process group");
  register_module("module", module_);
  KILN_CHECK(options_.topology.size() == pg_->size(), "DecentralizedDataParallel: the topology '",
             options_.topology.name(), "' has ", options_.topology.size(), " ranks but the process group has ",
             pg_->size());
  KILN_CHECK(options_.exact_average_every >= 0, "DecentralizedDataParallel: exact_average_every must not be negative");

  broadcast_module(*pg_, *module_);

  for (auto& [name, p] : module_->named_parameters()) {
    if (!p.requires_grad()) continue;
    KILN_CHECK(is_floating(p.dtype()), "DecentralizedDataParallel: parameter '", name, "' is ", dtype_name(p.dtype()),
               "; averaging needs floating parameters");
    params_.push_back(p);
  }
  KILN_CHECK(!params_.empty(), "DecentralizedDataParallel: the module has no parameters that require grad");
  for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
    const Tensor& p = params_[i];
    Group* g = nullptr;
    for (Group& h : groups_)
      if (params_[h.params.front()].dtype() == p.dtype() && params_[h.params.front()].device() == p.device()) g = &h;
    if (!g) g = &groups_.emplace_back();
    g->offsets.push_back(g->params.empty() ? 0 : g->offsets.back() + params_[g->params.back()].numel());
    g->params.push_back(i);
  }
  for (Group& g : groups_) {
    const Tensor& first = params_[g.params.front()];
    g.flat = empty({g.offsets.back() + params_[g.params.back()].numel()}, TensorOptions(first.dtype(), first.device()));
  }
  log_debug("DecentralizedDataParallel: ", params_.size(), " parameters, topology ", options_.topology.name(),
            ", mode ", decentralized_mode_name(options_.mode), ", rank ", pg_->rank(), " of ", pg_->size());
}

DecentralizedDataParallel::~DecentralizedDataParallel() {
  // An exchange still in flight writes into our buffers: finish it first.
  for (auto& w : pending_) {
    try {
      w->wait();
    } catch (const std::exception& e) {
      log_warn("DecentralizedDataParallel: an unfinished exchange failed at destruction: ", e.what());
    }
  }
}

void DecentralizedDataParallel::set_step(int64_t step) {
  KILN_CHECK(step >= 0, "DecentralizedDataParallel: step ", step, " is negative");
  KILN_CHECK(pending_.empty(), "DecentralizedDataParallel: set_step while an exchange is in flight");
  step_ = step;
}

bool DecentralizedDataParallel::exact_at(int64_t step) const {
  return options_.exact_average_every > 0 && (step + 1) % options_.exact_average_every == 0;
}

std::shared_ptr<Work> DecentralizedDataParallel::average(const Tensor& flat, int64_t step) {
  ++stats_.exchanges;
  if (exact_at(step)) return pg_->all_reduce(flat, ReduceOp::Avg);
  return pg_->neighbor_allreduce(flat, options_.topology, step);
}

void DecentralizedDataParallel::pack_params() {
  NoGradGuard no_grad;
  for (Group& g : groups_)
    for (size_t s = 0; s < g.params.size(); ++s) {
      const Tensor& p = params_[g.params[s]];
      g.flat.narrow(0, g.offsets[s], p.numel()).copy_(p.reshape({p.numel()}));
    }
}

void DecentralizedDataParallel::unpack_params() {
  NoGradGuard no_grad;
  for (Group& g : groups_)
    for (size_t s = 0; s < g.params.size(); ++s) {
      Tensor p = params_[g.params[s]];
      p.copy_(g.flat.narrow(0, g.offsets[s], p.numel()).view(p.sizes()));
    }
}

Tensor DecentralizedDataParallel::forward(const Tensor& input) {
  if (options_.mode == DecentralizedMode::Overlap && module_->is_training() && pending_.empty() && pg_->size() > 1) {
    stats_ = Stats{};
    pack_params();
    for (Group& g : groups_) pending_.push_back(average(g.flat, step_));
  }
  return module_->forward(input);
}

void DecentralizedDataParallel::before_step() {
  if (pg_->size() == 1) return;
  if (options_.mode == DecentralizedMode::Overlap) {
    KILN_CHECK(!pending_.empty(), "DecentralizedDataParallel (overlap): before_step() without a forward() in training "
               "mode this step");
    const auto t0 = Clock::now();
    for (auto& w : pending_) w->wait();
    pending_.clear();
    stats_.wait_seconds += seconds_since(t0);
    unpack_params();
    return;
  }
  stats_ = Stats{};
  if (options_.mode != DecentralizedMode::GradientTracking) return;
  // y <- W (y + g - g_prev); y = g at the start (and after an exact average).
  NoGradGuard no_grad;
  const bool start = tracker_.empty();
  if (start) tracker_.resize(groups_.size()), prev_grad_.resize(groups_.size());
  std::vector<std::shared_ptr<Work>> works;
  for (size_t k = 0; k < groups_.size(); ++k) {
    Group& g = groups_[k];
    Tensor grad = zeros({g.flat.numel()}, TensorOptions(g.flat.dtype(), g.flat.device()));
    for (size_t s = 0; s < g.params.size(); ++s) {
      const Tensor& pg = params_[g.params[s]].grad();
      if (pg.defined()) grad.narrow(0, g.offsets[s], pg.numel()).copy_(pg.reshape({pg.numel()}));
    }
    if (start) {
      tracker_[k] = grad.clone();
    } else {
      tracker_[k].add_(grad).sub_(prev_grad_[k]);
      works.push_back(average(tracker_[k], step_));
    }
    prev_grad_[k] = grad;
  }
  const auto t0 = Clock::now();
  for (auto& w : works) w->wait();
  stats_.wait_seconds += seconds_since(t0);
  for (size_t k = 0; k < groups_.size(); ++k) {
    Group& g = groups_[k];
    for (size_t s = 0; s < g.params.size(); ++s) {
      Tensor p = params_[g.params[s]];
      Tensor y = tracker_[k].narrow(0, g.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.grad().copy_(y);
      else p.set_grad(y.clone());
    }
  }
}

void DecentralizedDataParallel::after_step() {
  if (pg_->size() > 1 && options_.mode != DecentralizedMode::Overlap) {
    pack_params();
    std::vector<std::shared_ptr<Work>> works;
    for (Group& g : groups_) works.push_back(average(g.flat, step_));
    const auto t0 = Clock::now();
    for (auto& w : works) w->wait();
    stats_.wait_seconds += seconds_since(t0);
    unpack_params();
  }
  ++step_;
}

void DecentralizedDataParallel::average_exactly() {
  KILN_CHECK(pending_.empty(), "DecentralizedDataParallel: average_exactly() while this step's exchange is in flight "
             "(call it after after_step())");
  std::vector<Tensor> state = params_;
  for (const Tensor& b : module_->buffers())
    if (is_floating(b.dtype())) state.push_back(b);
  all_reduce_coalesced(*pg_, state, ReduceOp::Avg);
  tracker_.clear();
  prev_grad_.clear();
}

double DecentralizedDataParallel::consensus_distance() {
  KILN_CHECK(pending_.empty(), "DecentralizedDataParallel: consensus_distance() while this step's exchange is in "
             "flight (call it after after_step())");
  pack_params();
  NoGradGuard no_grad;
  Tensor total = zeros({1}, TensorOptions(DType::F64, groups_.front().flat.device()));
  for (Group& g : groups_) {
    Tensor x = g.flat.to(DType::F64);
    Tensor mean = x.clone();
    pg_->all_reduce(mean, ReduceOp::Avg)->wait();
    Tensor d = sub(x, mean);
    total.add_(sum(mul(d, d)).reshape({1}));
  }
  pg_->all_reduce(total, ReduceOp::Avg)->wait();
  return total.item<double>();
}

void average_state(ProcessGroup& pg, std::map<std::string, Tensor>& state) {
  std::vector<Tensor> floating;
  for (auto& [name, t] : state)
    if (t.defined() && is_floating(t.dtype())) {
      if (!t.is_contiguous()) t = t.contiguous();
      floating.push_back(t);
    }
  all_reduce_coalesced(pg, floating, ReduceOp::Avg);
}

}  // namespace kiln::dist
