// models/data: the idx reader on small synthetic .gz files (good and corrupt ones), the
// real Debian Fashion-MNIST test set when installed, and the DataLoader's epoch coverage,
// shuffling, sharding, resumption and augmentation.
#include "test_util.h"

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <unistd.h>

using namespace kiln;
using namespace kiln::data;
namespace fs = std::filesystem;

namespace {

// A fresh scratch folder, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("kiln_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint32_t magic = 0x803) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) v.push_back(static_cast<uint8_t>((i * 7 + i / (rows * cols)) % 256));
  return v;
}
std::vector<uint8_t> idx_labels(uint32_t n, uint32_t magic = 0x801) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  for (uint32_t i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>(i % 10));
  return v;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

void write_set(const TempDir& d, const std::string& prefix, const std::vector<uint8_t>& images,
               const std::vector<uint8_t>& labels) {
  write_gz(d.file(prefix + "-images-idx3-ubyte.gz"), images);
  write_gz(d.file(prefix + "-labels-idx1-ubyte.gz"), labels);
}

// A small labelled image set: image i holds the value i everywhere, label i % 10.
Dataset synthetic(int64_t n, int64_t h = 28, int64_t w = 28) {
  std::vector<uint8_t> px(static_cast<size_t>(n * h * w));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < h * w; ++k) px[static_cast<size_t>(i * h * w + k)] = static_cast<uint8_t>(i % 256);
  std::vector<int64_t> lab(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) lab[static_cast<size_t>(i)] = i % 10;
  return {from_vector(px, {n, 1, h, w}), from_vector(lab, {n})};
}

std::vector<int64_t> all_batch_indices(const DataLoader& dl, int64_t epoch) {
  std::vector<int64_t> out;
  for (int64_t b = 0; b < dl.size(); ++b) {
    Batch batch = dl.get(epoch, b);
    REQUIRE(batch.x.size(0) == static_cast<int64_t>(batch.indices.size()));
    out.insert(out.end(), batch.indices.begin(), batch.indices.end());
  }
  return out;
}

}  // namespace

TEST_CASE("fashion_mnist: reads synthetic idx.gz files", "[data]") {
  TempDir d;
  auto images = idx_images(5, 28, 28);
  write_set(d, "train", images, idx_labels(5));
  write_set(d, "t10k", idx_images(3, 28, 28), idx_labels(3));
  Dataset tr = load_fashion_mnist(d.path.string(), true);
  REQUIRE(tr.images.sizes() == Shape{5, 1, 28, 28});
  REQUIRE(tr.images.dtype() == DType::U8);
  REQUIRE(tr.labels.sizes() == Shape{5});
  REQUIRE(tr.labels.dtype() == DType::I64);
  CHECK(tr.size() == 5);
  CHECK(test::vec<int64_t>(tr.labels) == std::vector<int64_t>{0, 1, 2, 3, 4});
  std::vector<int64_t> px = test::vec<int64_t>(tr.images);
  for (size_t i = 0; i < px.size(); ++i) REQUIRE(px[i] == images[16 + i]);
  CHECK(load_fashion_mnist(d.path.string(), false).size() == 3);

  // Uncompressed files are used when the .gz ones are absent.
  TempDir raw;
  std::ofstream(raw.file("t10k-images-idx3-ubyte"), std::ios::binary)
      .write(reinterpret_cast<const char*>(images.data()), static_cast<std::streamsize>(images.size()));
  auto lab = idx_labels(5);
  std::ofstream(raw.file("t10k-labels-idx1-ubyte"), std::ios::binary)
      .write(reinterpret_cast<const char*>(lab.data()), static_cast<std::streamsize>(lab.size()));
  CHECK(load_fashion_mnist(raw.path.string(), false).size() == 5);

  // Other image sizes through load_idx; the 28x28 check belongs to load_fashion_mnist.
  write_set(d, "small", idx_images(4, 5, 6), idx_labels(4));
  Dataset s = load_idx(d.file("small-images-idx3-ubyte.gz"), d.file("small-labels-idx1-ubyte.gz"));
  CHECK(s.images.sizes() == Shape{4, 1, 5, 6});
  write_set(d, "train", idx_images(4, 5, 6), idx_labels(4));
  REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string(), true), "expected 28x28");
}

