// safetensors files: round trips of every dtype and layout, metadata, the exact bytes of
// a hand-built golden file, atomic replacement (failed and killed saves leave the previous
// file), per-tensor CRC32 checksums (bit flips detected, files without them still load),
// paths that are not regular files (a FIFO must not block), one test per class of corrupt
// file, and a seeded, time-bounded fuzz of corrupt files that must either load or throw
// kiln::Error.
#include "test_util.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <regex>
#include <thread>

using namespace kiln;
using namespace kiln::test;
namespace fs = std::filesystem;

namespace {


std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::string u64_le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file with header `json` (its length written as `n`, by default the true length)
// followed by `data`.
std::string file_bytes(const std::string& json, const std::string& data, int64_t n = -1) {
  return u64_le(n < 0 ? json.size() : static_cast<uint64_t>(n)) + json + data;
}

// A header with one F32 tensor "x" of `shape_json` and `offsets_json`.
std::string one_tensor(const std::string& dtype, const std::string& shape_json, const std::string& offsets_json) {
  return R"({"x":{"dtype":")" + dtype + R"(","shape":)" + shape_json + R"(,"data_offsets":)" + offsets_json + "}}";
}

uint64_t header_length(const std::string& bytes) {
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

// The file as PyTorch or the `safetensors` package would write it: kiln's file with its
// "kiln.crc32.*" metadata keys taken out of the header (and an emptied "__metadata__"
// dropped), re-padded to 8 bytes. Works for the names the tests use (no '"' in them).
std::string strip_crcs(const std::string& bytes) {
  const uint64_t n = header_length(bytes);
  std::string json = bytes.substr(8, n);
  json.erase(json.find_last_not_of(' ') + 1);
  json = std::regex_replace(json, std::regex(R"re("kiln\.crc32\.[^"]*":"[0-9a-f]{8}",?)re"), "");
  json = std::regex_replace(json, std::regex(R"re(,\})re"), "}");
  json = std::regex_replace(json, std::regex(R"re("__metadata__":\{\},?)re"), "");
  json.append((8 - json.size() % 8) % 8, ' ');
  return u64_le(json.size()) + json + bytes.substr(8 + n);
}

std::string crc_hex(const void* data, size_t n) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08lx", ::crc32(0, static_cast<const Bytef*>(data), static_cast<uInt>(n)));
  return buf;
}

void check_same(const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& want) {
  REQUIRE(got.size() == want.size());
  for (const auto& [name, w] : want) {
    INFO("tensor " << name << " " << dtype_name(w.dtype()) << " " << shape_str(w.sizes()));
    auto it = got.find(name);
    REQUIRE(it != got.end());
    const Tensor& g = it->second;
    CHECK(g.dtype() == w.dtype());
    CHECK(g.sizes() == w.sizes());
    CHECK(g.device() == kCPU);
    CHECK(g.is_contiguous());
    CHECK_FALSE(g.shares_storage(w));
    CHECK(bit_equal(g, w));
  }
}

// Every class of header or size problem named in the loader's contract.
struct BadFile {
  const char* what;
  std::string bytes;
  const char* needle;  // part of the expected message
};

}  // namespace

TEST_CASE("safetensors round trip of every dtype, shape and layout", "[safetensors]") {
  TempDir dir;
  std::map<std::string, Tensor> tensors;
  uint64_t seed = 1;
  const std::vector<Shape> shapes{{}, {0}, {3, 0, 2}, {1}, {7}, {3, 4}, {2, 3, 5}};
  for (DType dt : all_dtypes()) {
    for (const Shape& s : shapes) {
      Tensor t = random_tensor(s, dt, seed++);
      std::string base = std::string(dtype_name(dt)) + "/" + shape_str(s);
      tensors[base] = t;
      if (t.numel() > 1) {
        tensors[base + "/noncontiguous"] = noncontiguous(t);
        tensors[base + "/strided"] = strided_copy(t);
        REQUIRE_FALSE(tensors[base + "/strided"].is_contiguous());
      }
    }
    // A broadcast (stride 0) view, a permuted view and a view with a storage offset.
    Tensor b = random_tensor({3, 4, 5}, dt, seed++);
    tensors[std::string(dtype_name(dt)) + "/expanded"] = b.narrow(0, 1, 1).expand({3, 4, 5});
    tensors[std::string(dtype_name(dt)) + "/permuted"] = b.permute({2, 0, 1});
    tensors[std::string(dtype_name(dt)) + "/offset"] = b.select(0, 2).slice(1, 1, 4);
  }
  // Special floating values survive bit for bit.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> special{0.0f, -0.0f, inf, -inf, nan, 1e-45f, -3.4e38f, 65504.0f, 1e-8f};
  for (DType dt : floating_dtypes())
    tensors[std::string("special/") + dtype_name(dt)] = from_vector(special).to(dt);

  std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors);
  check_same(load_safetensors(path), tensors);
  CHECK(dir.temp_files().empty());
  CHECK(load_safetensors_metadata(path).empty());

  // Saving again replaces the file; a tensor that requires grad saves its values.
  Tensor w = random_tensor({4, 3}, DType::F32, 99).set_requires_grad(true);
  std::map<std::string, Tensor> second{{"w", w}, {"w_t", w.t()}};
  save_safetensors(path, second);
  auto back = load_safetensors(path);
  check_same(back, second);
  CHECK_FALSE(back.at("w").requires_grad());

  // No tensors at all is a valid file.
  save_safetensors(path, {});
  CHECK(load_safetensors(path).empty());
}

TEST_CASE("safetensors metadata and unusual names round trip", "[safetensors]") {
  TempDir dir;
  std::map<std::string, std::string> meta{
      {"format", "pt"},
      {"", "empty key"},
      {"empty value", ""},
      {"quotes \" and \\ backslash", "tab\t newline\n cr\r bell\x07 nul-free / slash"},
      {"unicode \xC3\xA9\xE2\x82\xAC\xF0\x9F\x94\xA5", "\xE6\x97\xA5\xE6\x9C\xAC"},
      {"__metadata__", "a metadata key may be called that"},
      {"json", R"({"lr": 0.001, "betas": [0.9, 0.999]})"},
  };
  std::map<std::string, Tensor> tensors{
      {"model.layers.0.weight", random_tensor({2, 3}, DType::F32, 1)},
      {"na\xC3\xAFve \"quoted\" \\ name\n", random_tensor({2}, DType::I64, 2)},
      {"", random_tensor({}, DType::BF16, 3)},
  };
  std::string path = dir.file("meta.safetensors");
  save_safetensors(path, tensors, meta);
  SafetensorsContents c = load_safetensors_with_metadata(path);
  CHECK(c.metadata == meta);
  check_same(c.tensors, tensors);
  CHECK(load_safetensors_metadata(path) == meta);
  // The header is padded so that the data starts at a multiple of 8.
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');

  // Names and metadata that cannot be written.
  CHECK_KILN_ERROR(save_safetensors(path, {{"__metadata__", ones({1})}}), "__metadata__");
  CHECK_KILN_ERROR(save_safetensors(path, {{"bad \xC3\x28 utf8", ones({1})}}), "UTF-8");
  CHECK_KILN_ERROR(save_safetensors(path, {{"x", ones({1})}}, {{"k", "\xFF"}}), "UTF-8");
  CHECK_KILN_ERROR(save_safetensors(path, {{"x", Tensor()}}), "undefined");
  // kiln's checksum keys are reserved.
  CHECK_KILN_ERROR(save_safetensors(path, {{"x", ones({1})}}, {{"kiln.crc32.x", "00000000"}}), "reserved");
  CHECK_KILN_ERROR(save_safetensors(path, {{"x", ones({1})}}, {{"kiln.crc32.", "1"}}), "kiln.crc32.");
  CHECK_KILN_ERROR(save_safetensors(path, {}, {{"kiln.crc32.other", "1"}}), path);
  // ...and leave the previous file alone.
  CHECK(load_safetensors_with_metadata(path).metadata == meta);
  CHECK(dir.temp_files().empty());
}

TEST_CASE("safetensors writes the exact golden bytes and reads them back", "[safetensors]") {
  TempDir dir;
  // Built by hand from the format: u64 LE header length 192, compact JSON with the
  // metadata first (kiln's CRC32 of each tensor's bytes among it, keys in order) and
  // tensors in name order, 2 spaces of padding to 192 bytes, then a = 1.5f (0x3FC00000)
  // and b = {1, -2} as little-endian i32. The CRC32s are zlib's (Python: zlib.crc32).
  const std::string data("\x00\x00\xC0\x3F" "\x01\x00\x00\x00" "\xFE\xFF\xFF\xFF", 12);
  REQUIRE(crc_hex(data.data(), 4) == "5cd8256f");
  REQUIRE(crc_hex(data.data() + 4, 8) == "cf8f9871");
  const std::string json =
      R"({"__metadata__":{"format":"pt","kiln.crc32.a":"5cd8256f","kiln.crc32.b":"cf8f9871"},)"
      R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})";
  REQUIRE(json.size() == 190);
  std::string expected = std::string("\xC0\0\0\0\0\0\0\0", 8) + json + "  " + data;
  REQUIRE(expected.size() == 8 + 192 + 12);

  std::map<std::string, Tensor> tensors{{"b", from_vector<int32_t>({1, -2})}, {"a", scalar_tensor(1.5f)}};
  std::string path = dir.file("golden.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}});
  CHECK(read_bytes(path) == expected);

  // The hand-built bytes load to the same values, with and without the checksums (the
  // latter is the file PyTorch writes: u64 LE 144, 6 spaces of padding).
  const std::string torch_json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})";
  const std::string torch_bytes = std::string("\x90\0\0\0\0\0\0\0", 8) + torch_json + "      " + data;
  CHECK(strip_crcs(expected) == torch_bytes);
  std::string hand = dir.file("hand.safetensors");
  for (const std::string& bytes : {expected, torch_bytes}) {
    write_bytes(hand, bytes);
    SafetensorsContents c = load_safetensors_with_metadata(hand);
    CHECK(c.metadata == std::map<std::string, std::string>{{"format", "pt"}});
    REQUIRE(c.tensors.size() == 2);
    CHECK(c.tensors.at("a").dim() == 0);
    CHECK(c.tensors.at("a").item<float>() == 1.5f);
    CHECK(c.tensors.at("b").to_vector<int32_t>() == std::vector<int32_t>{1, -2});
  }

  // The reader takes any JSON whitespace, key order, escapes and no metadata.
  std::string loose = "{\n\t\"b\" : {\"data_offsets\" : [ 0 , 8 ], \"shape\":[ 2 ], \"dtype\":\"I32\"},\r\n"
                      " \"\\u0061\\ud83d\\udd25\":{\"shape\":[],\"dtype\":\"BOOL\",\"data_offsets\":[8,9]} } \n";
  write_bytes(hand, file_bytes(loose, std::string("\x05\0\0\0\xFB\xFF\xFF\xFF\x01", 9)));
  auto t = load_safetensors(hand);
  CHECK(t.at("b").to_vector<int32_t>() == std::vector<int32_t>{5, -5});
  CHECK(t.at("a\xF0\x9F\x94\xA5").item<bool>() == true);
  // The smallest valid file.
  write_bytes(hand, file_bytes("{}", ""));
  CHECK(load_safetensors(hand).empty());
}

