// A small strict JSON reader and string writer for kiln's file headers (safetensors).
// The reader is a pull parser: the caller walks the structure it expects (objects, arrays,
// strings, numbers), so a header is parsed without building a document tree and memory
// stays proportional to what the caller keeps. It is strict RFC 8259: UTF-8 is validated,
// control characters must be escaped, \uXXXX escapes must pair their surrogates, numbers
// follow the JSON grammar (no leading zeros, no '+', no NaN). Every error throws
// kiln::Error naming the byte offset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::detail {

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
bool utf8_valid(std::string_view s);

// Appends `s` to `out` as a quoted JSON string: '"' and '\\' escaped, control characters
// as \n, \t, ... or \u00XX, everything else (UTF-8 included) as it is. Throws kiln::Error
// when `s` is not valid UTF-8.
void json_append_string(std::string& out, std::string_view s);

enum class JsonKind { Object, Array, String, Number, True, False, Null, End, Invalid };
const char* json_kind_name(JsonKind k);  // "object", "array", ..., "end of input"

// A number as the grammar saw it. `value` is exact only when `integer && !overflow`.
struct JsonNumber {
  bool negative = false;
  bool integer = true;    // no fraction and no exponent
  bool overflow = false;  // the integer digits do not fit in uint64_t
  uint64_t value = 0;     // the magnitude of the integer part
  std::string_view text;  // the number as written
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  // The kind of the next value (after whitespace), without consuming it.
  JsonKind peek_kind();
  // Consumes '{' (or throws).
  void begin_object();
  // Steps to the next member of the current object: returns false (and consumes '}') at
  // its end, else reads the key and the ':' and returns true with the value next.
  // `first` is true for the first call on an object.
  bool next_member(bool first, std::string& key);
  // Consumes '[' (or throws).
  void begin_array();
  // Returns false (and consumes ']') at the array's end, else true with an element next.
  bool next_element(bool first);
  std::string read_string();
  JsonNumber read_number();
  // Requires that only whitespace is left.
  void finish();

  size_t pos() const { return pos_; }
  [[noreturn]] void fail(const std::string& what) const;

 private:
  void skip_ws();
  void expect(char c, const char* what);
  uint32_t read_hex4();

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace kiln::detail