TEST_CASE("fashion_mnist: missing and corrupt files throw kiln::Error naming the path", "[data]") {
  TempDir d;
  const std::string missing = d.file("no_such_dir");
  REQUIRE_KILN_ERROR(load_fashion_mnist(missing), missing);
  REQUIRE_KILN_ERROR(load_fashion_mnist(missing), "apt-get install dataset-fashion-mnist");
  // The folder exists but the files do not.
  REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "train-images-idx3-ubyte.gz");

  const std::string img = d.file("train-images-idx3-ubyte.gz"), lab = d.file("train-labels-idx1-ubyte.gz");
  SECTION("labels file missing") {
    write_gz(img, idx_images(5, 28, 28));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), lab);
  }
  SECTION("bad magic in images") {
    write_set(d, "train", idx_images(5, 28, 28, 0x801), idx_labels(5));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "magic number");
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), img);
  }
  SECTION("bad magic in labels (an images file)") {
    write_set(d, "train", idx_images(5, 28, 28), idx_images(5, 28, 28));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), lab);
  }
  SECTION("wrong element type") {
    write_set(d, "train", idx_images(5, 28, 28, 0x0D03), idx_labels(5));  // 0x0D: float
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "magic number");
  }
  SECTION("payload shorter than the header promises") {
    auto v = idx_images(5, 28, 28);
    v.resize(v.size() - 100);
    write_set(d, "train", v, idx_labels(5));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "truncated");
  }
  SECTION("trailing bytes") {
    auto v = idx_labels(5);
    v.push_back(3);
    write_set(d, "train", idx_images(5, 28, 28), v);
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "header promises");
  }
  SECTION("header too short") {
    write_set(d, "train", {0, 0, 8, 3, 0, 0}, idx_labels(5));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "too short");
  }
  SECTION("empty file") {
    write_set(d, "train", idx_images(5, 28, 28), {});
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), lab);
  }
  SECTION("gzip stream cut short") {
    write_set(d, "train", idx_images(50, 28, 28), idx_labels(50));
    auto size = fs::file_size(img);
    fs::resize_file(img, size / 2);
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), img);
  }
  SECTION("image and label counts differ") {
    write_set(d, "train", idx_images(5, 28, 28), idx_labels(4));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "5 images");
  }
  SECTION("label out of range") {
    auto v = idx_labels(5);
    v.back() = 10;
    write_set(d, "train", idx_images(5, 28, 28), v);
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "label 10");
  }
  SECTION("zero dimension") {
    write_set(d, "train", idx_images(5, 0, 28), idx_labels(5));
    REQUIRE_KILN_ERROR(load_fashion_mnist(d.path.string()), "bad dimension");
  }
}

TEST_CASE("fashion_mnist: the Debian test set, when installed", "[data]") {
  if (!fs::exists(fs::path(kFashionMnistDir) / "t10k-images-idx3-ubyte.gz")) {
    WARN("dataset-fashion-mnist is not installed; skipping the real-data check");
    return;
  }
  Dataset t = load_fashion_mnist(kFashionMnistDir, false);
  REQUIRE(t.images.sizes() == Shape{10000, 1, 28, 28});
  REQUIRE(t.labels.sizes() == Shape{10000});
  std::vector<int64_t> lab = test::vec<int64_t>(t.labels);
  std::vector<int64_t> count(10, 0);
  for (int64_t l : lab) {
    REQUIRE(l >= 0);
    REQUIRE(l < 10);
    ++count[static_cast<size_t>(l)];
  }
  for (int64_t c : count) CHECK(c == 1000);  // the test set is balanced
  const uint8_t* px = t.images.data<uint8_t>();
  int64_t lo = 255, hi = 0;
  double sum = 0;
  for (int64_t i = 0; i < t.images.numel(); ++i) {
    lo = std::min<int64_t>(lo, px[i]);
    hi = std::max<int64_t>(hi, px[i]);
    sum += px[i];
  }
  CHECK(lo == 0);
  CHECK(hi == 255);
  // The test set's mean is close to the training set's 0.2860.
  CHECK(sum / t.images.numel() / 255.0 == Approx(kFashionMnistMean).margin(0.01));
}

