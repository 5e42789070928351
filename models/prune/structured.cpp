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
                          double macs_fraction, Scope scope, double min_keep, double channel_fraction,
                          int64_t round_to) {
  const auto& groups = graph.groups();
  KILN_CHECK(imp.size() == groups.size(), "plan_channels: importance for ", imp.size(), " groups, the graph has ",
             groups.size());
  KILN_CHECK(!groups.empty(), "plan_channels: the model has no prunable channels");
  KILN_CHECK(min_keep > 0 && min_keep <= 1, "plan_channels: min_keep must be in (0, 1], got ", min_keep);
  KILN_CHECK(round_to >= 1, "plan_channels: round_to must be >= 1, got ", round_to);
  const bool by_channels = channel_fraction > 0;
  if (by_channels)
    KILN_CHECK(channel_fraction < 1, "plan_channels: the fraction of channels to remove must be below 1, got ",
               channel_fraction);
  else
    KILN_CHECK(macs_fraction > 0 && macs_fraction < 1, "plan_channels: the MACs target must be a fraction of the "
               "model's MACs in (0, 1), got ", macs_fraction);
  KILN_CHECK(!by_channels || scope == Scope::Layer, "plan_channels: a channel fraction is a per-group (Scope::Layer) "
             "target");
  const int64_t target = static_cast<int64_t>(std::floor(macs_fraction * static_cast<double>(macs.dense())));
  const size_t G = groups.size();
  // Each group's channels, least important first (ties by index); those that cannot be
  // ranked never go. A group keeps a multiple of round_to channels (or all it has).
  std::vector<std::vector<int64_t>> order(G);
  std::vector<int64_t> size(G), max_remove(G);
  ChannelPlan plan;
  auto legal = [&](size_t g, int64_t count) {  // the largest count <= `count` leaving a multiple of round_to
    const int64_t n = size[g];
    int64_t keep = n - std::min(count, max_remove[g]);
    if (keep % round_to != 0) keep = std::min(n, (keep / round_to + 1) * round_to);
    return n - keep;
  };
  for (size_t g = 0; g < G; ++g) {
    const int64_t n = static_cast<int64_t>(groups[g].channels.size());
    size[g] = n;
    plan.channels_before += n;
    KILN_CHECK(static_cast<int64_t>(imp[g].size()) == n, "plan_channels: group ", g, " has ", n, " channels, the "
               "importance ", imp[g].size());
    for (int64_t c = 0; c < n; ++c)
      if (std::isfinite(imp[g][c])) order[g].push_back(c);
    std::stable_sort(order[g].begin(), order[g].end(), [&](int64_t a, int64_t b) { return imp[g][a] < imp[g][b]; });
    const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(min_keep * static_cast<double>(n))));
    max_remove[g] = std::min<int64_t>(static_cast<int64_t>(order[g].size()), n - keep);
    max_remove[g] = std::max<int64_t>(0, legal(g, max_remove[g]));
  }
  auto take = [&](const std::vector<int64_t>& counts) {
    std::vector<std::vector<int64_t>> r(G);
    for (size_t g = 0; g < G; ++g) r[g].assign(order[g].begin(), order[g].begin() + counts[g]);
    return r;
  };
  auto macs_at = [&](const std::vector<int64_t>& counts) { return macs.after(graph, take(counts)); };
  std::vector<int64_t> counts(G, 0);
  const auto unreachable = [&](const std::vector<int64_t>& most) {
    return kiln::detail::str("plan_channels: cannot bring the MACs down to ", macs_fraction, " of the model's ",
                             macs.dense(), " while keeping ", min_keep, " of every group's channels (in multiples of ",
                             round_to, "): the smallest reachable is ", macs_at(most));
  };
  if (scope == Scope::Layer) {
    auto counts_at = [&](double r) {
      std::vector<int64_t> k(G);
      for (size_t g = 0; g < G; ++g) k[g] = legal(g, static_cast<int64_t>(std::floor(r * static_cast<double>(size[g]))));
      return k;
    };
    if (by_channels) {
      counts = counts_at(channel_fraction);
    } else {
      KILN_CHECK(macs_at(counts_at(1.0)) <= target, unreachable(counts_at(1.0)));
      double lo = 0, hi = 1;
      for (int it = 0; it < 50; ++it) {
        const double mid = 0.5 * (lo + hi);
        (macs_at(counts_at(mid)) <= target ? hi : lo) = mid;
      }
      counts = counts_at(hi);
      // The same fraction of every group overshoots the target by whole channels of the
      // large layers: give channels back (round_to at a time), one group in turn, while
      // the target holds.
      for (bool changed = true; changed;) {
        changed = false;
        for (size_t g = 0; g < G; ++g) {
          if (counts[g] == 0) continue;
          const int64_t was = counts[g];
          counts[g] = std::max<int64_t>(0, was - round_to);
          counts[g] = legal(g, counts[g]);
          if (counts[g] < was && macs_at(counts) <= target) changed = true;
          else counts[g] = was;
        }
      }
    }
  } else {
    // Global: repeatedly remove the next chunk (down to the next multiple of round_to) of
    // the group whose chunk is least important on average, until the MACs reach the target.
    while (macs_at(counts) > target) {
      size_t best = G;
      double best_score = 0;
      for (size_t g = 0; g < G; ++g) {
        int64_t next = counts[g] + 1;
        while (next <= max_remove[g] && legal(g, next) < next) ++next;  // the next legal count
        if (next > max_remove[g]) continue;
        double sum = 0;
        for (int64_t k = counts[g]; k < next; ++k) sum += imp[g][order[g][k]];
        const double score = sum / static_cast<double>(next - counts[g]);
        if (best == G || score < best_score) best = g, best_score = score;
      }
      if (best == G) break;
      int64_t next = counts[best] + 1;
      while (legal(best, next) < next) ++next;
      counts[best] = next;
    }
    KILN_CHECK(macs_at(counts) <= target, unreachable(counts));
  }
  plan.remove = take(counts);
  for (int64_t k : counts) plan.channels_removed += k;
  plan.macs_before = macs.dense();
  plan.macs_after = macs_at(counts);
  return plan;
}

}  // namespace kiln::prune
