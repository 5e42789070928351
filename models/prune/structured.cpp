// Channel importance, the slimming penalty and the MACs-targeted channel plan
// (models/prune/structured.h).
#include <kiln/models/prune/structured.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/models/nn/norm.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::prune {
namespace {

Tensor named(nn::Module& m, const std::string& name) {
  try {
    return m.get_parameter(name);
  } catch (const Error&) {
    return Tensor();  // a buffer: no gradient, not a filter
  }
}

// x summed over every dim but `dim`, on the host.
std::vector<double> per_index(const Tensor& x, int64_t dim) {
  Dims others;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != dim) others.push_back(d);
  Tensor s = others.empty() ? x : sum(x, others);
  return s.to_vector<double>();
}

void normalise(Importance& imp) {
  for (auto& g : imp) {
    double sum = 0;
    int64_t n = 0;
    for (double v : g)
      if (std::isfinite(v)) sum += v, ++n;
    const double mean = n > 0 ? sum / static_cast<double>(n) : 0.0;
    if (mean > 0)
      for (double& v : g)
        if (std::isfinite(v)) v /= mean;
  }
}

}  // namespace

Criterion parse_criterion(const std::string& name) {
  if (name == "l1") return Criterion::L1;
  if (name == "taylor") return Criterion::Taylor;
  if (name == "slimming") return Criterion::Slimming;
  throw Error(kiln::detail::str("prune: unknown structured criterion '", name, "' (l1, taylor or slimming)"));
}

Importance l1_importance(const DependencyGraph& graph, nn::Module& model) {
  NoGradGuard no_grad;
  std::map<std::string, std::vector<double>> rows;  // a filter weight's per-row L1 norms
  Importance imp;
  for (const Group& g : graph.groups()) {
    std::vector<double> v;
    for (const Channel& c : g.channels) {
      double s = 0;
      for (const Slice& sl : c.slices) {
        if (!sl.producer || sl.dim != 0) continue;
        auto it = rows.find(sl.name);
        if (it == rows.end()) {
          Tensor w = named(model, sl.name);
          if (!w.defined() || w.dim() < 2) {
            rows[sl.name] = {};
            continue;
          }
          it = rows.emplace(sl.name, per_index(abs(w.detach()), 0)).first;
        }
        if (!it->second.empty()) s += it->second[sl.index];
      }
      v.push_back(s);
    }
    imp.push_back(std::move(v));
  }
  normalise(imp);
  return imp;
}

Importance slimming_importance(const DependencyGraph& graph, nn::Module& model) {
  NoGradGuard no_grad;
  std::map<std::string, std::vector<float>> gammas;
  Importance imp;
  for (const Group& g : graph.groups()) {
    std::vector<double> v;
    for (const Channel& c : g.channels) {
      double s = 0;
      bool any = false;
      for (const Slice& sl : c.slices) {
        if (!sl.batch_norm) continue;
        auto it = gammas.find(sl.name);
        if (it == gammas.end()) it = gammas.emplace(sl.name, named(model, sl.name).to_vector<float>()).first;
        s += std::fabs(it->second[sl.index]);
        any = true;
      }
      v.push_back(any ? s : std::numeric_limits<double>::infinity());
    }
    imp.push_back(std::move(v));
  }
  normalise(imp);
  return imp;
}

TaylorAccumulator::TaylorAccumulator(const DependencyGraph& graph, nn::Module& model) : graph_(graph), model_(model) {
  for (const Group& g : graph.groups()) sum_.emplace_back(g.channels.size(), 0.0);
}