TEST_CASE("safetensors stores a CRC32 per tensor and detects corrupt data", "[safetensors]") {
  TempDir dir;
  std::map<std::string, Tensor> tensors{
      {"model.fc.weight", random_tensor({4, 3}, DType::F32, 11)},
      {"model.fc.bias", random_tensor({3}, DType::BF16, 12)},
      {"steps", random_tensor({2}, DType::I64, 13)},
      {"mask", random_tensor({5}, DType::Bool, 14)},
      {"empty", random_tensor({0, 2}, DType::F32, 15)},
  };
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"step", "7"}};
  const std::string path = dir.file("checkpoint.safetensors");
  save_safetensors(path, tensors, meta);
  const std::string bytes = read_bytes(path);
  const uint64_t n = header_length(bytes);
  const std::string header = bytes.substr(8, n);

  // Every tensor's checksum is in the header, as zlib computes it over the tensor's bytes;
  // the readers return only the user's metadata.
  for (const auto& [name, t] : tensors) {
    INFO("tensor " << name);
    Tensor c = t.contiguous();
    std::string want = crc_hex(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
    CHECK(header.find("\"kiln.crc32." + name + "\":\"" + want + "\"") != std::string::npos);
  }
  CHECK(header.find("\"kiln.crc32.empty\":\"00000000\"") != std::string::npos);
  CHECK(load_safetensors_metadata(path) == meta);
  SafetensorsContents c = load_safetensors_with_metadata(path);
  CHECK(c.metadata == meta);
  check_same(c.tensors, tensors);

  // One flipped bit anywhere in the data section is caught, naming the tensor it hit.
  // Tensors are written in name order: empty, mask, model.fc.bias, model.fc.weight, steps.
  const std::string bad = dir.file("flipped.safetensors");
  const std::vector<std::pair<std::string, uint64_t>> spans{
      {"mask", 5}, {"model.fc.bias", 6}, {"model.fc.weight", 48}, {"steps", 16}};
  uint64_t at = 8 + n;
  REQUIRE(bytes.size() == at + 5 + 6 + 48 + 16);
  for (const auto& [name, size] : spans) {
    for (uint64_t i = 0; i < size; ++i) {
      INFO("tensor " << name << " byte " << i);
      std::string b = bytes;
      b[at + i] ^= static_cast<char>(1 << (i % 8));
      write_bytes(bad, b);
      CHECK_KILN_ERROR(load_safetensors(bad), "tensor '" + name + "' is corrupt: CRC32 0x");
    }
    at += size;
  }
  write_bytes(bad, [&] {
    std::string b = bytes;
    b[8 + n + 5 + 6 + 1] ^= 0x10;  // a byte of model.fc.weight
    return b;
  }());
  CHECK_KILN_ERROR(load_safetensors(bad), bad);
  CHECK_KILN_ERROR(load_safetensors_with_metadata(bad), "modified or damaged after it was written");
  // The metadata-only reader reads no data, so it cannot tell.
  CHECK(load_safetensors_metadata(bad) == meta);

  // A checksum that is not 8 hex digits, or names no tensor, is a corrupt header.
  auto edit_header = [&](const std::string& from, const std::string& to) {
    std::string h = header;
    size_t pos = h.find(from);
    REQUIRE(pos != std::string::npos);
    h.replace(pos, from.size(), to);
    REQUIRE(h.size() == header.size());
    write_bytes(bad, u64_le(n) + h + bytes.substr(8 + n));
  };
  edit_header("\"kiln.crc32.steps\":\"", "\"kiln.crc32.stepz\":\"");
  CHECK_KILN_ERROR(load_safetensors_metadata(bad), "checksum of tensor 'stepz', which the file does not hold");
  const size_t v = header.find("\"kiln.crc32.steps\":\"") + std::string("\"kiln.crc32.steps\":\"").size();
  edit_header(header.substr(v, 8), "0000000g");
  CHECK_KILN_ERROR(load_safetensors(bad), "not a CRC32 of 8 hex digits");
  // Upper-case digits are read (kiln writes lower case).
  std::string upper = header.substr(v, 8);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  edit_header(header.substr(v, 8), upper);
  check_same(load_safetensors(bad), tensors);

  // Without the checksums (a file PyTorch wrote) the same file loads, unchecked.
  const std::string plain = strip_crcs(bytes);
  REQUIRE(plain.find("kiln.crc32") == std::string::npos);
  write_bytes(bad, plain);
  c = load_safetensors_with_metadata(bad);
  CHECK(c.metadata == meta);
  check_same(c.tensors, tensors);
  // ...and one without any metadata at all.
  save_safetensors(path, {{"w", ones({2, 2})}});
  write_bytes(bad, strip_crcs(read_bytes(path)));
  REQUIRE(read_bytes(bad).find("__metadata__") == std::string::npos);
  CHECK(load_safetensors_with_metadata(bad).metadata.empty());
  CHECK(bit_equal(load_safetensors(bad).at("w"), ones({2, 2})));
}

