// Tokenizers, token files and training windows (models/data/text.h).
#include <kiln/models/data/text.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace kiln::data {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'T', 'O', 'K', '1'};
constexpr size_t kHeader = 64;

std::string printable(unsigned char c) {
  std::ostringstream os;
  if (c >= 32 && c < 127) os << "'" << static_cast<char>(c) << "' ";
  os << "(byte 0x" << std::hex << static_cast<int>(c) << ")";
  return os.str();
}

uint64_t read_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put_u64(std::string& s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

// ---- tokenizers ------------------------------------------------------------------------

CharTokenizer::CharTokenizer(std::string_view alphabet) : chars_(alphabet) {
  std::sort(chars_.begin(), chars_.end(), [](char a, char b) {
    return static_cast<unsigned char>(a) < static_cast<unsigned char>(b);
  });
  chars_.erase(std::unique(chars_.begin(), chars_.end()), chars_.end());
  KILN_CHECK(!chars_.empty(), "CharTokenizer: the alphabet is empty");
  std::fill(std::begin(id_of_), std::end(id_of_), int16_t{-1});
  for (size_t i = 0; i < chars_.size(); ++i) id_of_[static_cast<unsigned char>(chars_[i])] = static_cast<int16_t>(i);
}

CharTokenizer CharTokenizer::from_corpus(std::string_view text) {
  bool seen[256] = {};
  for (char c : text) seen[static_cast<unsigned char>(c)] = true;
  std::string a;
  for (int c = 0; c < 256; ++c)
    if (seen[c]) a.push_back(static_cast<char>(c));
  return CharTokenizer(a);
}

std::vector<int64_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    KILN_CHECK(id_of_[c] >= 0, "CharTokenizer: character ", printable(c), " at offset ", i,
               " is not in the vocabulary of ", chars_.size(), " characters");
    ids[i] = id_of_[c];
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    KILN_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "CharTokenizer: id ", ids[i], " outside [0, ", vocab_size(), ")");
    s[i] = chars_[static_cast<size_t>(ids[i])];
  }
  return s;
}

std::string CharTokenizer::description() const {
  nlohmann::json j;
  j["kind"] = "char";
  std::vector<int> bytes;
  for (char c : chars_) bytes.push_back(static_cast<unsigned char>(c));
  j["bytes"] = bytes;
  return j.dump();
}

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    KILN_CHECK(ids[i] >= 0 && ids[i] < 256, "ByteTokenizer: id ", ids[i], " outside [0, 256)");
    s[i] = static_cast<char>(ids[i]);
  }
  return s;
}

// ---- GPT-2 byte-level BPE ---------------------------------------------------------------

namespace {

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return out;
}

// The code point at s[i] and its length in bytes (a malformed byte counts as itself).
std::pair<uint32_t, size_t> next_cp(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) { return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80; };
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3f); };
  if (b < 0x80) return {b, 1};
  if ((b & 0xe0) == 0xc0 && cont(1)) return {((b & 0x1fu) << 6) | at(1), 2};
  if ((b & 0xf0) == 0xe0 && cont(1) && cont(2)) return {((b & 0x0fu) << 12) | (at(1) << 6) | at(2), 3};
  if ((b & 0xf8) == 0xf0 && cont(1) && cont(2) && cont(3))
    return {((b & 0x07u) << 18) | (at(1) << 12) | (at(2) << 6) | at(3), 4};
  return {b, 1};
}

bool is_space(uint32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
bool is_letter(uint32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0x80 && !is_space(c));
}

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), "GPT2Tokenizer: cannot open ", what, " ", path, ": ", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