TEST_CASE("normalize_images", "[data]") {
  Tensor u = from_vector<uint8_t>({0, 255, 73}, {3});
  Tensor x = normalize_images(u);
  REQUIRE(x.dtype() == DType::F32);
  std::vector<float> v = test::vec<float>(x);
  CHECK(v[0] == Approx(-0.2860 / 0.3530).margin(1e-6));
  CHECK(v[1] == Approx((1.0 - 0.2860) / 0.3530).margin(1e-6));
  CHECK(v[2] == Approx((73.0 / 255.0 - 0.2860) / 0.3530).margin(1e-6));
  REQUIRE_KILN_ERROR(normalize_images(x), "u8");
}

TEST_CASE("DataLoader: every epoch covers the data set once", "[data]") {
  Dataset ds = synthetic(103);
  for (bool drop_last : {false, true}) {
    for (bool shuffle : {false, true}) {
      LoaderOptions o;
      o.batch_size = 10;
      o.drop_last = drop_last;
      o.shuffle = shuffle;
      o.seed = 7;
      DataLoader dl(ds, o);
      CHECK(dl.size() == (drop_last ? 10 : 11));
      for (int64_t epoch : {0, 1, 5}) {
        std::vector<int64_t> idx = all_batch_indices(dl, epoch);
        std::set<int64_t> uniq(idx.begin(), idx.end());
        CHECK(uniq.size() == idx.size());  // no duplicates
        CHECK(static_cast<int64_t>(idx.size()) == (drop_last ? 100 : 103));
        for (int64_t i : idx) REQUIRE((i >= 0 && i < 103));
        if (!shuffle) {
          for (size_t k = 0; k < idx.size(); ++k) REQUIRE(idx[k] == static_cast<int64_t>(k));
        }
      }
      // Batch sizes: full ones, then the remainder unless dropped.
      CHECK(dl.get(0, 0).x.sizes() == Shape{10, 1, 28, 28});
      CHECK(dl.get(0, dl.size() - 1).x.size(0) == (drop_last ? 10 : 3));
    }
  }
  // Labels and pixels follow the indices (image i is filled with i, label i % 10).
  LoaderOptions o;
  o.batch_size = 16;
  o.seed = 3;
  DataLoader dl(ds, o);
  Batch b = dl.get(2, 1);
  REQUIRE(b.y.dtype() == DType::I64);
  REQUIRE(b.x.dtype() == DType::F32);
  std::vector<int64_t> y = test::vec<int64_t>(b.y);
  std::vector<float> x = test::vec<float>(b.x);
  for (size_t k = 0; k < b.indices.size(); ++k) {
    CHECK(y[k] == b.indices[k] % 10);
    float want = (static_cast<float>(b.indices[k]) / 255.0f - kFashionMnistMean) / kFashionMnistStd;
    CHECK(x[k * 784 + 300] == Approx(want));
  }
}

TEST_CASE("DataLoader: shuffling depends on seed and epoch only", "[data]") {
  Dataset ds = synthetic(64);
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 11;
  DataLoader a(ds, o), b(ds, o);
  CHECK(all_batch_indices(a, 0) == all_batch_indices(b, 0));
  CHECK(all_batch_indices(a, 3) == all_batch_indices(b, 3));
  CHECK(all_batch_indices(a, 0) != all_batch_indices(a, 1));
  CHECK(all_batch_indices(a, 1) != all_batch_indices(a, 2));
  o.seed = 12;
  DataLoader c(ds, o);
  CHECK(all_batch_indices(a, 0) != all_batch_indices(c, 0));
  // Batch size does not change the order.
  o.seed = 11;
  o.batch_size = 5;
  DataLoader d(ds, o);
  CHECK(all_batch_indices(a, 4) == all_batch_indices(d, 4));
  CHECK(epoch_permutation(64, 11, 4) == all_batch_indices(d, 4));
}

