// DistributedDataParallel (see ddp.h). Each parameter's gradient lands in its slice of a
// bucket's flat buffer: written there directly by autograd while .grad is unset (its grad
// destination is the slice), or accumulated there in place when .grad is already the
// slice (zero_grad without set_to_none, gradient accumulation), or copied there by the
// hook otherwise. A bucket is launched when its last gradient arrives, but only after
// every bucket before it, so all ranks issue the same all-reduces in the same order
// whatever order their hooks fire in. The end-of-backward callback launches the rest and
// waits; .grad is then the slice holding the average (nothing is copied back).
#include <kiln/distributed/ddp.h>

#include <chrono>

#include <kiln/core/autograd.h>
#include <kiln/core/log.h>
#include <kiln/ops/binary.h>

namespace kiln::dist {

void broadcast_module(ProcessGroup& pg, nn::Module& module) {
  std::vector<Tensor> state;
  for (auto& [name, p] : module.named_parameters()) state.push_back(p);
  for (auto& [name, b] : module.named_buffers()) state.push_back(b);
  broadcast_coalesced(pg, state);
}

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ProcessGroup> pg,
                                                 DDPOptions options)
    : nn::Module("DistributedDataParallel"), module_(std::move(module)), pg_(std::move(pg)), options_(options) {
  KILN_CHECK(module_, "DistributedDataParallel: null module");
  register_module("module", module_);
  KILN_CHECK(pg_, "DistributedDataParallel: null process group");
  KILN_CHECK(options_.bucket_cap_mb > 0 && options_.first_bucket_cap_mb > 0,
             "DistributedDataParallel: bucket caps must be positive (got ", options_.first_bucket_cap_mb, " and ",
             options_.bucket_cap_mb, " MiB)");

  broadcast_module(*pg_, *module_);  // every replica starts from rank 0's state

  for (auto& [name, p] : module_->named_parameters()) {
    if (!p.requires_grad()) continue;
    KILN_CHECK(p.is_contiguous(), "DistributedDataParallel: parameter '", name, "' is not contiguous");
    names_.push_back(name);
    params_.push_back(p);
  }
  KILN_CHECK(!params_.empty(), "DistributedDataParallel: the module has no parameters that require grad");

  // Buckets in reverse registration order, split by dtype/device and by size.
  bucket_of_.assign(params_.size(), -1);
  slot_of_.assign(params_.size(), -1);
  size_t bucket_bytes = 0;
  for (int i = static_cast<int>(params_.size()) - 1; i >= 0; --i) {
    const Tensor& p = params_[i];
    const double cap_mb = buckets_.size() <= 1 ? options_.first_bucket_cap_mb : options_.bucket_cap_mb;
    bool fresh = buckets_.empty();
    if (!fresh) {
      const Tensor& first = params_[buckets_.back().params.front()];
      fresh = first.dtype() != p.dtype() || first.device() != p.device() ||
              static_cast<double>(bucket_bytes) >= cap_mb * 1024.0 * 1024.0;
    }
    if (fresh) {
      buckets_.emplace_back();
      bucket_bytes = 0;
    }
    Bucket& b = buckets_.back();
    slot_of_[i] = static_cast<int>(b.params.size());
    bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(i);
    bucket_bytes += static_cast<size_t>(p.numel()) * p.element_size();
  }
  for (Bucket& b : buckets_) {
    const Tensor& first = params_[b.params.front()];
    int64_t n = b.offsets.back() + params_[b.params.back()].numel();
    b.flat = empty({n}, TensorOptions(first.dtype(), first.device()));
  }
  ready_.assign(params_.size(), 0);

  for (size_t i = 0; i < params_.size(); ++i) {
    int index = static_cast<int>(i);
    hook_ids_.push_back(params_[i].register_hook([this, index](const Tensor& g) { on_grad(index, g); }));
    set_grad_destination(params_[i], [this, index]() -> Tensor {
      if (!sync_) return Tensor();  // accumulation steps (no_sync) keep .grad out of the bucket
      const Bucket& b = buckets_[bucket_of_[index]];
      const Tensor& p = params_[index];
      KILN_CHECK(p.device() == b.flat.device() && p.dtype() == b.flat.dtype(), "DistributedDataParallel: ",
                 names_[index], " is ", dtype_name(p.dtype()), " on ", p.device().str(), " but its bucket is ",
                 dtype_name(b.flat.dtype()), " on ", b.flat.device().str(),
                 " (convert the module before wrapping it)");
      return b.flat.narrow(0, b.offsets[slot_of_[index]], p.numel()).view(p.sizes());
    });
  }
  log_debug("DistributedDataParallel: ", params_.size(), " parameters in ", buckets_.size(), " buckets, rank ",
            pg_->rank(), " of ", pg_->size());
}