GPT2Tokenizer::GPT2Tokenizer(const std::string& vocab_json, const std::string& merges_txt)
    : vocab_path_(vocab_json), merges_path_(merges_txt) {
  // GPT-2's alphabet: printable bytes stand for themselves, the others for 256 + n.
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byte_char_[b] = utf8(printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++));
    char_byte_[byte_char_[b]] = static_cast<unsigned char>(b);
  }
  const nlohmann::json v = nlohmann::json::parse(read_text_file(vocab_json, "vocab.json"), nullptr, false);
  KILN_CHECK(v.is_object() && !v.empty(), "GPT2Tokenizer: ", vocab_json, " is not a JSON object of token -> id");
  int64_t max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    KILN_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0, "GPT2Tokenizer: ", vocab_json,
               ": the id of '", it.key(), "' is not a non-negative integer");
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (auto it = v.begin(); it != v.end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    KILN_CHECK(tokens_[static_cast<size_t>(id)].empty(), "GPT2Tokenizer: ", vocab_json, ": id ", id, " is used twice");
    tokens_[static_cast<size_t>(id)] = it.key();
    ids_[it.key()] = id;
  }
  std::istringstream merges(read_text_file(merges_txt, "merges.txt"));
  std::string line;
  int64_t rank = 0, lineno = 0;
  while (std::getline(merges, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (lineno == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    KILN_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
               "GPT2Tokenizer: ", merges_txt, " line ", lineno, " is not a pair 'a b': '", line, "'");
    ranks_.emplace(line, rank++);
  }
}

std::vector<std::string> GPT2Tokenizer::pieces(std::string_view t) const {
  std::vector<std::string> out;
  size_t i = 0;
  auto cp_at = [&](size_t k) { return k < t.size() ? next_cp(t, k) : std::pair<uint32_t, size_t>{0, 0}; };
  // The end of a run of code points satisfying pred from k.
  auto run = [&](size_t k, auto pred) {
    while (k < t.size()) {
      auto [c, len] = next_cp(t, k);
      if (!pred(c)) break;
      k += len;
    }
    return k;
  };
  auto other = [](uint32_t c) { return !is_space(c) && !is_letter(c) && !is_digit(c); };
  while (i < t.size()) {
    // 's 't 're 've 'm 'll 'd
    if (t[i] == '\'') {
      bool matched = false;
      for (const char* c : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        const size_t n = std::strlen(c);
        if (t.substr(i + 1, n) == c) {
          out.emplace_back(t.substr(i, n + 1));
          i += n + 1;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const auto [c0, l0] = next_cp(t, i);
    const size_t j = c0 == ' ' ? i + 1 : i;  // the optional leading space of the next three
    const uint32_t c1 = j < t.size() ? cp_at(j).first : 0;
    if (j < t.size() && is_letter(c1)) {
      const size_t e = run(j, is_letter);
      out.emplace_back(t.substr(i, e - i));
      i = e;
      continue;
    }
    if (j < t.size() && is_digit(c1)) {
      const size_t e = run(j, is_digit);
      out.emplace_back(t.substr(i, e - i));
      i = e;
      continue;
    }
    if (j < t.size() && other(c1)) {
      const size_t e = run(j, other);
      out.emplace_back(t.substr(i, e - i));
      i = e;
      continue;
    }
    // Whitespace: \s+(?!\S) (a run not followed by a non-space, giving back its last
    // character when one follows), else \s+.
    size_t e = run(i, is_space);
    if (e < t.size() && e > i) {
      // Followed by a non-space: keep all but the last whitespace character, if any remain.
      size_t last = i;
      for (size_t k = i; k < e;) {
        last = k;
        k += next_cp(t, k).second;
      }
      if (last > i) e = last;
    }
    if (e == i) e = i + l0;  // cannot happen for valid classes; never loop forever
    out.emplace_back(t.substr(i, e - i));
    i = e;
  }
  return out;
}

std::vector<std::string> GPT2Tokenizer::bpe(const std::string& piece) const {
  std::vector<std::string> word;
  for (char b : piece) word.push_back(byte_char_[static_cast<unsigned char>(b)]);
  while (word.size() > 1) {
    int64_t best = -1;
    size_t at = 0;
    for (size_t k = 0; k + 1 < word.size(); ++k) {
      auto it = ranks_.find(word[k] + " " + word[k + 1]);
      if (it != ranks_.end() && (best < 0 || it->second < best)) {
        best = it->second;
        at = k;
      }
    }
    if (best < 0) break;
    const std::string a = word[at], b = word[at + 1];
    std::vector<std::string> merged;
    for (size_t k = 0; k < word.size();) {
      if (k + 1 < word.size() && word[k] == a && word[k + 1] == b) {
        merged.push_back(a + b);
        k += 2;
      } else {
        merged.push_back(word[k++]);
      }
    }
    word.swap(merged);
  }
  return word;
}

std::vector<int64_t> GPT2Tokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  size_t offset = 0;
  for (const std::string& p : pieces(text)) {
    for (const std::string& tok : bpe(p)) {
      auto it = ids_.find(tok);
      KILN_CHECK(it != ids_.end(), "GPT2Tokenizer: the token '", tok, "' of the text at byte ", offset,
                 " is not in ", vocab_path_);
      ids.push_back(it->second);
    }
    offset += p.size();
  }
  return ids;
}

std::string GPT2Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    KILN_CHECK(id >= 0 && id < vocab_size() && !tokens_[static_cast<size_t>(id)].empty(), "GPT2Tokenizer: id ", id,
               " is not in the vocabulary");
    const std::string& tok = tokens_[static_cast<size_t>(id)];
    for (size_t k = 0; k < tok.size();) {
      const size_t len = next_cp(tok, k).second;
      auto it = char_byte_.find(tok.substr(k, len));
      KILN_CHECK(it != char_byte_.end(), "GPT2Tokenizer: token '", tok, "' (id ", id,
                 ") has a character outside GPT-2's byte alphabet");
      out.push_back(static_cast<char>(it->second));
      k += len;
    }
  }
  return out;
}