TEST_CASE("safetensors refuses paths that are not regular files, without blocking", "[safetensors]") {
  TempDir dir;
  const std::string fifo = dir.file("fifo.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // In a child with an alarm, so that a reader that blocks on the FIFO fails the test
  // instead of hanging it.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(10);
    int code = 1;
    try {
      (void)load_safetensors(fifo);
    } catch (const Error& e) {
      std::string m = e.what();
      code = m.find(fifo) != std::string::npos && m.find("FIFO") != std::string::npos ? 0 : 2;
    } catch (...) {
      code = 3;
    }
    try {
      (void)load_safetensors_metadata(fifo);
      code = 4;
    } catch (const Error&) {
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("child status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  CHECK_KILN_ERROR(load_safetensors(fifo), "is a FIFO (named pipe), not a regular file");
  CHECK_KILN_ERROR(load_safetensors_with_metadata(dir.path.string()), "is a directory, not a regular file");
  if (fs::exists("/dev/null")) CHECK_KILN_ERROR(load_safetensors("/dev/null"), "character device");
}

TEST_CASE("safetensors save is atomic: failed saves keep the previous file", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  std::map<std::string, Tensor> a{{"w", random_tensor({16, 16}, DType::F32, 5)}};
  save_safetensors(path, a, {{"step", "1"}});
  const std::string a_bytes = read_bytes(path);
  std::map<std::string, Tensor> big{{"w", random_tensor({512, 512}, DType::F32, 6)}};  // 1 MiB

  SECTION("missing folder") {
    std::string bad = dir.file("no/such/folder/x.safetensors");
    CHECK_KILN_ERROR(save_safetensors(bad, a), bad);
    CHECK_KILN_ERROR(save_safetensors(bad, a), "No such file or directory");
  }
  SECTION("the target is a folder: the rename fails after the data is written") {
    std::string d = dir.file("a_folder");
    fs::create_directory(d);
    fs::create_directory(d + "/inside");  // a non-empty folder cannot be renamed over
    CHECK_KILN_ERROR(save_safetensors(d, big), d);
    CHECK_KILN_ERROR(save_safetensors(d, big), "rename");
    CHECK(fs::is_directory(d));
  }
  SECTION("the file system refuses the data half-way (RLIMIT_FSIZE)") {
    // Deterministic even as root: writes past the soft limit fail with EFBIG.
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string msg;
    bool threw = false;
    try {
      save_safetensors(path, big, {{"step", "2"}});
    } catch (const Error& e) {
      threw = true;
      msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);
    CHECK(threw);
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("File too large"));
  }
  // In every case: the previous file is untouched and no temporary file is left.
  CHECK(read_bytes(path) == a_bytes);
  SafetensorsContents c = load_safetensors_with_metadata(path);
  CHECK(c.metadata.at("step") == "1");
  check_same(c.tensors, a);
  CHECK(dir.temp_files().empty());
}

TEST_CASE("safetensors: a save killed at any moment leaves a whole file", "[safetensors]") {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  // Two versions, 4 MiB each, told apart by their fill value.
  std::map<std::string, Tensor> v1{{"w", full({1024, 1024}, 1.0f)}}, v2{{"w", full({1024, 1024}, 2.0f)}};
  save_safetensors(path, v1);
  std::mt19937 rng(7);
  int saw_v2 = 0;
  for (int round = 0; round < 8; ++round) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the child saves v2 over and over until it is killed
      for (;;) {
        try {
          save_safetensors(path, v2);
        } catch (...) {
          ::_exit(3);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 40000)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    std::vector<float> w = load_safetensors(path).at("w").to_vector<float>();
    REQUIRE(w.size() == 1024u * 1024u);
    bool all1 = std::all_of(w.begin(), w.end(), [](float x) { return x == 1.0f; });
    bool all2 = std::all_of(w.begin(), w.end(), [](float x) { return x == 2.0f; });
    CHECK((all1 || all2));
    saw_v2 += all2;
    // A killed process cannot clean up: its temporary file may remain, never the target.
    for (const std::string& t : dir.temp_files()) fs::remove(t);
  }
  INFO("rounds that ended with the new version: " << saw_v2);
  SUCCEED();
}

// "[1,1,...,1]" with n entries.
std::string ones_shape(int n) {
  std::string d = "[1";
  for (int i = 1; i < n; ++i) d += ",1";
  return d + "]";
}

TEST_CASE("safetensors rejects each class of corrupt file", "[safetensors]") {
  TempDir dir;
  const std::string four(4, '\0'), eight(8, '\0');
  std::vector<BadFile> cases{
      {"empty file", "", "shorter than the 8-byte header length"},
      {"7 bytes", std::string(7, '\0'), "shorter than the 8-byte header length"},
      {"header length > 100 MiB", u64_le((100ull << 20) + 1) + std::string(64, ' '), "exceeds the limit"},
      {"header length 2^64-1", u64_le(~0ull) + "{}", "exceeds the limit"},
      {"header length > file", file_bytes("{}", "", 3), "exceeds the 2 bytes"},
      {"header length 0", file_bytes("", ""), "does not start with '{'"},
      {"invalid UTF-8 in a key", file_bytes("{\"\xC3\x28\":1}", ""), "UTF-8"},
      {"overlong UTF-8", file_bytes("{\"\xC0\xAF\":1}", ""), "UTF-8"},
      {"UTF-8 surrogate", file_bytes("{\"\xED\xA0\x80\":1}", ""), "UTF-8"},
      {"lone \\u surrogate", file_bytes(R"({"\ud800":{}})", ""), "surrogate"},
      {"bad escape", file_bytes(R"({"\x":{}})", ""), "invalid escape"},
      {"raw control character", file_bytes("{\"a\tb\":{}}", ""), "control character"},
      {"unterminated string", file_bytes("{\"abc", ""), "unterminated"},
      {"trailing comma", file_bytes(R"({"__metadata__":{"a":"b",}})", ""), "string key"},
      {"missing colon", file_bytes(R"({"__metadata__" {}})", ""), "':'"},
      {"unclosed object", file_bytes(R"({"__metadata__":{})", ""), "end of input"},
      {"data after the object", file_bytes("{} x", ""), "after the end"},
      {"NUL padding", file_bytes(std::string("{}\0\0", 4), ""), "after the end"},
      {"leading whitespace", file_bytes(" {}", ""), "does not start with '{'"},
      {"header is an array", file_bytes("[]", ""), "does not start with '{'"},
      {"header is a string", file_bytes("\"x\"", ""), "does not start with '{'"},
      {"tensor entry not an object", file_bytes(R"({"x":[1]})", ""), "expected an object"},
      {"unknown dtype", file_bytes(one_tensor("F32X", "[1]", "[0,4]"), four), "unsupported dtype 'F32X'"},
      {"dtype kiln lacks", file_bytes(one_tensor("I8", "[4]", "[0,4]"), four), "unsupported dtype 'I8'"},
      {"lowercase dtype", file_bytes(one_tensor("f32", "[1]", "[0,4]"), four), "unsupported dtype"},
      {"dtype not a string", file_bytes(R"({"x":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", four),
       "dtype must be a string"},
      {"negative shape", file_bytes(one_tensor("F32", "[-1]", "[0,4]"), four), "negative"},
      {"negative zero shape", file_bytes(one_tensor("F32", "[-0]", "[0,0]"), ""), "negative"},
      {"fractional shape", file_bytes(one_tensor("F32", "[1.5]", "[0,4]"), four), "not an integer"},
      {"shape with exponent", file_bytes(one_tensor("F32", "[1e0]", "[0,4]"), four), "not an integer"},
      {"shape as string", file_bytes(one_tensor("F32", "[\"1\"]", "[0,4]"), four), "non-negative integer"},
      {"shape not an array", file_bytes(one_tensor("F32", "1", "[0,4]"), four), "shape must be an array"},
      {"shape leading zero", file_bytes(one_tensor("F32", "[01]", "[0,4]"), four), "leading zero"},
      {"shape entry > int64", file_bytes(one_tensor("F32", "[9223372036854775808]", "[0,4]"), four), "too large"},
      {"shape entry > uint64", file_bytes(one_tensor("F32", "[99999999999999999999999]", "[0,4]"), four),
       "too large"},
      {"shape product overflow", file_bytes(one_tensor("F32", "[4294967296,4294967296]", "[0,4]"), four),
       "too many elements"},
      {"shape overflow hidden by a zero", file_bytes(one_tensor("F32", "[4294967296,4294967296,0]", "[0,0]"), ""),
       "too many elements"},
      {"65 dims", file_bytes(one_tensor("U8", ones_shape(65), "[0,1]"), std::string(1, '\0')), "64 dims"},
      {"one offset", file_bytes(one_tensor("F32", "[1]", "[0]"), four), "has 1 entries"},
      {"three offsets", file_bytes(one_tensor("F32", "[1]", "[0,4,4]"), four), "more than two"},
      {"offsets not an array", file_bytes(one_tensor("F32", "[1]", "{}"), four), "must be an array"},
      {"negative offset", file_bytes(one_tensor("F32", "[1]", "[-4,0]"), four), "negative"},
      {"fractional offset", file_bytes(one_tensor("F32", "[1]", "[0,4.0]"), four), "not an integer"},
      {"begin > end", file_bytes(one_tensor("F32", "[0]", "[4,0]"), four), "begin after they end"},
      {"span != numel * size", file_bytes(one_tensor("F32", "[2]", "[0,4]"), four), "needs 8"},
      {"span != numel * size (dtype)", file_bytes(one_tensor("F64", "[1]", "[0,4]"), four), "needs 8"},
      {"first tensor not at 0",
       file_bytes(one_tensor("F32", "[1]", "[4,8]"), eight), "begins at data byte 4"},
      {"gap between tensors",
       file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", std::string(12, '\0')),
       "previous tensor ends at 4"},
      {"overlapping tensors",
       file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
       "previous tensor ends at 8"},
      {"same bytes twice",
       file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", four),
       "previous tensor ends at 4"},
      {"bytes after the last tensor", file_bytes(one_tensor("F32", "[1]", "[0,4]"), eight), "data section holds 8"},
      {"truncated data", file_bytes(one_tensor("F32", "[2]", "[0,8]"), four), "data section holds 4"},
      {"data but no tensors", file_bytes("{}", four), "data section holds 4"},
      {"duplicate tensor",
       file_bytes(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                  R"("x":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", ""),
       "duplicate tensor name 'x'"},
      {"duplicate field", file_bytes(R"({"x":{"dtype":"F32","dtype":"F32","shape":[0],"data_offsets":[0,0]}})", ""),
       "duplicate key \"dtype\""},
      {"duplicate metadata key", file_bytes(R"({"__metadata__":{"k":"a","k":"b"}})", ""),
       "duplicate __metadata__ key 'k'"},
      {"two metadata objects", file_bytes(R"({"__metadata__":{},"__metadata__":{}})", ""),
       "duplicate key \"__metadata__\""},
      {"metadata value a number", file_bytes(R"({"__metadata__":{"step":3}})", ""), "not a string"},
      {"metadata value null", file_bytes(R"({"__metadata__":{"k":null}})", ""), "not a string"},
      {"metadata value an object", file_bytes(R"({"__metadata__":{"k":{}}})", ""), "not a string"},
      {"metadata not an object", file_bytes(R"({"__metadata__":"pt"})", ""), "must be an object"},
      {"missing data_offsets", file_bytes(R"({"x":{"dtype":"F32","shape":[0]}})", ""), "lacks \"data_offsets\""},
      {"missing dtype", file_bytes(R"({"x":{"shape":[0],"data_offsets":[0,0]}})", ""), "lacks \"dtype\""},
      {"unknown field", file_bytes(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"y":1}})", ""),
       "unknown key 'y'"},
      {"BOOL byte not 0/1", file_bytes(one_tensor("BOOL", "[2]", "[0,2]"), std::string("\x01\x02", 2)),
       "not 0 or 1"},
  };
  const std::string path = dir.file("bad.safetensors");
  for (const BadFile& c : cases) {
    INFO("case: " << c.what);
    write_bytes(path, c.bytes);
    CHECK_KILN_ERROR(load_safetensors(path), c.needle);
    CHECK_KILN_ERROR(load_safetensors(path), path);  // every message names the file
  }
  // Not a file at all.
  CHECK_KILN_ERROR(load_safetensors(dir.file("missing.safetensors")), "No such file or directory");
  CHECK_KILN_ERROR(load_safetensors(dir.path.string()), "not a regular file");
  // The metadata-only reader validates the same header (and the offsets against the size).
  write_bytes(path, file_bytes(one_tensor("F32", "[2]", "[0,8]"), four));
  CHECK_KILN_ERROR(load_safetensors_metadata(path), "data section holds 4");
}