DistributedDataParallel::~DistributedDataParallel() {
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].remove_hook(hook_ids_[i]);
    set_grad_destination(params_[i], nullptr);
  }
}

std::vector<std::vector<std::string>> DistributedDataParallel::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const Bucket& b : buckets_) {
    out.emplace_back();
    for (int i : b.params) out.back().push_back(names_[i]);
  }
  return out;
}

Tensor DistributedDataParallel::forward(const Tensor& input) {
  if (options_.broadcast_buffers && pg_->size() > 1 && module_->is_training()) {
    std::vector<Tensor> bufs = module_->buffers();
    if (!bufs.empty()) broadcast_coalesced(*pg_, bufs);
  }
  return module_->forward(input);
}

void DistributedDataParallel::on_grad(int index, const Tensor& grad) {
  if (!sync_) return;  // accumulation step: .grad keeps summing locally
  if (!in_backward_ || pass_ != backward_pass_id()) {
    if (in_backward_)
      log_warn("DistributedDataParallel: the previous backward pass did not finish (it threw); its buckets are "
               "dropped, and the ranks may now disagree on the collectives");
    in_backward_ = true;
    pass_ = backward_pass_id();
    for (Bucket& b : buckets_) {
      b.pending = static_cast<int>(b.params.size());
      b.launched = false;
      b.work.reset();
    }
    std::fill(ready_.begin(), ready_.end(), 0);
    next_bucket_ = 0;
    stats_ = Stats{};
    stats_.buckets = static_cast<int>(buckets_.size());
    queue_callback([this] { finalize(); });
  }
  if (ready_[index]) return;  // (one hook call per backward; be safe anyway)
  ready_[index] = 1;
  Bucket& b = buckets_[bucket_of_[index]];
  KILN_CHECK(grad.device() == b.flat.device() && grad.dtype() == b.flat.dtype(), "DistributedDataParallel: ",
             names_[index], "'s gradient is ", dtype_name(grad.dtype()), " on ", grad.device().str(),
             " but its bucket is ", dtype_name(b.flat.dtype()), " on ", b.flat.device().str(),
             " (move or convert the module before wrapping it)");
  int64_t n = params_[index].numel();
  Tensor slot = b.flat.narrow(0, b.offsets[slot_of_[index]], n);
  // After the first step .grad is a view of the bucket (see finalize()), and backward
  // accumulated into it in place: nothing to copy then.
  if (grad.data_ptr() != slot.data_ptr()) slot.copy_(grad.reshape({n}));
  --b.pending;
  launch_ready();
  stats_.launched_during_backward = static_cast<int>(next_bucket_);
}

void DistributedDataParallel::launch_ready() {
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) launch(buckets_[next_bucket_++]);
}

void DistributedDataParallel::launch(Bucket& b) {
  b.work = options_.hierarchical ? pg_->hierarchical_allreduce(b.flat, ReduceOp::Avg, options_.hierarchical_algorithm)
                                 : pg_->all_reduce(b.flat, ReduceOp::Avg);
  b.launched = true;
}

void DistributedDataParallel::finalize() {
  in_backward_ = false;
  // Parameters that got no gradient on this rank contribute zeros.
  std::vector<char> used(ready_.begin(), ready_.end());
  for (; next_bucket_ < buckets_.size(); ++next_bucket_) {
    Bucket& b = buckets_[next_bucket_];
    for (size_t s = 0; s < b.params.size(); ++s) {
      int i = b.params[s];
      if (ready_[i]) continue;
      ++stats_.unused_parameters;
      b.flat.narrow(0, b.offsets[s], params_[i].numel()).zero_();
      ready_[i] = 1;
    }
    launch(b);
  }
  // Which parameters did some rank use? (max over ranks of a 0/1 mask)
  Tensor used_any;
  if (options_.find_unused_parameters) {
    std::vector<int32_t> mask(used.begin(), used.end());
    used_any = from_vector(mask).to(params_[0].device());
    pg_->all_reduce(used_any, ReduceOp::Max)->wait();
    used_any = used_any.cpu();
  }
  auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) b.work->wait();
  stats_.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<int32_t> used_v = used_any.defined() ? used_any.to_vector<int32_t>() : std::vector<int32_t>();
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!used_v.empty() && used_v[i] == 0) continue;  // no rank used it: leave .grad as it is
    const Bucket& b = buckets_[bucket_of_[i]];
    Tensor& p = params_[i];
    // .grad becomes a view of the bucket: no copy back, and a later backward that
    // accumulates (zero_grad without set_to_none) writes straight into the bucket.
    Tensor avg = b.flat.narrow(0, b.offsets[slot_of_[i]], p.numel()).view(p.sizes());
    Tensor g = p.grad();
    if (!g.defined() || g.data_ptr() != avg.data_ptr()) p.set_grad(avg);
  }
  for (Bucket& b : buckets_) b.work.reset();
}

}  // namespace kiln::dist