std::string GPT2Tokenizer::description() const {
  nlohmann::json j;
  j["kind"] = "gpt2-bpe";
  j["vocab"] = vocab_path_;
  j["merges"] = merges_path_;
  return j.dump();
}

std::unique_ptr<Tokenizer> tokenizer_from_description(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  KILN_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(),
             "tokenizer description is not a JSON object with a \"kind\": ", text.substr(0, 200));
  const std::string kind = j["kind"];
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (kind == "char") {
    KILN_CHECK(j.contains("bytes") && j["bytes"].is_array(), "char tokenizer description without \"bytes\"");
    std::string a;
    for (const auto& b : j["bytes"]) {
      KILN_CHECK(b.is_number_integer() && b.get<int>() >= 0 && b.get<int>() < 256,
                 "char tokenizer description: bad byte ", b.dump());
      a.push_back(static_cast<char>(b.get<int>()));
    }
    return std::make_unique<CharTokenizer>(a);
  }
  if (kind == "gpt2-bpe") {
    KILN_CHECK(j.contains("vocab") && j.contains("merges"), "gpt2-bpe tokenizer description without its files");
    return std::make_unique<GPT2Tokenizer>(j["vocab"].get<std::string>(), j["merges"].get<std::string>());
  }
  throw Error("tokenizer description of unknown kind '" + kind + "' (known: char, byte, gpt2-bpe)");
}

// ---- token files -----------------------------------------------------------------------

