// Weight quantization, the rest of Deep Compression: k-means weight sharing with fine-tuned
// centroids (Han, Mao & Dally, "Deep Compression", ICLR 2016) and incremental network
// quantization to powers of two (Zhou et al., "Incremental Network Quantization", ICLR 2017).
//
// Both act on the weights prunable_weights() names (every Conv2d, ConvTranspose2d and
// Linear weight; biases and norms stay f32, as in both papers) and compose with pruning:
// the weights a Masks object prunes stay zero, are never clustered or coded, and their
// gradients are zeroed. Like Masks, each keeps its state beside the model and hooks into a
// training step at two points:
//
//   loss.backward();
//   shared.share_gradients();   // or inq.mask_gradients(): after backward, before the step
//   opt.step();
//   shared.apply();             // or inq.apply(): after the step
//
// The state lives on the parameters' device and the per-step hooks are tensor ops (no
// host reads); clustering, rounding and partitioning run once per layer on the host.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>
#include <kiln/models/prune/masks.h>

namespace kiln::prune {

// ---------------------------------------------------------------------------------------
// k-means weight sharing (Han et al. 2016, section 3)
// ---------------------------------------------------------------------------------------

// Han et al.'s linear initialisation, the best of the three they compare (it keeps
// centroids on the rare large weights): k values spaced evenly over [lo, hi],
// c_i = lo + i (hi - lo) / (k - 1). k >= 1 (k = 1 gives lo).
std::vector<float> linear_centroids(float lo, float hi, int64_t k);

struct KMeans {
  std::vector<float> centroids;  // k values, ascending
  std::vector<int32_t> index;    // per value: its centroid, or -1 where excluded
  int64_t iterations = 0;        // Lloyd iterations run
  bool converged = false;        // the last iteration changed no assignment
};

// One-dimensional k-means of `values` (Lloyd's algorithm): k centroids, linear
// initialisation between the min and max of the included values, then assignment to the
// nearest centroid (ties to the lower one) and centroid = mean of its values, until no
// assignment changes or `max_iter` iterations. A centroid that loses all its values stays
// where it is. `include` (empty, or one flag per value) leaves out values flagged 0: they
// get index -1. Throws kiln::Error for k < 1, max_iter < 1 or nothing to cluster.
KMeans kmeans_1d(const std::vector<float>& values, int64_t k, const std::vector<uint8_t>& include = {},
                 int64_t max_iter = 1000);

// Weight sharing: every clustered weight W[i] = C[I[i]] for a per-layer codebook C of
// k = 2^bits centroids and an index I of `bits` bits per weight.
//
// Fine-tuning the centroids (Han et al., Eq. 3): the loss reaches a centroid through each
// weight that shares it, so dL/dC_k = sum_{i : I[i] = k} dL/dW[i]. share_gradients() writes
// that sum into the gradient of every weight of cluster k (pruned weights get 0), so that
// any optimizer that updates element by element from zeroed state (SGD, Adam, AdamW: equal
// gradients, equal weights, equal updates) moves the whole cluster as one value; plain SGD
// then does exactly C_k <- C_k - lr dL/dC_k. apply() then sets each centroid to the mean
// of its weights (their common value; robust to anything that moved them apart) and
// writes W = C[I] again, zeros at the pruned positions. sgd_step() is Han's update on the
// centroids directly, for loops without an optimizer.
class SharedWeights {
 public:
  explicit SharedWeights(std::shared_ptr<nn::Module> model);

  // Clusters parameter `name` into 2^bits shared values (bits in 1..8) with kmeans_1d;
  // the weights `masks` prunes (when given and it masks `name`) are excluded and set to
  // zero. The weight becomes codebook[index] at once. Throws kiln::Error for bad bits, an
  // empty parameter or one whose weights are all pruned.
  void quantize(const std::string& name, int bits, const Masks* masks = nullptr, int64_t max_iter = 1000);
  // Every weight prunable_weights() names, each with its own codebook.
  void quantize_all(int bits, const Masks* masks = nullptr, int64_t max_iter = 1000);
  // Sets parameter `name` from a codebook (k values, k <= 2^bits, any dtype) and an index
  // (the parameter's shape, integers in [-1, k): -1 = pruned, weight 0).
  void set(const std::string& name, const Tensor& codebook, const Tensor& index, int bits);

