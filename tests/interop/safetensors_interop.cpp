// kiln's half of the PyTorch interop test of safetensors files (driven by
// safetensors_torch.py, which writes and reads the files on PyTorch's side by hand, without
// the `safetensors` package). Both sides build the same tensors from the formulas in
// expected() / expected_tensors(), so a bug that mirrors itself in kiln's reader and
// writer still shows.
//
//   safetensors_interop check-torch FILE   FILE (written by PyTorch) holds expected()
//   safetensors_interop write-kiln FILE    writes expected() from non-contiguous views
//   safetensors_interop resave IN OUT      loads IN and saves its tensors and metadata to OUT
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <kiln/kiln.h>

using namespace kiln;

namespace {

Tensor floats(const std::vector<double>& v, const Shape& shape, DType dt) {
  return from_vector<double>(v, shape).to(dt);
}
Tensor ints(const std::vector<int64_t>& v, const Shape& shape, DType dt) {
  return from_vector<int64_t>(v, shape).to(dt);
}

// Keep in step with expected_tensors() in safetensors_torch.py.
std::map<std::string, Tensor> expected() {
  std::map<std::string, Tensor> m;
  std::vector<double> v;
  for (int i = 0; i < 12; ++i) v.push_back(i * 0.25 - 1.0);
  m["f32"] = floats(v, {3, 4}, DType::F32);
  v.clear();
  for (int i = 0; i < 6; ++i) v.push_back(i / 3.0);
  m["f64"] = floats(v, {2, 3}, DType::F64);
  v.clear();
  for (int i = 0; i < 10; ++i) v.push_back((i - 5) * 0.125);
  const double inf = INFINITY;
  for (double x : {inf, -inf, -0.0, 65504.0, std::ldexp(1.0, -24)}) v.push_back(x);
  m["f16"] = floats(v, {15}, DType::F16);
  v.clear();
  for (int i = 0; i < 10; ++i) v.push_back((i - 5) * 0.5);
  m["bf16"] = floats(v, {2, 5}, DType::BF16);
  m["bf16_special"] = floats({inf, -0.0, std::ldexp(1.0, 100), -std::ldexp(1.0, -130)}, {4}, DType::BF16);
  m["i32"] = ints({INT32_MIN, -1000000, 0, 1, 1000000, INT32_MAX}, {6}, DType::I32);
  m["i64"] = ints({INT64_MIN, -1, 0, (int64_t{1} << 53) + 1, INT64_MAX}, {5}, DType::I64);
  std::vector<int64_t> u;
  for (int i = 0; i < 16; ++i) u.push_back(i * 17);
  m["u8"] = ints(u, {4, 4}, DType::U8);
  u.clear();
  for (int i = 0; i < 7; ++i) u.push_back(i % 3 == 0);
  m["bool"] = ints(u, {7}, DType::Bool);
  m["scalar"] = scalar_tensor(3.5, DType::F32);
  m["empty"] = empty({0, 3}, DType::F32);
  m["empty_i64"] = empty({2, 0, 4}, DType::I64);
  m["name_\xC3\x9F_\xF0\x9F\x94\xA5"] = floats({1.0, 2.0}, {2}, DType::F32);
  return m;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  Tensor ca = a.cpu().contiguous(), cb = b.cpu().contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), static_cast<size_t>(ca.numel()) * ca.element_size()) == 0;
}

int check_torch(const std::string& path) {
  SafetensorsContents c = load_safetensors_with_metadata(path);
  int bad = 0;
  auto want = expected();
  if (c.tensors.size() != want.size()) {
    std::cerr << "check-torch: " << c.tensors.size() << " tensors, expected " << want.size() << "\n";
    ++bad;
  }
  for (const auto& [name, w] : want) {
    auto it = c.tensors.find(name);
    if (it == c.tensors.end()) {
      std::cerr << "check-torch: missing tensor '" << name << "'\n";
      ++bad;
      continue;
    }
    if (!same_bytes(it->second, w)) {
      std::cerr << "check-torch: tensor '" << name << "' differs:\n  kiln read " << it->second.str()
                << "\n  expected  " << w.str() << "\n";
      ++bad;
    }
  }
  const std::map<std::string, std::string> want_meta{{"format", "pt"}, {"source", "torch \xC3\xA9"}};
  if (c.metadata != want_meta) {
    std::cerr << "check-torch: metadata differs (" << c.metadata.size() << " entries)\n";
    ++bad;
  }
  std::cout << "check-torch: " << want.size() - static_cast<size_t>(bad) << " of " << want.size()
            << " checks passed\n";
  return bad ? 1 : 0;
}

int write_kiln(const std::string& path) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : expected()) {
    // Write from non-contiguous views: transposed storage, or every other element.
    if (t.dim() >= 2 && t.numel() > 0) {
      out[name] = t.transpose(-1, -2).contiguous().transpose(-1, -2);
    } else if (t.dim() == 1 && t.numel() > 1) {
      Tensor big = zeros({t.size(0) * 2}, t.dtype());
      Tensor view = big.slice(0, 0, t.size(0) * 2, 2);
      view.copy_(t);
      out[name] = view;
    } else {
      out[name] = t;
    }
  }
  save_safetensors(path, out, {{"format", "pt"}, {"writer", "kiln \xE2\x9C\x93"}});
  std::cout << "write-kiln: wrote " << out.size() << " tensors to " << path << "\n";
  return 0;
}

int resave(const std::string& in, const std::string& out) {
  SafetensorsContents c = load_safetensors_with_metadata(in);
  save_safetensors(out, c.tensors, c.metadata);
  std::cout << "resave: " << c.tensors.size() << " tensors\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 2 && a[0] == "check-torch") return check_torch(a[1]);
    if (a.size() == 2 && a[0] == "write-kiln") return write_kiln(a[1]);
    if (a.size() == 3 && a[0] == "resave") return resave(a[1], a[2]);
  } catch (const Error& e) {
    std::cerr << "safetensors_interop: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: safetensors_interop check-torch FILE | write-kiln FILE | resave IN OUT\n";
  return 2;
}