void write_token_file(const std::string& path, const std::vector<int64_t>& tokens, const Tokenizer& tokenizer) {
  const int64_t V = tokenizer.vocab_size();
  const int width = V <= 65536 ? 2 : 4;
  const std::string desc = tokenizer.description();
  std::string header(kHeader, '\0');
  std::memcpy(header.data(), kMagic, 8);
  put_u64(header, 8, static_cast<uint64_t>(width));
  put_u64(header, 16, tokens.size());
  put_u64(header, 24, static_cast<uint64_t>(V));
  put_u64(header, 32, desc.size());
  std::string body(tokens.size() * static_cast<size_t>(width), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    KILN_CHECK(tokens[i] >= 0 && tokens[i] < V, "write_token_file: token ", tokens[i], " at ", i,
               " outside the vocabulary [0, ", V, ")");
    for (int b = 0; b < width; ++b)
      body[i * static_cast<size_t>(width) + static_cast<size_t>(b)] = static_cast<char>((tokens[i] >> (8 * b)) & 0xff);
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KILN_CHECK(f.good(), "write_token_file: cannot create ", tmp, ": ", std::strerror(errno));
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(desc.data(), static_cast<std::streamsize>(desc.size()));
    f.write(body.data(), static_cast<std::streamsize>(body.size()));
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      throw Error("write_token_file: writing " + tmp + " failed (disk full?)");
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error("write_token_file: cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, "token file ", path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("token file " + path + ": not a regular file");
  }
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ < kHeader) {
    ::close(fd);
    throw Error("token file " + path + ": " + std::to_string(map_bytes_) + " bytes, shorter than its 64-byte header");
  }
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error("token file " + path + ": cannot map it: " + std::strerror(errno));
  }
  try {
    const auto* p = static_cast<const unsigned char*>(map_);
    KILN_CHECK(std::memcmp(p, kMagic, 8) == 0, "token file ", path, ": not a kiln token file (no KILNTOK1 magic)");
    const uint64_t width = read_u64(p + 8), count = read_u64(p + 16), vocab = read_u64(p + 24), dlen = read_u64(p + 32);
    KILN_CHECK(width == 2 || width == 4, "token file ", path, ": ", width, " bytes per token (expected 2 or 4)");
    KILN_CHECK(vocab >= 1 && vocab <= (width == 2 ? 65536u : 0xffffffffu), "token file ", path,
               ": bad vocabulary size ", vocab);
    const uint64_t want = kHeader + dlen + count * width;
    KILN_CHECK(dlen < map_bytes_ && count <= map_bytes_ && want == map_bytes_, "token file ", path, ": the header says ",
               count, " tokens of ", width, " bytes and a ", dlen, "-byte description (", want,
               " bytes in all), but the file has ", map_bytes_, " bytes: truncated or corrupt");
    width_ = static_cast<int>(width);
    count_ = static_cast<int64_t>(count);
    vocab_ = static_cast<int64_t>(vocab);
    description_.assign(reinterpret_cast<const char*>(p + kHeader), dlen);
    tokens_ = p + kHeader + dlen;
    KILN_CHECK(tokenizer()->vocab_size() == vocab_, "token file ", path, ": its tokenizer has ",
               tokenizer()->vocab_size(), " symbols, its header says ", vocab_);
    for (int64_t i = 0; i < count_; ++i) {
      const int64_t t = (*this)[i];
      KILN_CHECK(t < vocab_, "token file ", path, ": token ", t, " at position ", i, " outside the vocabulary [0, ",
                 vocab_, "): corrupt");
    }
  } catch (...) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw;
  }
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_bytes_);
}

int64_t TokenFile::operator[](int64_t i) const {
  const unsigned char* p = tokens_ + i * width_;
  return width_ == 2 ? static_cast<int64_t>(p[0] | (p[1] << 8))
                     : static_cast<int64_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                                            (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}

// ---- windows ---------------------------------------------------------------------------

TextWindows::TextWindows(const TokenFile& file, int64_t begin, int64_t end) : file_(&file), begin_(begin), end_(end) {
  KILN_CHECK(0 <= begin && begin <= end && end <= file.size(), "TextWindows: span [", begin, ", ", end,
             ") outside the file's ", file.size(), " tokens");
}

std::pair<TextWindows, TextWindows> TextWindows::split(const TokenFile& file, double val_fraction) {
  KILN_CHECK(val_fraction > 0 && val_fraction < 1, "TextWindows::split: val_fraction must lie in (0, 1), got ",
             val_fraction);
  const int64_t cut = file.size() - static_cast<int64_t>(static_cast<double>(file.size()) * val_fraction);
  return {TextWindows(file, 0, cut), TextWindows(file, cut, file.size())};
}

std::pair<Tensor, Tensor> TextWindows::batch(int64_t B, int64_t T, Generator& gen) const {
  KILN_CHECK(B >= 1 && T >= 1, "TextWindows::batch: batch and length must be positive, got ", B, " and ", T);
  KILN_CHECK(end_ - begin_ >= T + 1, "TextWindows::batch: windows of ", T, " tokens (plus the target) need at least ",
             T + 1, " tokens, the span [", begin_, ", ", end_, ") has ", end_ - begin_, " (use a shorter block size)");
  const std::vector<int64_t> starts =
      randint(begin_, end_ - T, {B}, DType::I64, &gen).to_vector<int64_t>();  // start + T < end
  std::vector<int64_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      x[static_cast<size_t>(b * T + t)] = (*file_)[starts[static_cast<size_t>(b)] + t];
      y[static_cast<size_t>(b * T + t)] = (*file_)[starts[static_cast<size_t>(b)] + t + 1];
    }
  return {from_vector<int64_t>(x).reshape({B, T}), from_vector<int64_t>(y).reshape({B, T})};
}