TEST_CASE("DataLoader: shards across ranks are disjoint and cover the epoch", "[data]") {
  Dataset ds = synthetic(100);
  for (int64_t world : {2, 3}) {
    for (bool drop_last : {false, true}) {
      for (int64_t epoch : {0, 1}) {
        std::vector<int64_t> all;
        int64_t batches = -1;
        for (int64_t r = 0; r < world; ++r) {
          LoaderOptions o;
          o.batch_size = 7;
          o.seed = 5;
          o.drop_last = drop_last;
          o.rank = r;
          o.world_size = world;
          DataLoader dl(ds, o);
          if (batches < 0) batches = dl.size();
          CHECK(dl.size() == batches);  // every rank steps the same number of times
          std::vector<int64_t> mine = all_batch_indices(dl, epoch);
          CHECK(mine == dl.rank_indices(epoch));
          all.insert(all.end(), mine.begin(), mine.end());
        }
        std::set<int64_t> uniq(all.begin(), all.end());
        if (drop_last) {
          // Disjoint; per rank floor(floor(100 / world) / 7) full batches.
          const int64_t per_rank = 100 / world;
          CHECK(batches == per_rank / 7);
          CHECK(uniq.size() == all.size());
          CHECK(static_cast<int64_t>(all.size()) == world * batches * 7);
        } else {
          // Padded to a multiple of world: the union is the whole epoch and only the
          // padding (100 % world != 0 ? world - 100 % world : 0 samples) repeats.
          const int64_t pad = (world - 100 % world) % world;
          CHECK(uniq.size() == 100u);
          CHECK(static_cast<int64_t>(all.size()) == 100 + pad);
          CHECK(batches == ((100 + pad) / world + 6) / 7);
        }
      }
    }
  }
  // With world 1 and the same seed, the ranks' shards interleave the single-process order.
  LoaderOptions o;
  o.seed = 5;
  o.batch_size = 100;
  DataLoader one(ds, o);
  std::vector<int64_t> full = one.rank_indices(3);
  o.world_size = 2;
  o.rank = 1;
  DataLoader r1(ds, o);
  std::vector<int64_t> odd = r1.rank_indices(3);
  for (size_t k = 0; k < odd.size(); ++k) CHECK(odd[k] == full[2 * k + 1]);
  // More ranks than samples: padding wraps around.
  Dataset tiny = synthetic(2);
  o.world_size = 5;
  o.rank = 4;
  o.batch_size = 4;
  DataLoader t(tiny, o);
  CHECK(t.size() == 1);
  CHECK(t.get(0, 0).indices.size() == 1u);
  o.drop_last = true;
  REQUIRE_KILN_ERROR(DataLoader(tiny, o), "drop_last");
}

TEST_CASE("DataLoader: state and seek resume exactly", "[data]") {
  Dataset ds = synthetic(50);
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 21;
  o.augment = true;
  DataLoader full(ds, o);
  REQUIRE(full.size() == 7);
  // An uninterrupted run of 3 epochs through next().
  std::vector<Batch> ref;
  for (int i = 0; i < 3 * 7; ++i) ref.push_back(full.next());
  CHECK(full.state() == DataLoader::State{2, 7});
  CHECK(full.epoch_done());

  // Interrupted after 10 batches (epoch 1, batch 3); a new loader seeks there.
  DataLoader first(ds, o);
  for (int i = 0; i < 10; ++i) first.next();
  DataLoader::State s = first.state();
  CHECK(s == DataLoader::State{1, 3});
  DataLoader resumed(ds, o);
  resumed.seek(s.epoch, s.batch);
  for (int i = 10; i < 3 * 7; ++i) {
    Batch b = resumed.next();
    REQUIRE(b.indices == ref[static_cast<size_t>(i)].indices);
    REQUIRE(test::compare(b.x, ref[static_cast<size_t>(i)].x, 0, 0) == "");
    REQUIRE(test::compare(b.y, ref[static_cast<size_t>(i)].y, 0, 0) == "");
  }
  // Seeking to the end of an epoch continues with the next one; set_epoch restarts one.
  resumed.seek(0, 7);
  CHECK(resumed.next().indices == ref[7].indices);
  resumed.set_epoch(2);
  CHECK(resumed.state() == DataLoader::State{2, 0});
  CHECK(resumed.next().indices == ref[14].indices);
  REQUIRE_KILN_ERROR(resumed.seek(0, 8), "DataLoader::seek");
  REQUIRE_KILN_ERROR(resumed.get(0, 7), "DataLoader::get");
}