void TaylorAccumulator::accumulate() {
  NoGradGuard no_grad;
  std::map<std::pair<std::string, int64_t>, std::vector<double>> gw;  // (param, dim) -> sum of g * w per index
  for (size_t g = 0; g < graph_.groups().size(); ++g) {
    const Group& grp = graph_.groups()[g];
    for (size_t c = 0; c < grp.channels.size(); ++c) {
      double s = 0;
      for (const Slice& sl : grp.channels[c].slices) {
        if (!sl.producer) continue;
        auto key = std::make_pair(sl.name, sl.dim);
        auto it = gw.find(key);
        if (it == gw.end()) {
          Tensor p = named(model_, sl.name);
          std::vector<double> v;
          if (p.defined() && p.grad().defined()) v = per_index(mul(p.grad(), p.detach()), sl.dim);
          it = gw.emplace(key, std::move(v)).first;
        }
        if (!it->second.empty()) s += it->second[sl.index];
      }
      sum_[g][c] += s * s;
    }
  }
  ++batches_;
}

Importance TaylorAccumulator::importance() const {
  KILN_CHECK(batches_ > 0, "TaylorAccumulator: no batches accumulated (call accumulate() after each backward)");
  Importance imp = sum_;
  for (auto& g : imp)
    for (double& v : g) v /= static_cast<double>(batches_);
  normalise(imp);
  return imp;
}

void add_slimming_penalty(nn::Module& model, double lambda) {
  NoGradGuard no_grad;
  for (auto& mod : model.modules())
    if (auto b = std::dynamic_pointer_cast<nn::BatchNorm2d>(mod)) {
      if (!b->weight.defined()) continue;
      Tensor g = b->weight.grad();
      if (!g.defined()) continue;
      Tensor w = b->weight.detach();
      Tensor sign = sub(cast(gt(w, 0.0), w.dtype()), cast(lt(w, 0.0), w.dtype()));
      add_(g, mul(sign, lambda));
    }
}

MacModel::MacModel(const std::shared_ptr<nn::Module>& model, const Tensor& example) {
  Cost c = count_cost(model, example);
  dense_ = c.macs;
  for (const LayerCost& l : c.layers) {
    if (l.macs == 0) continue;
    const std::string w = l.name.empty() ? "weight" : l.name + ".weight";
    Tensor t = model->get_parameter(w);
    layers_.push_back({w, t.sizes(), static_cast<double>(l.macs) / static_cast<double>(t.numel())});
  }
}

int64_t MacModel::after(const DependencyGraph& graph, const std::vector<std::vector<int64_t>>& remove) const {
  std::map<std::pair<std::string, int64_t>, int64_t> removed;
  for (size_t g = 0; g < remove.size() && g < graph.groups().size(); ++g)
    for (int64_t c : remove[g])
      for (const Slice& s : graph.groups()[g].channels[c].slices) ++removed[{s.name, s.dim}];
  double total = 0;
  for (const Layer& l : layers_) {
    double n = 1;
    for (size_t d = 0; d < l.sizes.size(); ++d) {
      auto it = removed.find({l.weight, static_cast<int64_t>(d)});
      n *= static_cast<double>(l.sizes[d] - (it == removed.end() ? 0 : it->second));
    }
    total += n * l.macs_per_element;
  }
  return static_cast<int64_t>(std::llround(total));
}

