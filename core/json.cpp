// The strict pull parser and string writer of json.h. No recursion: the caller's walk
// over the structure it expects is the only nesting, so hostile input cannot exhaust the
// stack, and nothing is allocated beyond the strings the caller asks for.
#include <kiln/core/json.h>

#include <kiln/core/error.h>

namespace kiln::detail {

namespace {

// Length of the well-formed UTF-8 sequence starting at s[i] (1 to 4), or 0 when the bytes
// there are not one (Unicode 15, table 3-7).
size_t utf8_seq_len(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> unsigned { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100u; };
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return at(k) >= lo && at(k) <= hi; };
  unsigned c = at(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no UTF-16 surrogates
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_seq_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void json_append_string(std::string& out, std::string_view s) {
  KILN_CHECK(utf8_valid(s), "JSON: string is not valid UTF-8");
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

const char* json_kind_name(JsonKind k) {
  switch (k) {
    case JsonKind::Object: return "object";
    case JsonKind::Array: return "array";
    case JsonKind::String: return "string";
    case JsonKind::Number: return "number";
    case JsonKind::True: case JsonKind::False: return "boolean";
    case JsonKind::Null: return "null";
    case JsonKind::End: return "end of input";
    case JsonKind::Invalid: break;
  }
  return "invalid character";
}

void JsonReader::fail(const std::string& what) const { throw Error(str("JSON: ", what, " at byte ", pos_)); }

void JsonReader::skip_ws() {
  while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
}

void JsonReader::expect(char c, const char* what) {
  skip_ws();
  if (pos_ >= s_.size()) fail(str("unexpected end of input, expected ", what));
  if (s_[pos_] != c) fail(str("expected ", what));
  ++pos_;
}

JsonKind JsonReader::peek_kind() {
  skip_ws();
  if (pos_ >= s_.size()) return JsonKind::End;
  char c = s_[pos_];
  switch (c) {
    case '{': return JsonKind::Object;
    case '[': return JsonKind::Array;
    case '"': return JsonKind::String;
    case 't': return JsonKind::True;
    case 'f': return JsonKind::False;
    case 'n': return JsonKind::Null;
    default: return c == '-' || is_digit(c) ? JsonKind::Number : JsonKind::Invalid;
  }
}

void JsonReader::begin_object() { expect('{', "'{'"); }
void JsonReader::begin_array() { expect('[', "'['"); }

bool JsonReader::next_member(bool first, std::string& key) {
  skip_ws();
  if (pos_ < s_.size() && s_[pos_] == '}') {
    ++pos_;
    return false;
  }
  if (!first) expect(',', "',' or '}'");
  if (peek_kind() != JsonKind::String) fail("expected a string key");
  key = read_string();
  expect(':', "':'");
  return true;
}

bool JsonReader::next_element(bool first) {
  skip_ws();
  if (pos_ < s_.size() && s_[pos_] == ']') {
    ++pos_;
    return false;
  }
  if (!first) expect(',', "',' or ']'");
  return true;
}

uint32_t JsonReader::read_hex4() {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i, ++pos_) {
    if (pos_ >= s_.size()) fail("unterminated \\u escape");
    char c = s_[pos_];
    uint32_t d;
    if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
    else fail("invalid hex digit in \\u escape");
    v = v * 16 + d;
  }
  return v;
}

std::string JsonReader::read_string() {
  expect('"', "a string");
  std::string out;
  for (;;) {
    if (pos_ >= s_.size()) fail("unterminated string");
    auto c = static_cast<unsigned char>(s_[pos_]);
    if (c == '"') {
      ++pos_;
      return out;
    }
    if (c < 0x20) fail("unescaped control character in string");
    if (c == '\\') {
      if (++pos_ >= s_.size()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = read_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 1 >= s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              fail("high surrogate not followed by a low surrogate");
            pos_ += 2;
            uint32_t lo = read_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --pos_; fail("invalid escape");
      }
      continue;
    }
    size_t n = utf8_seq_len(s_, pos_);
    if (n == 0) fail("invalid UTF-8 in string");
    out.append(s_.data() + pos_, n);
    pos_ += n;
  }
}

JsonNumber JsonReader::read_number() {
  if (peek_kind() != JsonKind::Number) fail("expected a number");
  JsonNumber n;
  size_t start = pos_;
  auto digit_here = [&] { return pos_ < s_.size() && is_digit(s_[pos_]); };
  if (s_[pos_] == '-') {
    n.negative = true;
    ++pos_;
  }
  if (!digit_here()) fail("expected a digit");
  if (s_[pos_] == '0') {
    ++pos_;
    if (digit_here()) fail("leading zero in number");
  } else {
    while (digit_here()) {
      auto d = static_cast<uint64_t>(s_[pos_++] - '0');
      if (n.value > (UINT64_MAX - d) / 10) n.overflow = true;
      else n.value = n.value * 10 + d;
    }
  }
  if (pos_ < s_.size() && s_[pos_] == '.') {
    n.integer = false;
    ++pos_;
    if (!digit_here()) fail("expected a digit after '.'");
    while (digit_here()) ++pos_;
  }
  if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
    n.integer = false;
    ++pos_;
    if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
    if (!digit_here()) fail("expected a digit in the exponent");
    while (digit_here()) ++pos_;
  }
  n.text = s_.substr(start, pos_ - start);
  return n;
}

void JsonReader::finish() {
  skip_ws();
  if (pos_ != s_.size()) fail("unexpected data after the end of the JSON value");
}

}  // namespace kiln::detail