TEST_CASE("safetensors fuzz: corrupt files load or throw kiln::Error", "[safetensors]") {
  TempDir dir;
  std::map<std::string, Tensor> tensors{
      {"a", random_tensor({3, 2}, DType::F32, 1)},     {"b", random_tensor({5}, DType::Bool, 2)},
      {"c\xC3\xA9", random_tensor({}, DType::BF16, 3)}, {"d", random_tensor({0, 4}, DType::I64, 4)},
      {"e", random_tensor({2, 2}, DType::U8, 5)},       {"f", random_tensor({3}, DType::F16, 6)},
  };
  const std::string path = dir.file("valid.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "q\"\\\n"}});
  // kiln's file (with checksums, so most edits of the data are rejected) and the same
  // without them (as PyTorch writes it: edits of the data load).
  const std::string with_crcs = read_bytes(path), without_crcs = strip_crcs(with_crcs);
  REQUIRE(without_crcs.size() < with_crcs.size());
  const std::string structural = "{}[]\",:\\-0123456789eE.u \t\xC3\xFF";

  std::mt19937_64 rng(20240611);
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  const std::string fuzz = dir.file("fuzz.safetensors");
  int loaded = 0, rejected = 0, iterations = 0;
  // At least 1000 cases however loaded the machine is; then until 2 s or 20000 cases.
  while (iterations < 20000 && (iterations < 1000 || std::chrono::steady_clock::now() < deadline)) {
    ++iterations;
    const std::string& valid = iterations % 2 ? with_crcs : without_crcs;
    const uint64_t header_len = header_length(valid);
    std::string b = valid;
    int edits = 1 + static_cast<int>(pick(4));
    for (int k = 0; k < edits; ++k) {
      switch (pick(8)) {
        case 0:  // flip bits of a random byte
          if (!b.empty()) b[pick(b.size())] ^= static_cast<char>(1 + pick(255));
          break;
        case 1:  // a structural character in the header
          if (b.size() > 8) b[8 + pick(std::min<uint64_t>(b.size() - 8, header_len))] = structural[pick(structural.size())];
          break;
        case 2:  // truncate
          b.resize(pick(b.size() + 1));
          break;
        case 3: {  // header length: random, or near the true one
          uint64_t n = pick(2) ? rng() >> pick(64) : header_len + pick(33) - 16;
          if (b.size() >= 8) b.replace(0, 8, u64_le(n));
          break;
        }
        case 4:  // delete a byte of the header
          if (b.size() > 8) b.erase(8 + pick(std::min<uint64_t>(b.size() - 8, header_len)), 1);
          break;
        case 5:  // insert a byte in the header
          if (b.size() > 8) b.insert(b.begin() + 8 + pick(std::min<uint64_t>(b.size() - 8, header_len)),
                                     structural[pick(structural.size())]);
          break;
        case 6:  // append junk
          b += std::string(pick(9), static_cast<char>(pick(256)));
          break;
        default: {  // another digit in a shape or an offset: valid JSON, maybe wrong sizes
          size_t at = b.find_first_of("0123456789", 8 + pick(header_len));
          if (at < 8 + header_len && at < b.size()) b[at] = static_cast<char>('0' + pick(10));
        }
      }
    }
    write_bytes(fuzz, b);
    try {
      auto t = load_safetensors(fuzz);
      for (auto& [name, x] : t) (void)x.numel();
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    }
    // Anything else (std::bad_alloc, std::length_error, a crash) fails the test.
  }
  INFO("iterations " << iterations << ", loaded " << loaded << ", rejected " << rejected);
  CHECK(rejected > 0);
  CHECK(loaded > 0);  // flips inside the data of the file without checksums still load
  CHECK(loaded + rejected == iterations);
}