TEST_CASE("DataLoader: a batch size larger than the data set, up to INT64_MAX", "[data]") {
  // ceil(n / batch) used to be computed as (n + batch - 1) / batch, which overflows for a
  // batch size near INT64_MAX and gave 0 batches per epoch (a run of 0 steps, exit 0).
  Dataset ds = synthetic(37);
  const int64_t huge = std::numeric_limits<int64_t>::max();
  for (int64_t batch : {int64_t{38}, int64_t{1} << 40, huge - 1, huge}) {
    for (int64_t world : {1, 2}) {
      CAPTURE(batch, world);
      std::vector<int64_t> all;
      for (int64_t r = 0; r < world; ++r) {
        LoaderOptions o;
        o.batch_size = batch;
        o.seed = 3;
        o.rank = r;
        o.world_size = world;
        DataLoader dl(ds, o);
        REQUIRE(dl.size() == 1);  // one batch holding the rank's whole shard
        Batch b = dl.get(0, 0);
        CHECK(static_cast<int64_t>(b.indices.size()) == dl.samples_per_rank());
        CHECK(b.x.size(0) == dl.samples_per_rank());
        CHECK(b.indices == dl.rank_indices(0));
        all.insert(all.end(), b.indices.begin(), b.indices.end());
        // The cursor rolls over into the next epoch after that one batch.
        CHECK(dl.next().indices == b.indices);
        CHECK(dl.epoch_done());
        CHECK(dl.next().indices == dl.rank_indices(1));
      }
      std::set<int64_t> uniq(all.begin(), all.end());
      CHECK(uniq.size() == 37u);  // every sample, the padding (world 2) repeating one
    }
  }
  // With drop_last no full batch fits: refused with a message, not an empty epoch.
  LoaderOptions o;
  o.batch_size = huge;
  o.drop_last = true;
  REQUIRE_KILN_ERROR(DataLoader(ds, o), "leaves no full batch");
  o.batch_size = 38;
  REQUIRE_KILN_ERROR(DataLoader(ds, o), "at most 37");
  o.batch_size = 37;
  CHECK(DataLoader(ds, o).size() == 1);
}