  bool has(const std::string& name) const { return layers_.count(name) > 0; }
  bool empty() const { return layers_.empty(); }
  std::vector<std::string> names() const;
  int bits(const std::string& name) const;
  Tensor codebook(const std::string& name) const;  // (k) in the parameter's dtype and device
  Tensor index(const std::string& name) const;     // I64, the parameter's shape, -1 = pruned
  int64_t coded(const std::string& name) const;    // weights stored as an index (not pruned)

  // dL/dC of parameter `name` (Eq. 3): (k), the sums of its weights' gradients by centroid.
  // Throws when the parameter has no gradient.
  Tensor centroid_gradient(const std::string& name) const;
  void share_gradients();      // grad[i] = dL/dC_{I[i]} (0 where pruned), where a gradient is defined
  void apply();                // C_k = mean of its weights; W = C[I], 0 where pruned (no autograd)
  void sgd_step(double lr);    // C -= lr dL/dC (Eq. 3, from the current gradients); W = C[I]

  // Storage per layer: bits x coded weights + 32 x k for the f32 codebook (no position
  // overhead for pruned layers: Han et al. add relative indices, not counted here).
  std::map<std::string, int64_t> layer_bits() const;

  // "<param>.codebook" (f32, k) and "<param>.index" (I32, the parameter's shape) for a
  // checkpoint; load_state_dict() restores them (and the weights) into a model of the same
  // shapes. The bits are stored as "<param>.bits" (I64 scalar).
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  struct Layer {
    Tensor param;     // the model's handle
    int bits = 0;
    int64_t k = 0;
    Tensor flat_index;  // I64 (n): the centroid of each weight, k where pruned (a zero slot)
    Tensor codebook;    // (k + 1) in the parameter's dtype: the centroids, then the zero slot
    Tensor has_weights; // (k + 1): 1 where the centroid has weights (the zero slot: 0)
    Tensor inv_count;   // (k + 1): 1 / count, 0 where empty
    int64_t coded = 0;
  };
  Layer& layer(const std::string& name);
  const Layer& layer(const std::string& name) const;
  static void write(Layer& l);  // W = codebook[flat_index]
  std::shared_ptr<nn::Module> model_;
  std::map<std::string, Layer> layers_;
};

// ---------------------------------------------------------------------------------------
// Incremental network quantization (Zhou et al. 2017)
// ---------------------------------------------------------------------------------------

// A layer's INQ levels P = {0, +-2^n2, ..., +-2^n1} (Zhou et al., section 2.1): with
// s = max |W| of the layer, n1 = floor(log2(4 s / 3)), the largest power of two that the
// rounding rule can reach (every |w| <= s lies below 3/2 2^n1); with b bits, one bit codes
// zero and b - 1 bits code 2^(b-1) signed powers, 2^(b-1)/2 magnitudes:
// n2 = n1 + 1 - 2^(b-1)/2. b = 2 is ternary {0, +-2^n1}; b = 5 has 8 magnitudes.
struct InqLevels {
  int bits = 0;
  int n1 = 0, n2 = 0;
  std::vector<float> magnitudes() const;  // 2^n2, ..., 2^n1, ascending
  std::vector<float> values() const;      // the sorted set: -2^n1 .. -2^n2, 0, 2^n2 .. 2^n1
};
// Throws kiln::Error for bits outside 2..5 or s not positive and finite.
InqLevels inq_levels(double max_abs, int bits);

// Zhou et al.'s Eq. 4: w -> beta sgn(w) where (alpha + beta)/2 <= |w| < 3 beta / 2 for
// adjacent levels alpha < beta of the sorted non-negative set {0, 2^n2, ..., 2^n1};
// otherwise 0 (|w| < 2^n2 / 2). (The intervals tile [2^(n2-1), 3 2^(n1-1)), so this is
// rounding to the nearest level; |w| >= 3/2 2^n1 cannot occur for the layer's own s.)
float inq_round(float w, const InqLevels& levels);

// The accumulated portions of quantized weights of the paper's experiments: 50%, 75%,
// 87.5%, 100%.
std::vector<double> inq_portions();

// Incremental quantization of a model's prunable weights. Each layer's levels come from
// its weights when the Inq is made (the pre-trained s). quantize_portion(p) partitions each
// layer by magnitude (Zhou et al., section 2.2, the pruning-inspired strategy): the largest
// |w| among the not yet quantized weights are rounded (Eq. 4) and frozen until p of the
// layer's weights (those not pruned) are. Between portions the caller retrains: frozen
// weights get zero gradients (mask_gradients, after backward) and are written back to their
// values after each step (apply), so weight decay and optimizer momentum cannot move them.
class Inq {
 public:
  // `bits` in 2..5; `masks` (optional): pruned weights stay zero (frozen at the level 0)
  // and are not counted in the portions. Throws kiln::Error for bad bits, a model with no
  // prunable weights, an empty one or one that is all zeros.
  Inq(std::shared_ptr<nn::Module> model, int bits, const Masks* masks = nullptr);