// ---- the default corpus ----------------------------------------------------------------

std::string kjv_corpus(const std::string& cache_dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(cache_dir) / "kjv.txt").string();
  std::error_code ec;
  if (fs::exists(path, ec) && fs::file_size(path, ec) > 0) return path;
  fs::create_directories(cache_dir, ec);
  KILN_CHECK(!ec, "kjv_corpus: cannot create ", cache_dir, ": ", ec.message());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const std::string cmd = "bible -f 'gen1:1-rev22:21' > '" + tmp + "' 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  std::error_code ec2;
  const auto size = fs::exists(tmp, ec2) ? fs::file_size(tmp, ec2) : 0;
  if (rc != 0 || size < 1000000) {
    std::remove(tmp.c_str());
    throw Error("kjv_corpus: `bible -f 'gen1:1-rev22:21'` failed (exit " + std::to_string(rc) +
                "): install Debian's bible-kjv (tools/setup.sh does)");
  }
  fs::rename(tmp, path, ec);
  KILN_CHECK(!ec, "kjv_corpus: cannot rename ", tmp, " to ", path, ": ", ec.message());
  return path;
}

// ---- prepared corpora ---------------------------------------------------------------------

std::string default_cache_dir() {
  for (const char* var : {"KILN_CACHE_DIR", "XDG_CACHE_HOME", "HOME"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    const std::string base(v);
    if (std::string(var) == "KILN_CACHE_DIR") return base;
    return base + (std::string(var) == "HOME" ? "/.cache/kiln" : "/kiln");
  }
  return ".kiln-cache";
}

std::string prepare_token_file(const std::string& text_path, const std::string& tokenizer,
                               const std::string& cache_dir, const std::string& vocab_json,
                               const std::string& merges_txt) {
  namespace fs = std::filesystem;
  KILN_CHECK(tokenizer == "char" || tokenizer == "byte" || tokenizer == "gpt2", "prepare_token_file: unknown tokenizer '",
             tokenizer, "' (expected char, byte or gpt2)");
  std::error_code ec;
  KILN_CHECK(fs::is_regular_file(text_path, ec), "prepare_token_file: the text ", text_path,
             " does not exist or is not a regular file");
  const auto size = fs::file_size(text_path, ec);
  KILN_CHECK(!ec && size > 0, "prepare_token_file: the text ", text_path, " is empty");
  const auto mtime = fs::last_write_time(text_path, ec).time_since_epoch().count();
  std::string key = fs::absolute(text_path, ec).string() + "|" + std::to_string(size) + "|" + std::to_string(mtime) +
                    "|" + tokenizer;
  if (tokenizer == "gpt2") {
    KILN_CHECK(!vocab_json.empty() && !merges_txt.empty(),
               "prepare_token_file: the gpt2 tokenizer needs its vocab.json and merges.txt");
    key += "|" + fs::absolute(vocab_json, ec).string() + "|" + fs::absolute(merges_txt, ec).string();
  }
  char hash[24];
  std::snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(key));
  const std::string out =
      (fs::path(cache_dir) / (fs::path(text_path).stem().string() + "." + tokenizer + "." + hash + ".tok")).string();
  if (fs::exists(out, ec)) return out;
  fs::create_directories(cache_dir, ec);
  KILN_CHECK(!ec, "prepare_token_file: cannot create ", cache_dir, ": ", ec.message());
  std::ifstream in(text_path, std::ios::binary);
  KILN_CHECK(in.good(), "prepare_token_file: cannot read ", text_path, ": ", std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::unique_ptr<Tokenizer> tok;
  if (tokenizer == "char")
    tok = std::make_unique<CharTokenizer>(CharTokenizer::from_corpus(text));
  else if (tokenizer == "byte")
    tok = std::make_unique<ByteTokenizer>();
  else
    tok = std::make_unique<GPT2Tokenizer>(vocab_json, merges_txt);
  write_token_file(out, tok->encode(text), *tok);
  return out;
}

}  // namespace kiln::data