ChannelPlan plan_channels(const DependencyGraph& graph, const Importance& imp, const MacModel& macs,
                          double macs_fraction, Scope scope, double min_keep, double channel_fraction) {
  const auto& groups = graph.groups();
  KILN_CHECK(imp.size() == groups.size(), "plan_channels: importance for ", imp.size(), " groups, the graph has ",
             groups.size());
  KILN_CHECK(!groups.empty(), "plan_channels: the model has no prunable channels");
  KILN_CHECK(min_keep > 0 && min_keep <= 1, "plan_channels: min_keep must be in (0, 1], got ", min_keep);
  const bool by_channels = channel_fraction > 0;
  if (by_channels)
    KILN_CHECK(channel_fraction < 1, "plan_channels: the fraction of channels to remove must be below 1, got ",
               channel_fraction);
  else
    KILN_CHECK(macs_fraction > 0 && macs_fraction < 1, "plan_channels: the MACs target must be a fraction of the "
               "model's MACs in (0, 1), got ", macs_fraction);
  const int64_t target = static_cast<int64_t>(std::floor(macs_fraction * static_cast<double>(macs.dense())));
  // Each group's channels, least important first (ties by index); those that cannot be ranked never go.
  std::vector<std::vector<int64_t>> order(groups.size());
  std::vector<int64_t> max_remove(groups.size());
  ChannelPlan plan;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t n = static_cast<int64_t>(groups[g].channels.size());
    plan.channels_before += n;
    KILN_CHECK(static_cast<int64_t>(imp[g].size()) == n, "plan_channels: group ", g, " has ", n, " channels, the "
               "importance ", imp[g].size());
    for (int64_t c = 0; c < n; ++c)
      if (std::isfinite(imp[g][c])) order[g].push_back(c);
    std::stable_sort(order[g].begin(), order[g].end(), [&](int64_t a, int64_t b) { return imp[g][a] < imp[g][b]; });
    const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(min_keep * static_cast<double>(n))));
    max_remove[g] = std::min<int64_t>(static_cast<int64_t>(order[g].size()), n - keep);
  }
  auto take = [&](const std::vector<int64_t>& counts) {
    std::vector<std::vector<int64_t>> r(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) r[g].assign(order[g].begin(), order[g].begin() + counts[g]);
    return r;
  };
  std::vector<int64_t> counts(groups.size(), 0);
  if (scope == Scope::Layer) {
    auto counts_at = [&](double r) {
      std::vector<int64_t> k(groups.size());
      for (size_t g = 0; g < groups.size(); ++g)
        k[g] = std::min<int64_t>(max_remove[g], static_cast<int64_t>(
                                                    std::floor(r * static_cast<double>(groups[g].channels.size()))));
      return k;
    };
    if (by_channels) {
      counts = counts_at(channel_fraction);
    } else {
      KILN_CHECK(macs.after(graph, take(counts_at(1.0))) <= target, "plan_channels: cannot bring the MACs down to ",
                 macs_fraction, " of the model's ", macs.dense(), " while keeping ", min_keep,
                 " of every group's channels (the smallest reachable is ", macs.after(graph, take(counts_at(1.0))), ")");
      double lo = 0, hi = 1;
      for (int it = 0; it < 50; ++it) {
        const double mid = 0.5 * (lo + hi);
        (macs.after(graph, take(counts_at(mid))) <= target ? hi : lo) = mid;
      }
      counts = counts_at(hi);
      // The same fraction of every group overshoots the target by whole channels of the
      // large layers: give channels back, one per group in turn, while the target holds.
      for (bool changed = true; changed;) {
        changed = false;
        for (size_t g = 0; g < groups.size(); ++g) {
          if (counts[g] == 0) continue;
          --counts[g];
          if (macs.after(graph, take(counts)) <= target) changed = true;
          else ++counts[g];
        }
      }
    }
  } else {
    KILN_CHECK(!by_channels, "plan_channels: a channel fraction is a per-group (Scope::Layer) target");
    std::vector<std::pair<double, std::pair<size_t, int64_t>>> all;  // (importance, (group, rank in group))
    for (size_t g = 0; g < groups.size(); ++g)
      for (int64_t k = 0; k < max_remove[g]; ++k) all.push_back({imp[g][order[g][k]], {g, k}});
    std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& e : all) {
      if (macs.after(graph, take(counts)) <= target) break;
      const size_t g = e.second.first;
      if (e.second.second == counts[g]) ++counts[g];  // in rank order within the group
    }
    KILN_CHECK(macs.after(graph, take(counts)) <= target, "plan_channels: cannot bring the MACs down to ",
               macs_fraction, " of the model's ", macs.dense(), " while keeping ", min_keep, " of every group");
  }
  plan.remove = take(counts);
  for (int64_t k : counts) plan.channels_removed += k;
  plan.macs_before = macs.dense();
  plan.macs_after = macs.after(graph, plan.remove);
  return plan;
}

}  // namespace kiln::prune