  // Quantizes and freezes, in every layer, the largest-|w| free weights until round(p n)
  // of its n unpruned weights are frozen. p in (0, 1], not below the last portion.
  void quantize_portion(double portion);
  void mask_gradients();  // grad *= 1 - frozen, where a gradient is defined
  void apply();           // frozen weights = their quantized values (no autograd)

  int bits() const { return bits_; }
  double portion() const { return portion_; }
  std::vector<std::string> names() const;
  const InqLevels& levels(const std::string& name) const;
  Tensor frozen(const std::string& name) const;  // 0/1 in the parameter's dtype
  double frozen_fraction() const;                // frozen unpruned weights / unpruned weights

  // Storage per layer: bits x unpruned weights (each a code of P, zero included).
  std::map<std::string, int64_t> layer_bits() const;
  // "<param>.levels" (I64: bits, n1, n2) and "<param>.frozen" for a checkpoint.
  std::map<std::string, Tensor> state_dict() const;

 private:
  struct Layer {
    Tensor param;
    InqLevels levels;
    std::vector<uint8_t> pruned;  // host flags
    std::vector<uint8_t> frozen;  // host flags (pruned ones included)
    std::vector<float> qvalue;    // the quantized value where frozen
    Tensor keep;                  // 1 - frozen, the parameter's dtype and device
    Tensor qvalues;               // qvalue where frozen, 0 elsewhere
    int64_t unpruned = 0, frozen_unpruned = 0;
  };
  std::shared_ptr<nn::Module> model_;
  int bits_ = 0;
  double portion_ = 0;
  std::vector<std::pair<std::string, Layer>> layers_;  // in prunable_weights() order
};

// ---------------------------------------------------------------------------------------
// Size accounting
// ---------------------------------------------------------------------------------------

// Bits to store every parameter of `model` as f32: 32 x parameters.
int64_t dense_bits(const nn::Module& model);
// Bits to store the model's nonzero prunable weights and every other parameter as f32
// (a pruned model without the positions' overhead).
int64_t sparse_bits(nn::Module& model);
// Bits of a quantized model: the layers `layer_bits` names at those sizes (from
// SharedWeights::layer_bits or Inq::layer_bits), every other parameter as f32.
int64_t quantized_bits(const nn::Module& model, const std::map<std::string, int64_t>& layer_bits);

}  // namespace kiln::prune
