// Text for language models: tokenizers, token files and random training windows.
//
// Tokenizers: character-level (the distinct bytes of a corpus, sorted: the usual "char"
// vocabulary of small GPTs; 65 symbols for the KJV Bible) and byte-level (all 256 bytes).
// A token file holds a corpus encoded once: a 64-byte header (magic "KILNTOK1", bytes per
// token 2 or 4, token count, vocabulary size, tokenizer description length) and the
// tokenizer's description (JSON), then the tokens (u16 when the vocabulary fits, else
// u32), little-endian. It is read through mmap, checked on open (size, magic, every token
// below the vocabulary size), and sliced into seeded random windows for training, the
// last `val_fraction` of it held out for validation.
//
// The default corpus is the King James Bible of Debian's bible-kjv (`bible -f
// 'gen1:1-rev22:21'`, 4.4 MB of ASCII), prepared on first use.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  // Throws kiln::Error naming the first symbol outside the vocabulary (and its offset).
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // Throws kiln::Error for an id outside [0, vocab_size).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // A JSON description from which tokenizer_from_description() rebuilds it.
  virtual std::string description() const = 0;
};

// Characters (bytes) of `alphabet`, sorted and made unique, are ids 0, 1, ...
class CharTokenizer final : public Tokenizer {
 public:
  explicit CharTokenizer(std::string_view alphabet);
  // The alphabet of a corpus: its distinct bytes.
  static CharTokenizer from_corpus(std::string_view text);
  int64_t vocab_size() const override { return static_cast<int64_t>(chars_.size()); }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string description() const override;
  const std::string& chars() const { return chars_; }

 private:
  std::string chars_;
  int16_t id_of_[256];
};

// Every byte is its own id (256 ids): no unknown input, UTF-8 passes through.
class ByteTokenizer final : public Tokenizer {
 public:
  int64_t vocab_size() const override { return 256; }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string description() const override { return R"({"kind":"byte"})"; }
};

// GPT-2's byte-level BPE (Radford et al. 2019) from a user's vocab.json (token -> id, the
// tokens written in GPT-2's byte-to-unicode alphabet) and merges.txt (one "a b" pair per
// line, best first; a leading "#version" line is skipped). Text is split as GPT-2's
// pattern does ('s 't 're 've 'm 'll 'd, an optional space then letters, numbers or
// other symbols, whitespace runs), each piece's bytes are mapped to the alphabet and
// merged by rank. Letters and digits are classified exactly for ASCII; every non-ASCII
// code point that is not a Unicode space counts as a letter (GPT-2 uses \p{L} and \p{N},
// which differ only for non-ASCII punctuation, symbols and digits). The description keeps
// the two files' paths.
class GPT2Tokenizer final : public Tokenizer {
 public:
  GPT2Tokenizer(const std::string& vocab_json, const std::string& merges_txt);
  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string description() const override;
  // The pre-tokenizer alone: the pieces text is split into.
  std::vector<std::string> pieces(std::string_view text) const;

 private:
  std::vector<std::string> bpe(const std::string& piece) const;  // in the alphabet
  std::string vocab_path_, merges_path_;
  std::vector<std::string> tokens_;                   // id -> token (alphabet, UTF-8)
  std::unordered_map<std::string, int64_t> ids_;      // token -> id
  std::unordered_map<std::string, int64_t> ranks_;    // "a b" -> rank
  std::string byte_char_[256];                        // byte -> its alphabet character (UTF-8)
  std::unordered_map<std::string, unsigned char> char_byte_;
};

// Rebuilds a tokenizer from description() (a token file's header keeps it).
std::unique_ptr<Tokenizer> tokenizer_from_description(const std::string& json);

// Writes `tokens` (each in [0, vocab_size)) with the tokenizer's description to `path`,
// atomically (a temporary file renamed into place).
void write_token_file(const std::string& path, const std::vector<int64_t>& tokens, const Tokenizer& tokenizer);

// A token file opened read-only through mmap. Throws kiln::Error naming the file and what
// is wrong (missing, not a token file, truncated, a token outside the vocabulary).
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return count_; }
  int64_t vocab_size() const { return vocab_; }
  int bytes_per_token() const { return width_; }
  const std::string& description() const { return description_; }
  const std::string& path() const { return path_; }
  int64_t operator[](int64_t i) const;
  std::unique_ptr<Tokenizer> tokenizer() const { return tokenizer_from_description(description_); }

 private:
  std::string path_, description_;
  int64_t count_ = 0, vocab_ = 0;
  int width_ = 2;
  const unsigned char* tokens_ = nullptr;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
};

// Random training windows from tokens [begin, end) of a file: batch(B, T, gen) gives
// inputs x (B, T) and targets y (B, T), y the tokens one position after x, i64, from B
// window starts drawn uniformly from the span by `gen` (the same generator state gives
// the same batch). Throws when the span is shorter than T + 1 tokens.
class TextWindows {
 public:
  TextWindows(const TokenFile& file, int64_t begin, int64_t end);
  // The training part (the first 1 - val_fraction) and the validation part of a file.
  static std::pair<TextWindows, TextWindows> split(const TokenFile& file, double val_fraction = 0.1);
  std::pair<Tensor, Tensor> batch(int64_t B, int64_t T, Generator& gen) const;
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }

 private:
  const TokenFile* file_;
  int64_t begin_, end_;
};

// The King James Bible as text in `cache_dir`/kjv.txt, written on first use from Debian's
// bible-kjv (`bible -f 'gen1:1-rev22:21'`); returns its path. Throws kiln::Error saying
// to install bible-kjv (tools/setup.sh does) when the `bible` program is missing.
std::string kjv_corpus(const std::string& cache_dir);

// Where prepared corpora and token files live: $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln,
// else $HOME/.cache/kiln, else ./.kiln-cache.
std::string default_cache_dir();

// Encodes a text file once into a token file in `cache_dir` and returns its path; a later
// call with the same text (path, size and modification time) and tokenizer reuses it.
// tokenizer: "char" (the text's own alphabet), "byte", or "gpt2" (vocab_json and
// merges_txt name the BPE files). Throws kiln::Error naming the file for a missing or
// empty text, an unknown tokenizer or missing BPE files.
std::string prepare_token_file(const std::string& text_path, const std::string& tokenizer,
                               const std::string& cache_dir, const std::string& vocab_json = "",
                               const std::string& merges_txt = "");

}  // namespace kiln::data