TEST_CASE("augmentation: flip mirrors, crop shifts, both reproducible", "[data]") {
  // One 2-channel 5x6 image with distinct pixels.
  std::vector<uint8_t> px(60);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i + 1);
  Tensor img = from_vector(px, {1, 2, 5, 6});
  auto at = [](const std::vector<int64_t>& v, int64_t c, int64_t y, int64_t x) { return v[(c * 5 + y) * 6 + x]; };
  const std::vector<int64_t> src = test::vec<int64_t>(img);

  // Unshifted crop: identity. Flip: exact mirror.
  CHECK(test::vec<int64_t>(apply_augment(img, {{2, 2, false}}, 2)) == src);
  std::vector<int64_t> f = test::vec<int64_t>(apply_augment(img, {{2, 2, true}}, 2));
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < 5; ++y)
      for (int64_t x = 0; x < 6; ++x) REQUIRE(at(f, c, y, x) == at(src, c, y, 5 - x));

  // Crop window at (dy, dx) = (3, 0) with padding 2: content moves up 1 and right 2,
  // zeros fill in.
  std::vector<int64_t> s = test::vec<int64_t>(apply_augment(img, {{3, 0, false}}, 2));
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < 5; ++y)
      for (int64_t x = 0; x < 6; ++x) {
        const int64_t sy = y + 1, sx = x - 2;
        const int64_t want = (sy < 5 && sx >= 0) ? at(src, c, sy, sx) : 0;
        REQUIRE(at(s, c, y, x) == want);
      }
  // Crop then flip.
  std::vector<int64_t> sf = test::vec<int64_t>(apply_augment(img, {{3, 0, true}}, 2));
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t y = 0; y < 5; ++y)
      for (int64_t x = 0; x < 6; ++x) REQUIRE(at(sf, c, y, x) == at(s, c, y, 5 - x));
  REQUIRE_KILN_ERROR(apply_augment(img, {{5, 0, false}}, 2), "apply_augment");
  REQUIRE_KILN_ERROR(apply_augment(img, {}, 2), "apply_augment");

  // The parameters: in range, a pure function of (seed, epoch, index), varied.
  std::vector<int64_t> idx(200);
  std::iota(idx.begin(), idx.end(), int64_t{0});
  auto p = augment_params(9, 1, idx, 4);
  auto q = augment_params(9, 1, idx, 4);
  auto r = augment_params(9, 2, idx, 4);
  std::set<int64_t> dys, dxs;
  int flips = 0, same_as_other_epoch = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    REQUIRE((p[i].dy >= 0 && p[i].dy <= 8 && p[i].dx >= 0 && p[i].dx <= 8));
    REQUIRE((p[i].dy == q[i].dy && p[i].dx == q[i].dx && p[i].flip == q[i].flip));
    dys.insert(p[i].dy);
    dxs.insert(p[i].dx);
    flips += p[i].flip;
    same_as_other_epoch += p[i].dy == r[i].dy && p[i].dx == r[i].dx && p[i].flip == r[i].flip;
  }
  CHECK(dys.size() == 9u);
  CHECK(dxs.size() == 9u);
  CHECK(flips > 60);
  CHECK(flips < 140);
  CHECK(same_as_other_epoch < 20);

  // Through the loader: deterministic per (seed, epoch, batch), and it changes the pixels.
  Dataset ds = synthetic(40);
  // Give the images structure so flips and crops are visible: pixel = index + column.
  uint8_t* d = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < 40; ++i)
    for (int64_t k = 0; k < 784; ++k) d[i * 784 + k] = static_cast<uint8_t>(i + k % 28 * 3 + 1);
  LoaderOptions o;
  o.batch_size = 10;
  o.seed = 4;
  o.augment = true;
  DataLoader a(ds, o), b(ds, o);
  o.augment = false;
  DataLoader plain(ds, o);
  for (int64_t bi = 0; bi < a.size(); ++bi) {
    Batch x1 = a.get(1, bi), x2 = b.get(1, bi), x0 = plain.get(1, bi);
    REQUIRE(x1.indices == x0.indices);
    CHECK(test::compare(x1.x, x2.x, 0, 0) == "");
    CHECK(test::compare(x1.x, x0.x, 0, 0) != "");
    // Each sample equals apply_augment of its raw image with the documented parameters.
    auto params = augment_params(4, 1, x1.indices, 4);
    for (size_t k = 0; k < x1.indices.size(); ++k) {
      Tensor raw = ds.images.narrow(0, x1.indices[k], 1);
      Tensor want = normalize_images(apply_augment(raw, {params[k]}, 4));
      REQUIRE(test::compare(x1.x.narrow(0, static_cast<int64_t>(k), 1), want, 0, 0) == "");
    }
  }
  CHECK(test::compare(a.get(1, 0).x, a.get(2, 0).x, 0, 0) != "");
}

TEST_CASE("DataLoader: bad arguments", "[data]") {
  Dataset ds = synthetic(10);
  LoaderOptions o;
  o.batch_size = 0;
  REQUIRE_KILN_ERROR(DataLoader(ds, o), "batch_size");
  o.batch_size = 2;
  o.rank = 2;
  o.world_size = 2;
  REQUIRE_KILN_ERROR(DataLoader(ds, o), "rank");
  o.rank = 0;
  REQUIRE_KILN_ERROR(DataLoader(ds.images, ds.labels.narrow(0, 0, 9), o), "labels");
  REQUIRE_KILN_ERROR(DataLoader(ds.images.to(DType::F32), ds.labels, o), "u8");
}
