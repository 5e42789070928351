// Fashion-MNIST reader: zlib's gz* API inflates the file (and passes a file that is not
// gzip through unchanged), then the idx header is checked against the payload size
// before the bytes are copied into tensors.
#include <kiln/models/data/fashion_mnist.h>

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include <kiln/core/error.h>

namespace kiln::data {
namespace {

const char* kInstallHint = " (Debian ships the data set as `apt-get install dataset-fashion-mnist`)";

// The whole inflated content of `path`.
std::vector<uint8_t> read_gzip(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KILN_CHECK(fs::is_regular_file(path, ec), "fashion_mnist: file '", path, "' does not exist or is not a file",
             kInstallHint);
  gzFile f = gzopen(path.c_str(), "rb");
  KILN_CHECK(f != nullptr, "fashion_mnist: cannot open '", path, "': ", std::strerror(errno));
  std::vector<uint8_t> out;
  constexpr unsigned kChunk = 1u << 20;
  for (;;) {
    size_t old = out.size();
    out.resize(old + kChunk);
    int n = gzread(f, out.data() + old, kChunk);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw Error(detail::str("fashion_mnist: '", path, "' is corrupt (zlib: ", msg, ")"));
    }
    out.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  // A truncated stream ends with Z_BUF_ERROR ("unexpected end of file") rather than a
  // failing read.
  int err = Z_OK;
  std::string msg = gzerror(f, &err);
  gzclose(f);
  KILN_CHECK(err == Z_OK || err == Z_STREAM_END, "fashion_mnist: '", path, "' is corrupt or truncated (zlib: ", msg,
             ")");
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Checks an idx header (magic 0x0000 08 <ndims>: unsigned bytes) and the payload size;
// returns the dims.
std::vector<int64_t> idx_dims(const std::vector<uint8_t>& bytes, int ndims, const std::string& path) {
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  KILN_CHECK(bytes.size() >= header, "fashion_mnist: '", path, "' is too short for an idx header (", bytes.size(),
             " bytes)");
  const uint32_t magic = be32(bytes.data());
  const uint32_t want = 0x00000800u | static_cast<uint32_t>(ndims);
  KILN_CHECK(magic == want, "fashion_mnist: '", path, "' has magic number 0x", std::hex, magic, ", expected 0x", want,
             std::dec, " (an idx", ndims, " file of unsigned bytes)");
  std::vector<int64_t> dims(ndims);
  size_t payload = 1;
  for (int i = 0; i < ndims; ++i) {
    dims[i] = be32(bytes.data() + 4 + 4 * i);
    KILN_CHECK(dims[i] > 0 && payload <= std::numeric_limits<uint32_t>::max(), "fashion_mnist: '", path,
               "' has a bad dimension ", i, " = ", dims[i]);
    payload *= static_cast<size_t>(dims[i]);
  }
  KILN_CHECK(bytes.size() == header + payload, "fashion_mnist: '", path, "' holds ", bytes.size() - header,
             " data bytes but its header promises ", payload, (bytes.size() < header + payload ? " (truncated)" : ""));
  return dims;
}

// `dir/name.gz`, or `dir/name` when only the uncompressed file is there.
std::string pick(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path gz = fs::path(dir) / (name + ".gz"), raw = fs::path(dir) / name;
  if (!fs::exists(gz, ec) && fs::exists(raw, ec)) return raw.string();
  return gz.string();
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int64_t num_classes) {
  std::vector<uint8_t> ib = read_gzip(images_path);
  std::vector<int64_t> idims = idx_dims(ib, 3, images_path);
  std::vector<uint8_t> lb = read_gzip(labels_path);
  std::vector<int64_t> ldims = idx_dims(lb, 1, labels_path);
  KILN_CHECK(idims[0] == ldims[0], "fashion_mnist: '", images_path, "' holds ", idims[0], " images but '", labels_path,
             "' holds ", ldims[0], " labels");
  const int64_t n = idims[0];

  Dataset d;
  d.images = empty({n, 1, idims[1], idims[2]}, DType::U8);
  std::memcpy(d.images.data<uint8_t>(), ib.data() + 16, ib.size() - 16);
  d.labels = empty({n}, DType::I64);
  int64_t* lab = d.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    lab[i] = lb[8 + i];
    KILN_CHECK(lab[i] < num_classes, "fashion_mnist: '", labels_path, "' has label ", lab[i], " at index ", i,
               ", outside [0, ", num_classes, ")");
  }
  return d;
}

Dataset load_fashion_mnist(const std::string& dir, bool train) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KILN_CHECK(fs::is_directory(dir, ec), "load_fashion_mnist: directory '", dir, "' does not exist", kInstallHint);
  const std::string prefix = train ? "train" : "t10k";
  Dataset d = load_idx(pick(dir, prefix + "-images-idx3-ubyte"), pick(dir, prefix + "-labels-idx1-ubyte"));
  KILN_CHECK(d.images.size(2) == kFashionMnistRows && d.images.size(3) == kFashionMnistCols,
             "load_fashion_mnist: images in '", dir, "' are ", d.images.size(2), "x", d.images.size(3), ", expected ",
             kFashionMnistRows, "x", kFashionMnistCols);
  return d;
}

Tensor normalize_images(const Tensor& images, Device device, float mean, float std) {
  KILN_CHECK(images.dtype() == DType::U8, "normalize_images: expected u8 images, got ", dtype_name(images.dtype()));
  KILN_CHECK(std > 0.0f, "normalize_images: std must be positive, got ", std);
  Tensor src = images.cpu().contiguous();
  Tensor out = empty(images.sizes(), DType::F32);
  const uint8_t* s = src.data<uint8_t>();
  float* o = out.data<float>();
  // The 256 possible values, computed once: identical results for every pixel value.
  float table[256];
  for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - mean) / std;
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) o[i] = table[s[i]];
  return device == kCPU ? out : out.to(device);
}

}  // namespace kiln::data
